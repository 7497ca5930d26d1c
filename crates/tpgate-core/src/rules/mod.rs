//! Clash-style rules and the engine that decides what happens to a flow. Pure: never does
//! DNS or I/O; the daemon builds a [`FlowMeta`] and asks [`RuleEngine::decide`].
//! Parsing one rule string lives in `parse`, matching in `engine`; which rule types exist
//! only in mihomo (and are skipped here) is decided by the parser.

mod domain;
mod engine;
mod geoip_dat;
mod geosite;
mod index;
mod lookahead;
mod mrs;
mod offload;
mod parse;
mod ruleset;
mod target;

pub use domain::{
    normalise as normalise_domain, suffix_matches as domain_suffix_matches, DomainRegex, Wildcard,
};
pub use geoip_dat::{geoip_dat_categories, Cidr, GeoIpCategory, GeoIpEntry, GeoIpList};
pub use geosite::{geosite_sets, GeoSite, GeoSiteList, SiteAttribute, SiteDomain};
pub use lookahead::{Ask, Evaluation};
pub use mrs::mrs_entries;
pub use offload::{AddrRange, Offload, RangeSet};
pub use parse::parse_ports_text;
pub use ruleset::{Behavior, EntryError, Format, RuleSet, RuleSetHandle};
pub use target::{Mode, TargetId};

pub(crate) use parse::parse_cidr;
pub use parse::{parse_rule, parse_rule_with, RuleError};

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use ipnet::IpNet;

use crate::net::{Network, Origin};

/// What to do with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Direct,
    /// TCP: reset; UDP: drop.
    Reject,
    /// Drop silently (TCP: hold the connection without answering, then close).
    RejectDrop,
    /// Through a proxy or group of the config (see [`TargetId`]).
    Proxy(TargetId),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Direct => "DIRECT",
            Self::Reject => "REJECT",
            Self::RejectDrop => "REJECT-DROP",
            Self::Proxy(id) => return write!(f, "proxy#{}", id.0),
        })
    }
}

/// An inclusive range of ports; a single port has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    /// Whether `port` lies in the range (both ends included).
    pub const fn contains(self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// `IP-CIDR` / `IP-CIDR6`: destination address.
    IpCidr(IpNet),
    /// `SRC-IP-CIDR`.
    SrcIpCidr(IpNet),
    /// `DST-PORT`: ports and ranges, e.g. `80/443/8000-8100`.
    DstPort(Vec<PortRange>),
    /// `SRC-PORT`.
    SrcPort(Vec<PortRange>),
    /// `NETWORK,tcp|udp`.
    Network(Network),
    /// `ORIGIN,local|forwarded` (tpgate's own): this machine's traffic or a LAN host's.
    Origin(Origin),
    /// `DOMAIN`: exactly this name.
    Domain(String),
    /// `DOMAIN-SUFFIX`: this name and the names below it.
    DomainSuffix(String),
    /// `DOMAIN-KEYWORD`: names containing this text.
    DomainKeyword(String),
    /// `DOMAIN-WILDCARD`: `*` and `?` globs.
    DomainWildcard(Wildcard),
    /// `DOMAIN-REGEX`.
    DomainRegex(DomainRegex),
    /// `AND,((R1),(R2),...)`: every one holds.
    And(Vec<Self>),
    /// `OR,((R1),(R2),...)`: at least one holds.
    Or(Vec<Self>),
    /// `NOT,((R))`: the one inside does not hold.
    Not(Box<Self>),
    /// An entry of a logic rule written with its own `no-resolve`, e.g. the first of
    /// `AND,((IP-CIDR,203.0.113.0/24,no-resolve),(NETWORK,udp)),X`: holds when the one inside
    /// does, but never makes a fake-ip flow's name resolved (mihomo reads each entry's
    /// options separately). Only wraps entries that look at the destination address.
    NoResolve(Box<Self>),
    /// `RULE-SET,provider`: an entry of that provider's set holds.
    RuleSet(RuleSetHandle),
    /// `PROCESS-NAME`: the local process's executable name (this host's traffic only).
    ProcessName(String),
    /// `PROCESS-PATH`: the local process's executable path.
    ProcessPath(String),
    /// `PROCESS-NAME-REGEX`.
    ProcessNameRegex(DomainRegex),
    /// `PROCESS-PATH-REGEX`.
    ProcessPathRegex(DomainRegex),
    /// `UID`: the local socket owner's user id, in one of these inclusive ranges.
    Uid(Vec<(u32, u32)>),
    /// `GEOIP,CC`: the destination's country (`LAN`: a private, loopback or link-local
    /// address, no database needed).
    GeoIp(String),
    /// `SRC-GEOIP,CC`: the source's country.
    SrcGeoIp(String),
    /// `IP-ASN,N`: the destination's autonomous system, from the ASN database; held as
    /// `AS<N>`, the code the database lookup gives.
    IpAsn(String),
    /// `SRC-IP-ASN,N`: the source's.
    SrcIpAsn(String),
    /// `GEOSITE,name`: the name is in that list of the geosite file (loaded by the daemon
    /// into the handle, named by the list in lower case).
    GeoSite(RuleSetHandle),
    /// `SUB-RULE,(condition),name`: when the condition holds, the `sub-rules` list `name`
    /// decides; when none of its rules matches, the main list goes on.
    SubRule {
        cond: Box<Self>,
        name: String,
        /// Position of the list in [`RuleEngine`]'s sub-rule lists, set when the config
        /// binds names (`usize::MAX` until then: never descends).
        list: usize,
    },
    /// `MATCH`.
    Match,
}

