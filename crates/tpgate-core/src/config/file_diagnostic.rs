//! A problem as `tpgate check` reports it: in which file (the config, or a file it names such
//! as a rule provider's list), where in it, and how bad. The position stays data until the
//! one place that prints it, so nothing has to parse `FILE:LINE:COL` back out of a string.

use std::fmt;

use super::Diagnostic;

/// Whether a problem stops the config from loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, located. Printed as `FILE:LINE:COL: message`, with `warning: ` before the
/// message for a warning; the file and the position are left out when unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiagnostic {
    /// The file as the user named it (a path, or `<default>` for the embedded config);
    /// `None` when the problem is not in one file.
    pub file: Option<String>,
    /// 1-based line and column; `None` when the problem is the file as a whole (unreadable).
    pub at: Option<(usize, usize)>,
    pub severity: Severity,
    /// Reads on its own, without the file or position.
    pub message: String,
}

impl FileDiagnostic {
    /// A problem at `line`:`col` of `file`.
    pub fn at(
        file: impl Into<String>,
        (line, col): (usize, usize),
        severity: Severity,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: Some(file.into()),
            at: Some((line, col)),
            severity,
            message: message.into(),
        }
    }

    /// A problem with the whole of `file`.
    pub fn in_file(
        file: impl Into<String>,
        severity: Severity,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: Some(file.into()),
            at: None,
            severity,
            message: message.into(),
        }
    }

    /// A problem that belongs to no single file.
    pub fn general(severity: Severity, message: impl Into<String>) -> Self {
        Self {
            file: None,
            at: None,
            severity,
            message: message.into(),
        }
    }

    /// A config [`Diagnostic`], found in `file`.
    pub fn of_config(file: impl Into<String>, severity: Severity, d: &Diagnostic) -> Self {
        Self::at(file, (d.line, d.col), severity, d.message.clone())
    }
}

impl fmt::Display for FileDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            f.write_str(file)?;
        }
        if let Some((line, col)) = self.at {
            write!(f, ":{line}:{col}")?;
        }
        if self.file.is_some() || self.at.is_some() {
            f.write_str(": ")?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_as_file_line_col() {
        let w = FileDiagnostic::at("/etc/a:b/x.txt", (3, 7), Severity::Warning, "skipped");
        assert_eq!(w.to_string(), "/etc/a:b/x.txt:3:7: warning: skipped");
        let e = FileDiagnostic::at("c.yaml", (1, 2), Severity::Error, "rules[0]: bad");
        assert_eq!(e.to_string(), "c.yaml:1:2: rules[0]: bad");
        let unreadable =
            FileDiagnostic::in_file("l.txt", Severity::Error, "rule provider `l`: gone");
        assert_eq!(unreadable.to_string(), "l.txt: rule provider `l`: gone");
        assert_eq!(
            FileDiagnostic::general(Severity::Warning, "no database").to_string(),
            "warning: no database"
        );
        assert_eq!(
            FileDiagnostic::general(Severity::Error, "no file").to_string(),
            "no file"
        );
    }
}
