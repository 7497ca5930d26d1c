//! The words the rules and the config share: which proxy or group an action names
//! ([`TargetId`]) and how the engine treats every flow ([`Mode`]). They live here, below
//! `config`, so that the config is built on the rules and the rules never look up at it.

/// A proxy or group of the loaded config (see `Config::target`): proxies are numbered first,
/// in file order, then groups. The rules carry only the number; the config knows the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u32);

/// `mode`: what decides a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The rules, first match wins.
    Rule,
    /// Every flow goes to the global target (see `Config::global_action`).
    Global,
    /// Every flow goes direct.
    Direct,
}