/// One rule as written, with where it was written (for logs and errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matcher: Matcher,
    pub verdict: Verdict,
    /// `no-resolve` was given after the target: the rule never makes a fake-ip flow's name
    /// resolved. On a logic rule it covers every entry (mihomo refuses it there; entries
    /// carry their own, see [`Matcher::NoResolve`]).
    pub no_resolve: bool,
    /// The rule text as written, e.g. `DST-PORT,25,REJECT`, for logs.
    pub text: String,
    /// Options after the target that tpgate (like mihomo) does not read and ignored; the
    /// config loader warns about them.
    pub ignored: Vec<String>,
}

/// What the engine knows about a flow when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowMeta<'a> {
    pub network: Network,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub origin: Origin,
    /// The name the client asked for (sniffed, or from DNS), lower case without a trailing
    /// dot; `None` when only the address is known, which no domain rule matches.
    pub host: Option<&'a str>,
    /// The local process owning the flow, when the flow is this host's own and a rule asks
    /// (see [`RuleEngine::needs_process`]); process rules never match without it.
    pub process: Option<&'a ProcessInfo>,
    /// Countries of the addresses, when a `GEOIP` rule asks (see
    /// [`RuleEngine::needs_geoip`]); GEOIP rules other than `LAN` never match without it.
    pub geo: Option<&'a Geo>,
}

/// What a GeoIP database says of a flow's addresses (upper case): the ISO 3166 country code
/// from a country database, or every category containing the address from a `geoip.dat`
/// (`geodata-mode`: `CN`, `TELEGRAM`...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Geo {
    pub dst: Vec<String>,
    pub src: Vec<String>,
}

/// What is known about the local process that owns a flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub uid: Option<u32>,
    /// The executable's file name (`curl`).
    pub name: Option<String>,
    /// The executable's full path (`/usr/bin/curl`).
    pub path: Option<String>,
}

/// The outcome: the action and which rule chose it (`None`: mode or no rule matched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: Option<usize>,
    /// When `rule` is a `SUB-RULE`: the list and the rule in it that decided (see
    /// [`RuleEngine::sub_rule`]).
    pub inner: Option<(usize, usize)>,
}

/// One `sub-rules` list, indexed like the main list.
#[derive(Debug, Clone)]
struct SubList {
    rules: Vec<Rule>,
    index: index::Index,
    lookers: lookahead::Lookers,
}

/// Rules compiled for matching.
#[derive(Debug, Clone)]
pub struct RuleEngine {
    rules: Vec<Rule>,
    /// Keyed lookups over `rules`, so matching stays fast with many rules.
    index: index::Index,
    /// Whether a rule looks at the owning process (finding it costs a sock_diag dump).
    needs_process: bool,
    /// Whether a rule needs a GeoIP database lookup.
    needs_geoip: bool,
    /// `sub-rules` lists, in config order.
    subs: Vec<SubList>,
    /// Rules that may look at the real destination address or at the name, so
    /// [`Self::needs_real_dst`] and [`Self::name_matters`] scan only those.
    lookers: lookahead::Lookers,
    /// `mode`, and which rules of the main list are switched off: changed live by the
    /// controller (`PATCH /configs`, `PATCH /rules/disable`) while flows are decided.
    switches: Switches,
    /// What `mode: global` sends every flow to (see `Config::global_action`).
    global: Verdict,
}

