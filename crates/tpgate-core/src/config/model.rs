//! The validated config model: what the daemon and the planner consume. Built only by
//! [`super::load`]; every value here has already been checked.

use std::net::SocketAddr;

use ipnet::IpNet;

use crate::net::{Mark, TableId};
use crate::rules::{Rule, RuleEngine, Verdict};

pub use super::groups::DEFAULT_HEALTH_URL;
pub use super::proxy::*;
pub use crate::rules::Mode;

/// The default listener port (mihomo's `tproxy-port` convention).
pub const DEFAULT_TPROXY_PORT: u16 = 7893;
/// Default `routing-mark` carried by every outbound socket.
pub const DEFAULT_ROUTING_MARK: u32 = 0xff;
/// Default fwmark of intercepted packets.
pub const DEFAULT_FWMARK: Mark = Mark::exact(0x1);
/// Default policy-routing table.
pub const DEFAULT_ROUTE_TABLE: TableId = TableId(100);
/// Default priority of the `ip rule` entries.
pub const DEFAULT_RULE_PRIORITY: u32 = 9000;
/// Default `state-file`.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/tpgate/state.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub tproxy_port: u16,
    /// `SO_MARK` of every outbound socket; packets with it are never intercepted.
    pub routing_mark: u32,
    pub ipv6: bool,
    pub mode: Mode,
    pub log_level: LogLevel,
    pub intercept: Intercept,
    /// Clash rules, first match wins.
    pub rules: Vec<Rule>,
    /// `proxies:` that tpgate supports, in file order (unsupported types are skipped with a
    /// warning). [`TargetId`] `i < proxies.len()` names `proxies[i]`.
    pub proxies: Vec<ProxyDef>,
    /// `proxy-groups:`; [`TargetId`] `proxies.len() + j` names `groups[j]`.
    pub groups: Vec<GroupDef>,
    /// The group named `GLOBAL`, when the config defines one (see [`Self::global_action`]).
    pub global_target: Option<TargetId>,
    /// `external-controller`: where the REST API listens; `None`: no API.
    pub external_controller: Option<SocketAddr>,
    /// `secret`: the API's bearer token; `None`: no authentication.
    pub secret: Option<String>,
    /// The API's other settings: unix socket, CORS, dashboard directory.
    pub controller: super::Controller,
    /// `state-file` (tpgate's own): where the daemon keeps what survives a restart, such
    /// as the member each select group has chosen.
    pub state_file: String,
    /// `sniffer`: learning names from the first bytes of connections.
    pub sniffer: super::Sniffer,
    /// `rule-providers`: the sets `RULE-SET` rules name.
    pub rule_providers: Vec<super::RuleProvider>,
    /// `proxy-providers`: lists of proxies that groups pull in (`use`, `include-all`).
    pub proxy_providers: Vec<super::ProxyProvider>,
    /// `geoip-path` (tpgate's own): the MaxMind-format country database `GEOIP` rules use;
    /// default `Country.mmdb` next to the config, as mihomo keeps it.
    pub geoip_path: Option<String>,
    /// `geosite-path` (tpgate's own): the v2ray `geosite.dat` `GEOSITE` rules use; default
    /// `GeoSite.dat` next to the config.
    pub geosite_path: Option<String>,
    /// `asn-path` (tpgate's own): the MaxMind-format ASN database (GeoLite2-ASN) `IP-ASN`
    /// rules use; default `ASN.mmdb` next to the config, as mihomo keeps it.
    pub asn_path: Option<String>,
    /// `geox-url`, `geo-auto-update`, `geo-update-interval`: where the geodata files come
    /// from and whether they are refreshed.
    pub geox: Geox,
    /// `sub-rules`: named rule lists that `SUB-RULE` rules descend into, in file order.
    pub sub_rules: Vec<(String, Vec<Rule>)>,
    /// `dns` (with the top-level `hosts`): the built-in DNS server.
    pub dns: super::Dns,
    /// `limits` (tpgate's own): caps on live flows, in all and per client address.
    pub limits: super::Limits,
}

