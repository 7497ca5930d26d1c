//! Config -> [`Plan`]: everything `tpgate run` installs (the nftables table or the
//! iptables chains, the policy-routing rules and routes, the listeners) and the sysctls it
//! checks, as data. Rendering the plan to an nftables script ([`render_nft`]), to
//! iptables-restore scripts ([`render_iptables`]) and to text for people ([`render_text`])
//! is pure; applying it is the daemon's job.

mod bypass;
mod iptables;
mod nft;
mod text;

pub use bypass::{DEFAULT_BYPASS_V4, DEFAULT_BYPASS_V6};
pub use iptables::{ipt_remove, ipt_replace, render_iptables, IptState, IPT_CHAIN_PREFIX};
pub use nft::{render_nft, render_offload_update, NFT_FAMILY, NFT_TABLE};
pub use text::render_text;

use ipnet::IpNet;

use crate::config::{Backend, Config, IptablesVariant};
use crate::net::{Mark, TableId};
use crate::rules::Offload;

/// Route `protocol` / rule `protocol` tag of everything tpgate installs, so teardown removes
/// exactly what tpgate added (116 is unassigned in iproute2's `rt_protos`).
pub const ROUTE_PROTO: u8 = 116;

/// IP family of a routing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// `ip -4` / `ip -6`.
    pub const fn ip_flag(self) -> &'static str {
        match self {
            Self::V4 => "-4",
            Self::V6 => "-6",
        }
    }
}

/// `ip rule add fwmark M lookup T pref P proto 116`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyRule {
    pub family: Family,
    pub fwmark: Mark,
    pub table: TableId,
    pub priority: u32,
}

/// `ip route add local default dev lo table T proto 116`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRoute {
    pub family: Family,
    pub table: TableId,
}

/// A kernel setting tpgate relies on. tpgate checks it at start and warns; it never writes
/// sysctls (a router's forwarding or a desktop's IPv6 autoconfiguration is the owner's call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// Dotted name as `sysctl` prints it, e.g. `net.ipv4.ip_forward`.
    pub key: String,
    pub want: String,
    pub why: &'static str,
}

/// Which listeners the daemon binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listeners {
    pub port: u16,
    pub ipv6: bool,
    pub udp: bool,
}

/// What `run` installs, derived from a config alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Which renderer `run` applies; `Auto` is decided at start.
    pub backend: Backend,
    pub iptables_variant: IptablesVariant,
    pub tproxy_port: u16,
    pub fwmark: Mark,
    pub routing_mark: u32,
    pub ipv6: bool,
    pub udp: bool,
    pub local: bool,
    pub lan_interfaces: Vec<String>,
    pub bypass_v4: Vec<IpNet>,
    pub bypass_v6: Vec<IpNet>,
    pub rules: Vec<PolicyRule>,
    pub routes: Vec<LocalRoute>,
    pub sysctls: Vec<Sysctl>,
    pub listeners: Listeners,
    /// `dns-hijack`: the built-in DNS server's port that every port-53 query is redirected
    /// to (nat), and which the TPROXY rules leave alone.
    pub dns_hijack: Option<u16>,
    /// Destinations DIRECT by address alone, forwarded by the kernel without TPROXY
    /// (`offload-direct`; nftables only).
    pub offload: Offload,
    /// `offload-direct` is on.
    pub offload_enabled: bool,
    /// The built-in DNS server's address and whether tpgate chose it (no `dns.listen`).
    pub dns_server: Option<(std::net::SocketAddr, bool)>,
}

impl Plan {
    /// The plan of `config`, with `GEOIP` countries unknown (they end the offload scan);
    /// see [`Plan::with_countries`].
    pub fn new(config: &Config) -> Self {
        Self::with_countries(config, &|_| None)
    }

