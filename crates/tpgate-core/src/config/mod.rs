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
mod dialers;
mod dns;
mod expand;
mod file_diagnostic;
mod filter;
mod groups;
mod hysteria2;
mod intercept;
mod keys;
mod limits;
mod model;
mod names;
mod nameserver;
mod network;
mod plugin;
mod providers;
mod proxies;
mod proxy;
mod proxy_providers;
mod reality;
mod rule_list;
mod sniffer;
pub mod subscription;
mod summary;
mod tuic;
mod value;
mod yaml;

#[cfg(test)]
mod tests;

pub use controller::{Controller, Cors};
pub use dns::{Dns, EnhancedMode, FilterMode, DEFAULT_FAKE_IP_RANGE};
pub use expand::Slot;
pub use file_diagnostic::{FileDiagnostic, Severity};
pub use filter::{expected_status, NameFilter, Pattern};
pub use limits::{Limits, DEFAULT_MAX_CONNECTIONS, DEFAULT_UDP_TABLE_SIZE};
pub use model::*;
pub use nameserver::{parse_nameserver, Nameserver, Transport, Unusable};
pub use providers::{ProviderSource, RuleProvider};
pub use proxy_providers::{Override, ProxyProvider, ProxySource, Read, DEFAULT_SIZE_LIMIT};
pub use sniffer::{DomainPattern, Sniffer};
pub use summary::Summary;

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
    /// A warning that `--strict` turns into an error: a key tpgate does not know, which
    /// mihomo would ignore too, but which is often a typo.
    pub unknown: bool,
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
/// Files the config names (proxy providers) are not read: see [`load_with`].
pub fn load(text: &str) -> Result<Loaded, Vec<Diagnostic>> {
    load_with(text, &Options::default()).into_loaded()
}

/// How [`load_with`] reads a config.
#[derive(Default)]
pub struct Options<'a> {
    /// Unknown keys are errors, not warnings (`tpgate check --strict`).
    pub strict: bool,
    /// Reads the files the config names (file proxy providers, http providers' caches);
    /// `None`: such providers stay empty until the daemon loads them.
    pub files: Option<&'a dyn Files>,
}

/// Read access to the files a config names, relative to the config's own directory. The
/// core does no I/O: the caller decides what "reading a file" means (tests use a map).
pub trait Files {
    /// The bytes of `path` as written in the config; `Ok(None)` when it does not exist.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String>;
}

/// Everything [`load_with`] found: the config when there was no error, and the warnings
/// either way (a user fixing errors wants to see them too).
#[derive(Debug, Clone)]
pub struct Report {
    pub config: Option<Config>,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// What a migrating user needs to know at a glance (see [`Summary`]).
    pub summary: Summary,
}

impl Report {
    /// The config and its warnings, or the errors.
    pub fn into_loaded(self) -> Result<Loaded, Vec<Diagnostic>> {
        match self.config {
            Some(config) => Ok(Loaded {
                config,
                warnings: self.warnings,
            }),
            None => Err(self.errors),
        }
    }
}

/// Parses and validates a config like [`load`], with options, and keeps the warnings of a
/// config that has errors.
pub fn load_with(text: &str, options: &Options<'_>) -> Report {
    let root = match yaml::parse_document(text) {
        Ok(root) => root,
        Err(e) => {
            return Report {
                config: None,
                errors: vec![diagnostic(e.pos, "", e.message)],
                warnings: Vec::new(),
                summary: Summary::default(),
            }
        }
    };
    let mut d = Diags {
        anchored: root.anchored,
        files: options.files,
        ..Diags::default()
    };
    let config = decode::decode(root.root.as_ref(), &mut d);
    if options.strict {
        let (unknown, warnings): (Vec<_>, Vec<_>) = d.warnings.into_iter().partition(|w| w.unknown);
        d.warnings = warnings;
        d.errors.extend(unknown);
    }
    d.warnings.sort_by_key(|w| (w.line, w.col));
    d.errors.sort_by_key(|e| (e.line, e.col));
    let summary = std::mem::take(&mut d.summary).finish(&config);
    Report {
        config: d.errors.is_empty().then_some(config),
        errors: d.errors,
        warnings: d.warnings,
        summary,
    }
}

/// Collects what the decoder finds; messages are prefixed with the node's path.
#[derive(Default)]
struct Diags<'a> {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Positions of the nodes that carry a YAML anchor (`&name`): a top-level key holding
    /// only anchored nodes exists to be aliased elsewhere and is not reported.
    anchored: std::collections::HashSet<Pos>,
    files: Option<&'a dyn Files>,
    summary: summary::Collect,
    /// Rule providers declared with an error: rules naming them are dropped quietly.
    broken_providers: Vec<String>,
}

impl Diags<'_> {
    /// A key tpgate does not know: a warning, an error under `--strict`.
    fn unknown(&mut self, pos: Pos, path: &str, message: impl fmt::Display) {
        let mut w = diagnostic(pos, path, message);
        w.unknown = true;
        self.warnings.push(w);
    }

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
        unknown: false,
    }
}