/// The parts of a [`RuleEngine`] that change while it is in use: one relaxed atomic load
/// per decision, so a change applies to the next flow without rebuilding the rules.
#[derive(Debug)]
struct Switches {
    mode: AtomicU8,
    /// One flag per rule of the main list; a disabled rule never matches.
    disabled: Vec<AtomicBool>,
}

impl Switches {
    fn new(mode: Mode, rules: usize) -> Self {
        Self {
            mode: AtomicU8::new(mode as u8),
            disabled: (0..rules).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Relaxed) {
            x if x == Mode::Global as u8 => Mode::Global,
            x if x == Mode::Direct as u8 => Mode::Direct,
            _ => Mode::Rule,
        }
    }

    fn is_disabled(&self, i: usize) -> bool {
        self.disabled
            .get(i)
            .is_some_and(|d| d.load(Ordering::Relaxed))
    }
}

/// A copy starts with the same settings and changes on its own.
impl Clone for Switches {
    fn clone(&self) -> Self {
        let copy = Self::new(self.mode(), self.disabled.len());
        for (i, d) in copy.disabled.iter().enumerate() {
            d.store(self.is_disabled(i), Ordering::Relaxed);
        }
        copy
    }
}

impl RuleEngine {
    /// `global` is the action of `mode: global`, usually `config.global_action()`.
    pub fn new(rules: Vec<Rule>, mode: Mode, global: Verdict) -> Self {
        Self {
            index: index::Index::build(&rules),
            needs_process: rules.iter().any(|r| r.matcher.is_about_process()),
            needs_geoip: rules.iter().any(|r| r.matcher.needs_geoip()),
            subs: Vec::new(),
            lookers: lookahead::Lookers::build(&rules),
            switches: Switches::new(mode, rules.len()),
            rules,
            global,
        }
    }

    /// Sends `mode: global` flows to `global` instead (the daemon's built-in `GLOBAL`
    /// selector when the config defines none).
    pub fn with_global(mut self, global: Verdict) -> Self {
        self.global = global;
        self
    }

    /// Adds the `sub-rules` lists that `SUB-RULE` rules' `list` positions refer to.
    pub fn with_sub_rules(mut self, lists: Vec<Vec<Rule>>) -> Self {
        for rules in lists {
            self.needs_process |= rules.iter().any(|r| r.matcher.is_about_process());
            self.needs_geoip |= rules.iter().any(|r| r.matcher.needs_geoip());
            self.subs.push(SubList {
                index: index::Index::build(&rules),
                lookers: lookahead::Lookers::build(&rules),
                rules,
            });
        }
        self
    }

    /// Rule `rule` of sub-rule list `list` (from [`Decision::inner`]).
    pub fn sub_rule(&self, list: usize, rule: usize) -> Option<&Rule> {
        self.subs.get(list)?.rules.get(rule)
    }

    /// Whether deciding may need [`FlowMeta::process`] for this host's own flows.
    pub fn needs_process(&self) -> bool {
        self.needs_process
    }

    /// Whether deciding may need [`FlowMeta::geo`].
    pub fn needs_geoip(&self) -> bool {
        self.needs_geoip
    }