    /// The plan of `config`; `country` gives a `GEOIP` country's ranges for the offload.
    pub fn with_countries(config: &Config, country: &dyn Fn(&str) -> Option<Vec<IpNet>>) -> Self {
        let ic = &config.intercept;
        let families: &[Family] = if config.ipv6 {
            &[Family::V4, Family::V6]
        } else {
            &[Family::V4]
        };
        let rules = families
            .iter()
            .map(|&family| PolicyRule {
                family,
                fwmark: ic.fwmark,
                table: ic.route_table,
                priority: ic.rule_priority,
            })
            .collect();
        let routes = families
            .iter()
            .map(|&family| LocalRoute {
                family,
                table: ic.route_table,
            })
            .collect();
        let (bypass_v4, bypass_v6) = bypass::merged(&ic.bypass);
        Self {
            backend: ic.backend,
            iptables_variant: ic.iptables_variant,
            tproxy_port: config.tproxy_port,
            fwmark: ic.fwmark,
            routing_mark: config.routing_mark,
            ipv6: config.ipv6,
            udp: ic.udp,
            local: ic.local,
            lan_interfaces: ic.lan_interfaces.clone(),
            bypass_v4,
            bypass_v6,
            rules,
            routes,
            sysctls: sysctls(config),
            listeners: Listeners {
                port: config.tproxy_port,
                ipv6: config.ipv6,
                udp: ic.udp,
            },
            dns_hijack: ic
                .dns_hijack
                .then(|| config.dns.listen.map(|a| a.port()))
                .flatten(),
            offload: if ic.offload_direct {
                config.rule_engine().offload(country, &fake_pools(config))
            } else {
                Offload::default()
            },
            offload_enabled: ic.offload_direct,
            dns_server: config
                .dns
                .listen
                .filter(|_| config.dns.enable)
                .map(|a| (a, config.dns.listen_chosen)),
        }
    }
}

/// The fake-ip pools (with fake-ip on): their addresses stand for names, never offloaded.
fn fake_pools(config: &Config) -> Vec<IpNet> {
    let d = &config.dns;
    let mut out = vec![IpNet::V4(d.fake_ip_range)];
    out.extend(d.fake_ip_range6.map(IpNet::V6));
    out
}

fn sysctls(config: &Config) -> Vec<Sysctl> {
    let mut out = Vec::new();
    if config.intercept.lan_interfaces.is_empty() {
        return out;
    }
    out.push(Sysctl {
        key: "net.ipv4.ip_forward".into(),
        want: "1".into(),
        why: "a gateway routes the LAN traffic tpgate does not intercept (bypass, ICMP)",
    });
    if config.ipv6 {
        out.push(Sysctl {
            key: "net.ipv6.conf.all.forwarding".into(),
            want: "1".into(),
            why: "the same for IPv6",
        });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::*;

    /// A config built without the YAML loader, so the renderer's tests stand alone.
    pub(crate) fn sample(lan: &[&str], local: bool, ipv6: bool, udp: bool) -> Config {
        Config {
            ipv6,
            intercept: Intercept {
                backend: Backend::Nftables,
                iptables_variant: IptablesVariant::Auto,
                lan_interfaces: lan.iter().map(|s| s.to_string()).collect(),
                local,
                udp,
                fwmark: DEFAULT_FWMARK,
                route_table: DEFAULT_ROUTE_TABLE,
                rule_priority: DEFAULT_RULE_PRIORITY,
                bypass: vec!["192.0.2.0/24".parse().unwrap()],
                dns_hijack: false,
                offload_direct: true,
            },
            rules: vec![],
            ..Config::default()
        }
    }

    #[test]
    fn families_follow_ipv6() {
        let p = Plan::new(&sample(&["br-lan"], true, false, true));
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.routes.len(), 1);
        assert!(render_nft(&p).contains("meta nfproto ipv6 return"));
        let p = Plan::new(&sample(&["br-lan"], true, true, true));
        assert_eq!(p.rules.len(), 2);
        assert!(!render_nft(&p).contains("meta nfproto ipv6 return"));
    }

    #[test]
    fn print_sample() {
        println!(
            "{}",
            render_text(&Plan::new(&sample(&["lan0", "br-lan"], true, true, true)))
        );
    }
}