impl Config {
    /// The proxy or group a [`TargetId`] names.
    pub fn target(&self, id: TargetId) -> Option<Target<'_>> {
        let i = id.0 as usize;
        match self.proxies.get(i) {
            Some(p) => Some(Target::Proxy(p)),
            None => self.groups.get(i - self.proxies.len()).map(Target::Group),
        }
    }

    /// What `mode: global` does with every flow: the `GLOBAL` group when defined, else the
    /// first proxy, else DIRECT.
    pub fn global_action(&self) -> Verdict {
        match self.global_target {
            Some(id) => Verdict::Proxy(id),
            None if !self.proxies.is_empty() => Verdict::Proxy(TargetId(0)),
            None => Verdict::Direct,
        }
    }

    /// The rule engine this config describes: its rules, `mode`, global target and
    /// `sub-rules`. Here rather than in `rules`, which does not know the config.
    pub fn rule_engine(&self) -> RuleEngine {
        RuleEngine::new(self.rules.clone(), self.mode, self.global_action())
            .with_sub_rules(self.sub_rules.iter().map(|(_, r)| r.clone()).collect())
    }

    /// The name of a target, for logs.
    pub fn target_name(&self, id: TargetId) -> Option<&str> {
        self.target(id).map(|t| match t {
            Target::Proxy(p) => p.name.as_str(),
            Target::Group(g) => g.name.as_str(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Silent,
    Error,
    Warning,
    Info,
    Debug,
}

/// Which kernel interface installs the interception rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An `inet tpgate` table with the `owner` flag (preferred: fail-open on a crash).
    Nftables,
    /// Chains `TPGATE_*` in the `mangle` and `filter` tables, via `iptables-restore`, for
    /// systems whose firewall is managed with iptables.
    Iptables,
    /// nftables when the kernel and libnftables accept it, else iptables; decided at start.
    Auto,
}

/// Which iptables implementation the `iptables` backend drives. Both may be installed, and
/// the kernel runs the rules of both; tpgate uses the one the system's firewall uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesVariant {
    /// The variant that already holds rules, else the one `iptables -V` names.
    Auto,
    /// `iptables-nft`: iptables syntax, nf_tables in the kernel.
    Nft,
    /// `iptables-legacy`: the x_tables kernel interface.
    Legacy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intercept {
    pub backend: Backend,
    /// Used only when the backend turns out to be iptables.
    pub iptables_variant: IptablesVariant,
    /// Interfaces whose incoming traffic is intercepted; empty: no forwarded traffic.
    pub lan_interfaces: Vec<String>,
    /// Intercept this machine's own traffic (OUTPUT + policy routing through `lo`).
    pub local: bool,
    pub udp: bool,
    pub fwmark: Mark,
    pub route_table: TableId,
    /// Priority (`pref`) of the fwmark `ip rule`.
    pub rule_priority: u32,
    /// User bypass CIDRs, added to the built-in reserved ranges.
    pub bypass: Vec<IpNet>,
    /// `dns-hijack`: every DNS query (port 53, UDP and TCP) from the LAN and from this host
    /// goes to the built-in DNS server, whatever server it was sent to.
    pub dns_hijack: bool,
    /// `offload-direct`: destinations the rules send DIRECT by address alone are left to
    /// the kernel (an nftables set checked before TPROXY); see `RuleEngine::offload`.
    pub offload_direct: bool,
}

impl Default for Config {
    /// What an empty config file means.
    fn default() -> Self {
        Self {
            tproxy_port: DEFAULT_TPROXY_PORT,
            routing_mark: DEFAULT_ROUTING_MARK,
            ipv6: true,
            mode: Mode::Rule,
            log_level: LogLevel::Info,
            intercept: Intercept::default(),
            rules: Vec::new(),
            proxies: Vec::new(),
            groups: Vec::new(),
            global_target: None,
            external_controller: None,
            secret: None,
            controller: super::Controller::default(),
            state_file: DEFAULT_STATE_FILE.to_owned(),
            sniffer: super::Sniffer::default(),
            rule_providers: Vec::new(),
            proxy_providers: Vec::new(),
            geoip_path: None,
            geosite_path: None,
            asn_path: None,
            geox: Geox::default(),
            sub_rules: Vec::new(),
            dns: super::Dns::default(),
            limits: super::Limits::default(),
        }
    }
}

impl Default for Intercept {
    fn default() -> Self {
        Self {
            backend: Backend::Nftables,
            iptables_variant: IptablesVariant::Auto,
            lan_interfaces: Vec::new(),
            local: true,
            udp: true,
            fwmark: DEFAULT_FWMARK,
            route_table: DEFAULT_ROUTE_TABLE,
            rule_priority: DEFAULT_RULE_PRIORITY,
            bypass: Vec::new(),
            dns_hijack: false,
            offload_direct: true,
        }
    }
}

/// Downloading the geodata files (mihomo's `geox-url`). tpgate downloads only when the
/// config says where from: a file is fetched at start when it is missing, on
/// `POST /configs/geo`, and every `interval` with `auto_update`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geox {
    /// `geox-url.mmdb`: the country database (`geoip-path`, default `Country.mmdb`).
    pub mmdb: Option<String>,
    /// `geox-url.geosite`: the v2ray geosite list (`geosite-path`, default `GeoSite.dat`).
    pub geosite: Option<String>,
    /// `geox-url.geoip`: the v2ray geoip.dat read with `geodata-mode` (`geoip-path`, default
    /// `GeoIP.dat`).
    pub geoip: Option<String>,
    /// `geox-url.asn`: the ASN database (`asn-path`, default `ASN.mmdb`).
    pub asn: Option<String>,
    /// `geodata-mode: true`: `GEOIP` rules read a v2ray geoip.dat (country codes and
    /// categories such as `telegram`) instead of the country database.
    pub geodata_mode: bool,
    /// `geo-auto-update`.
    pub auto_update: bool,
    /// `geo-update-interval` (hours in the file; mihomo's default 24).
    pub interval: std::time::Duration,
}

impl Default for Geox {
    fn default() -> Self {
        Self {
            mmdb: None,
            geosite: None,
            geoip: None,
            asn: None,
            geodata_mode: false,
            auto_update: false,
            interval: std::time::Duration::from_secs(24 * 3600),
        }
    }
}