    /// The rule at `index` (as returned in a [`Decision`]).
    pub fn rule(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index)
    }

    /// All rules, in matching order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn mode(&self) -> Mode {
        self.switches.mode()
    }

    /// Switches `mode` for every flow decided from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.switches.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Whether rule `index` of the main list is switched off.
    pub fn is_disabled(&self, index: usize) -> bool {
        self.switches.is_disabled(index)
    }

    /// Switches rule `index` of the main list off (or back on) for every flow decided
    /// from now on; false when there is no such rule.
    pub fn set_disabled(&self, index: usize, disabled: bool) -> bool {
        match self.switches.disabled.get(index) {
            Some(d) => {
                d.store(disabled, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The action of `mode: global`.
    pub fn global(&self) -> Verdict {
        self.global
    }
}

impl Matcher {
    /// The matchers directly inside this one: logic entries, a `SUB-RULE`'s condition.
    pub(crate) fn inner(&self) -> &[Self] {
        match self {
            Self::And(all) | Self::Or(all) => all,
            Self::Not(m) | Self::NoResolve(m) => std::slice::from_ref(&**m),
            Self::SubRule { cond, .. } => std::slice::from_ref(&**cond),
            _ => &[],
        }
    }

    fn inner_mut(&mut self) -> &mut [Self] {
        match self {
            Self::And(all) | Self::Or(all) => all,
            Self::Not(m) | Self::NoResolve(m) => std::slice::from_mut(&mut **m),
            Self::SubRule { cond, .. } => std::slice::from_mut(&mut **cond),
            _ => &mut [],
        }
    }

    /// Whether this matcher (or one inside it) looks at the owning process.
    pub fn is_about_process(&self) -> bool {
        match self {
            Self::ProcessName(_)
            | Self::ProcessPath(_)
            | Self::ProcessNameRegex(_)
            | Self::ProcessPathRegex(_)
            | Self::Uid(_) => true,
            _ => self.inner().iter().any(Self::is_about_process),
        }
    }

    /// Every `SUB-RULE`'s `(name, list)` in this matcher, to bind names to lists.
    pub fn sub_rules_mut(&mut self) -> Vec<(&str, &mut usize)> {
        match self {
            Self::SubRule { name, list, .. } => vec![(name.as_str(), list)],
            _ => Vec::new(),
        }
    }

    /// Every `GEOSITE` handle in this matcher (logic entries and `SUB-RULE` conditions
    /// included).
    /// The `GEOIP` / `SRC-GEOIP` codes this matcher (or one inside it) names, `LAN` aside.
    pub fn geoip_codes(&self) -> Vec<&str> {
        match self {
            Self::GeoIp(c) | Self::SrcGeoIp(c) if c != "LAN" => vec![c.as_str()],
            _ => self.inner().iter().flat_map(Self::geoip_codes).collect(),
        }
    }

    pub fn geosites_mut(&mut self) -> Vec<&mut RuleSetHandle> {
        match self {
            Self::GeoSite(h) => vec![h],
            _ => self
                .inner_mut()
                .iter_mut()
                .flat_map(Self::geosites_mut)
                .collect(),
        }
    }

    /// Whether this matcher (or one inside it) may look at the destination address in a
    /// way that wants the real one: CIDR and GEOIP rules, rule sets (their CIDR entries),
    /// logic rules containing one that is not [`Self::NoResolve`].
    pub fn looks_at_dst_ip(&self) -> bool {
        match self {
            Self::IpCidr(_) | Self::GeoIp(_) | Self::IpAsn(_) | Self::RuleSet(_) => true,
            Self::NoResolve(_) => false,
            _ => self.inner().iter().any(Self::looks_at_dst_ip),
        }
    }

    /// Whether this matcher (or one inside it) needs a GeoIP lookup of the flow's
    /// addresses (the country database or geoip.dat, or the ASN database).
    pub fn needs_geoip(&self) -> bool {
        match self {
            Self::GeoIp(c) | Self::SrcGeoIp(c) => c != "LAN",
            Self::IpAsn(_) | Self::SrcIpAsn(_) => true,
            _ => self.inner().iter().any(Self::needs_geoip),
        }
    }

    /// Whether this matcher (or one inside it) is an `IP-ASN` / `SRC-IP-ASN` rule.
    pub fn needs_asn(&self) -> bool {
        match self {
            Self::IpAsn(_) | Self::SrcIpAsn(_) => true,
            _ => self.inner().iter().any(Self::needs_asn),
        }
    }

    /// Every `RULE-SET` handle in this matcher (logic entries and `SUB-RULE` conditions
    /// included), to bind them to their providers.
    pub fn rule_sets_mut(&mut self) -> Vec<&mut RuleSetHandle> {
        match self {
            Self::RuleSet(h) => vec![h],
            _ => self
                .inner_mut()
                .iter_mut()
                .flat_map(Self::rule_sets_mut)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walkers_reach_logic_entries_and_sub_rule_conditions() {
        let mut r = parse_rule("SUB-RULE,(AND,((RULE-SET,lan),(GEOSITE,ads))),web").unwrap();
        let names: Vec<String> = r
            .matcher
            .rule_sets_mut()
            .iter()
            .map(|h| h.name().to_owned())
            .collect();
        assert_eq!(names, ["lan"]);
        assert_eq!(r.matcher.geosites_mut().len(), 1);
        let r = parse_rule("SUB-RULE,(NOT,((PROCESS-NAME,curl))),web").unwrap();
        assert!(r.matcher.is_about_process());
        let r = parse_rule("SUB-RULE,(OR,((GEOIP,CN,no-resolve))),web").unwrap();
        assert!(r.matcher.needs_geoip());
        assert!(!r.matcher.looks_at_dst_ip());
        let r = parse_rule("SUB-RULE,(GEOIP,LAN),web").unwrap();
        assert!(!r.matcher.needs_geoip());
        assert!(r.matcher.looks_at_dst_ip());
    }
}
