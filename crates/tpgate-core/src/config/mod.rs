//! Config: YAML text (Clash/mihomo keys plus tpgate's `intercept` section) -> validated
//! [`Config`]. Errors and warnings carry the line and column of the offending node.
//! Reading the file is the caller's job.
//!
//! `yaml` turns text into a position-keeping tree, `decode` walks it into the model using
//! `value` for scalars and `keys` for which keys exist. `proxies` and `groups` read the
//! upstream sections, `names` resolves the names that group members and rules use
//! (`cycles` refuses groups that contain themselves), `rule_list` reads `rules` with
//! [`crate::rules::parse_rule_with`], `controller` the REST API and state-file settings.

mod cipher;
mod controller;
mod cycles;
mod decode;
mod dns;
mod file_diagnostic;
mod groups;
mod intercept;
mod keys;
mod model;
mod names;
mod nameserver;
mod providers;
mod proxies;
mod proxy;
mod rule_list;
mod sniffer;
mod value;
mod yaml;

#[cfg(test)]
mod tests;

pub use controller::{Controller, Cors};
pub use dns::{Dns, EnhancedMode, FilterMode, DEFAULT_FAKE_IP_RANGE};
pub use file_diagnostic::{FileDiagnostic, Severity};
pub use model::*;
pub use nameserver::{parse_nameserver, Nameserver, Transport, Unusable};
pub use providers::{ProviderSource, RuleProvider};
pub use sniffer::{DomainPattern, Sniffer};

use std::fmt;

use yaml::Pos;

/// One problem found in a config, with its position (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub col: usize,
    /// Path of the node, like `rules[3]` or `intercept.fwmark`; empty for the document.
    pub path: String,
    /// Reads on its own: starts with the path when there is one (`rules[3]: ...`).
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

/// A successfully loaded config and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates a config. On failure returns every error found (not just the first),
/// in document order. An empty document means every default. Never panics, whatever `text`.
pub fn load(text: &str) -> Result<Loaded, Vec<Diagnostic>> {
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => return Err(vec![diagnostic(e.pos, "", e.message)]),
    };
    let mut d = Diags::default();
    let config = decode::decode(root.as_ref(), &mut d);
    if d.errors.is_empty() {
        d.warnings.sort_by_key(|w| (w.line, w.col));
        Ok(Loaded {
            config,
            warnings: d.warnings,
        })
    } else {
        d.errors.sort_by_key(|e| (e.line, e.col));
        Err(d.errors)
    }
}

/// Collects what the decoder finds; messages are prefixed with the node's path.
#[derive(Default)]
struct Diags {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Diags {
    fn error(&mut self, pos: Pos, path: &str, message: impl fmt::Display) {
        self.errors.push(diagnostic(pos, path, message));
    }

    fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    fn warn(&mut self, pos: Pos, path: &str, message: impl fmt::Display) {
        self.warnings.push(diagnostic(pos, path, message));
    }
}

fn diagnostic(pos: Pos, path: &str, message: impl fmt::Display) -> Diagnostic {
    Diagnostic {
        line: pos.line,
        col: pos.col,
        path: path.to_owned(),
        message: if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        },
    }
}
