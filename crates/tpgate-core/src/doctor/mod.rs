//! `tpgate doctor`, the pure half: a [`Snapshot`] of a live machine (nftables ruleset as
//! `nft -j` prints it, `iptables-save` dumps, policy routing, sysctls, listening sockets,
//! neighbouring firewall software, optionally tpgate's config) in, a list of [`Finding`]s
//! out. Whoever wrote the ruleset (tpgate, a tutorial, another tool) is analysed the same
//! way. Collecting the snapshot (processes, /proc, netlink) is the binary's job.

mod checks_host;
mod checks_routing;
mod checks_rules;
mod halves;
mod iptables;
mod model;
mod nft_json;
mod routing;
mod ruleset;

#[cfg(test)]
mod tests;

pub use routing::{parse_ip_routes, parse_ip_rules, IpRule, Route};

use std::collections::BTreeMap;
use std::fmt;

use crate::config::Config;
use crate::net::{Mark, TableId};
use crate::plan::Family;

/// How bad a finding is. Ordered: `Ok < Info < Warn < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Ok,
    Info,
    Warn,
    Error,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Which part of the setup a finding is about; the human report groups by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    Collection,
    Kernel,
    Ruleset,
    Routing,
    Sysctl,
    Listener,
    Neighbours,
}

impl Area {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Collection => "collection",
            Self::Kernel => "kernel",
            Self::Ruleset => "ruleset",
            Self::Routing => "routing",
            Self::Sysctl => "sysctls",
            Self::Listener => "listener",
            Self::Neighbours => "neighbours",
        }
    }
}

/// One result of one check: what was found, why it matters, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Stable identifier of the check (`route-local`, `loop-guard`...), for tools and tests.
    pub id: &'static str,
    pub area: Area,
    pub severity: Severity,
    pub title: String,
    /// Why this breaks (or does not break) transparent proxying.
    pub why: String,
    /// The exact command or config line that fixes it; empty when nothing is to be done.
    pub fix: String,
}

impl Finding {
    fn new(id: &'static str, area: Area, severity: Severity, title: impl Into<String>) -> Self {
        Self {
            id,
            area,
            severity,
            title: title.into(),
            why: String::new(),
            fix: String::new(),
        }
    }

    fn why(mut self, why: impl Into<String>) -> Self {
        self.why = why.into();
        self
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {}: {}",
            self.severity.as_str(),
            self.id,
            self.title
        )
    }
}

/// Which iptables implementation produced a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IptVariant {
    Legacy,
    Nft,
}

/// One `iptables-save` / `ip6tables-save` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesDump {
    pub family: Family,
    pub variant: IptVariant,
    pub text: String,
}

/// Kernel modules: loaded (`/proc/modules`), built in (`modules.builtin`) and loadable
/// (`modules.dep`), by name with `-` written as `_`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modules {
    pub loaded: Vec<String>,
    /// `None` when `/lib/modules/$(uname -r)` could not be read: unknown, not absent.
    pub builtin: Option<Vec<String>>,
    pub available: Option<Vec<String>>,
}

/// A listening TCP socket or bound UDP socket, as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub tcp: bool,
    pub v6: bool,
    pub port: u16,
    /// `IP_TRANSPARENT` set (INET_DIAG_SOCKOPT, kernel >= 5.10); `None` when not reported.
    pub transparent: Option<bool>,
}

/// Firewall software that may share the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Neighbours {
    pub br_netfilter: bool,
    /// Interfaces that are bridges (bridged traffic reaches the IP hooks only through them).
    pub bridges: Vec<String>,
    /// A `docker0` link or a Docker socket exists.
    pub docker: bool,
    pub firewalld_running: bool,
    pub ufw_active: bool,
    /// Contents of `/etc/nftables.conf` when readable.
    pub nftables_conf: Option<String>,
}

/// What tpgate's config says the setup should be (the parts doctor compares against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub tproxy_port: u16,
    pub routing_mark: u32,
    pub fwmark: Mark,
    pub table: TableId,
    pub lan_interfaces: Vec<String>,
    pub ipv6: bool,
    pub local: bool,
    pub udp: bool,
    /// `offload-direct` leaves some destinations to the kernel (see `Plan::offload`).
    pub offload: bool,
}

impl From<&Config> for Expect {
    fn from(c: &Config) -> Self {
        Self {
            tproxy_port: c.tproxy_port,
            routing_mark: c.routing_mark,
            fwmark: c.intercept.fwmark,
            table: c.intercept.route_table,
            lan_interfaces: c.intercept.lan_interfaces.clone(),
            ipv6: c.ipv6,
            local: c.intercept.local,
            udp: c.intercept.udp,
            offload: !crate::plan::Plan::new(c).offload.direct.is_empty(),
        }
    }
}

/// Everything doctor looked at. `None` / empty means "could not be read", and the
/// collector says why in `notes`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub root: bool,
    /// `uname -r`.
    pub kernel_release: Option<String>,
    pub modules: Option<Modules>,
    /// `/proc/net/if_inet6` exists.
    pub ipv6: bool,
    /// `nft -j list ruleset` output.
    pub nft_json: Option<String>,
    pub iptables: Vec<IptablesDump>,
    /// `None`: `ip rule` could not be read (no policy routing, or no `ip`).
    pub rules: Option<Vec<IpRule>>,
    pub routes: Vec<Route>,
    /// Dotted sysctl names (`net.ipv4.conf.all.rp_filter`) to their values.
    pub sysctls: BTreeMap<String, String>,
    pub listeners: Option<Vec<Listener>>,
    pub neighbours: Neighbours,
    pub expect: Option<Expect>,
    /// Problems met while collecting, each reported as an info finding.
    pub notes: Vec<String>,
}

/// Runs every check.
pub fn diagnose(snap: &Snapshot) -> Vec<Finding> {
    let mut out: Vec<Finding> = snap
        .notes
        .iter()
        .map(|n| {
            Finding::new("collect", Area::Collection, Severity::Info, n.clone())
                .why("doctor sees only part of the machine, so some checks are skipped")
        })
        .collect();
    if !snap.root {
        out.push(
            Finding::new(
                "collect",
                Area::Collection,
                Severity::Info,
                "not running as root: partial picture",
            )
            .why("the ruleset and some sockets are readable only by root")
            .fix("sudo tpgate doctor"),
        );
    }
    let (chains, parse_notes) = ruleset::load(snap);
    for n in parse_notes {
        out.push(Finding::new("collect", Area::Collection, Severity::Info, n));
    }
    let flat = model::flatten(&chains);
    checks_host::kernel(snap, &flat, &mut out);
    checks_rules::run(snap, &chains, &flat, &mut out);
    checks_routing::run(snap, &flat, &mut out);
    checks_host::sysctls(snap, &mut out);
    checks_host::offload(snap, &mut out);
    checks_host::listeners(snap, &flat, &mut out);
    checks_host::neighbours(snap, &chains, &mut out);
    out.sort_by_key(|f| f.area);
    out
}

/// Whether any finding is a problem (exit code 1).
pub fn has_problems(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity >= Severity::Warn)
}
