//! Findings for people (grouped by area, coloured on a terminal) and for tools (`--json`).

use std::fmt::Write as _;

use tpgate_core::doctor::{Finding, Severity};

/// The human report. `color`: ANSI colours (stdout is a terminal and NO_COLOR is unset).
pub(super) fn human(findings: &[Finding], color: bool, partial: bool) -> String {
    let paint = |sev: Severity, text: &str| {
        if !color {
            return text.to_owned();
        }
        let code = match sev {
            Severity::Ok => "32",
            Severity::Info => "36",
            Severity::Warn => "33",
            Severity::Error => "1;31",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    };
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warn));
    let mut out = String::new();
    let verdict = if errors + warnings == 0 {
        paint(
            Severity::Ok,
            if partial {
                "no problems found in what could be read (not root: partial picture)"
            } else {
                "healthy"
            },
        )
    } else {
        paint(
            if errors > 0 {
                Severity::Error
            } else {
                Severity::Warn
            },
            &format!("{errors} error(s), {warnings} warning(s)"),
        )
    };
    let _ = writeln!(out, "tpgate doctor: {verdict} ({} checks)", findings.len());
    let mut area = None;
    for f in findings {
        if area != Some(f.area) {
            area = Some(f.area);
            let _ = writeln!(
                out,
                "\n{}",
                if color {
                    format!("\x1b[1m{}\x1b[0m", f.area.as_str())
                } else {
                    f.area.as_str().to_owned()
                }
            );
        }
        let label = paint(f.severity, &format!("{:<5}", f.severity.as_str()));
        let _ = writeln!(out, "  {label} {}: {}", f.id, f.title);
        if !f.why.is_empty() && f.severity != Severity::Ok {
            let _ = writeln!(out, "        why: {}", f.why);
        }
        if !f.fix.is_empty() && f.severity != Severity::Ok {
            for (i, l) in f.fix.lines().enumerate() {
                let _ = writeln!(out, "        {} {l}", if i == 0 { "fix:" } else { "    " });
            }
        }
    }
    out
}

/// `{"healthy": bool, "findings": [{id, area, severity, title, why, fix}, ...]}`.
pub(super) fn json(findings: &[Finding]) -> String {
    let list: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "id": f.id,
                "area": f.area.as_str(),
                "severity": f.severity.as_str(),
                "title": f.title,
                "why": f.why,
                "fix": f.fix,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "healthy": !tpgate_core::doctor::has_problems(findings),
        "findings": list,
    });
    format!("{doc:#}\n")
}
