//! Which destinations the kernel can send DIRECT without asking tpgate: the address ranges
//! whose verdict is DIRECT for every flow, whatever its name, process, source, port or
//! network. Rules are read in order; address-only rules (`IP-CIDR`, `GEOIP`, a `RULE-SET`
//! of prefixes only) decide their ranges, DIRECT ones are offloaded minus what an earlier
//! address rule decided otherwise; the first rule that can look at anything else (a name,
//! a process, a port, `MATCH`) ends the scan, since it could match a flow to any address.
//! Ranges the caller excludes (the fake-ip pools) never go in.
//!
//! Deliberately conservative: an entry of a logic rule, a `SUB-RULE`, or a `GEOIP` country
//! without its ranges ends the scan too. `MATCH,DIRECT` is never offloaded: the catch-all is
//! where tpgate's per-flow log and connection list matter.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Matcher, Mode, RuleEngine, Verdict};

/// An inclusive range of addresses of one family, as integers (IPv4 in the low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddrRange {
    pub v6: bool,
    pub start: u128,
    pub end: u128,
}

impl AddrRange {
    pub fn from_net(net: &IpNet) -> Self {
        match net {
            IpNet::V4(n) => Self {
                v6: false,
                start: u128::from(u32::from(n.network())),
                end: u128::from(u32::from(n.broadcast())),
            },
            IpNet::V6(n) => Self {
                v6: true,
                start: u128::from(n.network()),
                end: u128::from(n.broadcast()),
            },
        }
    }

    pub fn first(&self) -> IpAddr {
        addr(self.v6, self.start)
    }

    pub fn last(&self) -> IpAddr {
        addr(self.v6, self.end)
    }

    /// Whether `ip` (canonical form) is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v6, n) = bits(ip.to_canonical());
        v6 == self.v6 && self.start <= n && n <= self.end
    }
}

fn addr(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(n.into())
    } else {
        IpAddr::V4(u32::try_from(n).unwrap_or(u32::MAX).into())
    }
}

fn bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// Sorted, disjoint, merged ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<AddrRange>);

impl RangeSet {
    pub fn ranges(&self) -> &[AddrRange] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|r| r.contains(ip))
    }

    fn add(&mut self, r: AddrRange) {
        self.0.push(r);
        self.0.sort();
        let mut merged: Vec<AddrRange> = Vec::with_capacity(self.0.len());
        for r in self.0.drain(..) {
            match merged.last_mut() {
                Some(m) if m.v6 == r.v6 && r.start <= m.end.saturating_add(1) => {
                    m.end = m.end.max(r.end);
                }
                _ => merged.push(r),
            }
        }
        self.0 = merged;
    }

    /// `r` minus every range of `self`.
    fn subtract_from(&self, r: AddrRange) -> Vec<AddrRange> {
        let mut out = vec![r];
        for cut in self.0.iter().filter(|c| c.v6 == r.v6) {
            out = out
                .into_iter()
                .flat_map(|p| {
                    if cut.end < p.start || cut.start > p.end {
                        return vec![p];
                    }
                    let mut left = Vec::new();
                    if cut.start > p.start {
                        left.push(AddrRange {
                            end: cut.start - 1,
                            ..p
                        });
                    }
                    if cut.end < p.end {
                        left.push(AddrRange {
                            start: cut.end + 1,
                            ..p
                        });
                    }
                    left
                })
                .collect();
        }
        out
    }
}

/// What can be offloaded, and why the rest cannot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offload {
    /// DIRECT for every flow: the kernel forwards these without tpgate.
    pub direct: RangeSet,
    /// The rule (index and text) that ended the scan, when one did: every later rule is
    /// decided by tpgate.
    pub stopped_at: Option<(usize, String)>,
}

/// mihomo's `GEOIP,LAN` ranges (as `engine::is_lan` matches them).
const LAN: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

impl RuleEngine {
    /// The offloadable DIRECT ranges (see the module docs). `country` gives a `GEOIP`
    /// country's ranges (`None`: unknown, which ends the scan); `exclude` never goes in.
    pub fn offload(
        &self,
        country: &dyn Fn(&str) -> Option<Vec<IpNet>>,
        exclude: &[IpNet],
    ) -> Offload {
        let mut out = Offload::default();
        if self.mode() != Mode::Rule {
            return out;
        }
        // Ranges an earlier address rule decided: later rules never see them.
        let mut decided = RangeSet::default();
        let mut excluded = RangeSet::default();
        for n in exclude {
            excluded.add(AddrRange::from_net(n));
        }
        for (i, rule) in self.rules().iter().enumerate() {
            let Some(nets) = prefixes(&rule.matcher, country) else {
                out.stopped_at = Some((i, rule.text.clone()));
                return out;
            };
            for net in &nets {
                let r = AddrRange::from_net(net);
                if rule.verdict == Verdict::Direct {
                    for part in decided.subtract_from(r) {
                        for keep in excluded.subtract_from(part) {
                            out.direct.add(keep);
                        }
                    }
                }
                decided.add(r);
            }
        }
        out
    }
}

/// The destination prefixes an address-only matcher matches, or `None` when it can look
/// at anything else (or its ranges are unknown).
fn prefixes(m: &Matcher, country: &dyn Fn(&str) -> Option<Vec<IpNet>>) -> Option<Vec<IpNet>> {
    match m {
        Matcher::IpCidr(net) => Some(vec![*net]),
        Matcher::NoResolve(inner) => prefixes(inner, country),
        Matcher::GeoIp(cc) if cc == "LAN" => LAN.iter().map(|s| s.parse().ok()).collect(),
        Matcher::GeoIp(cc) | Matcher::IpAsn(cc) => country(cc),
        Matcher::RuleSet(h) => h.current().prefixes_only(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::net::{Network, Origin};
    use crate::rules::{parse_rule, FlowMeta, ProcessInfo, TargetId};

    fn engine(rules: &[&str]) -> RuleEngine {
        let rules = rules.iter().map(|r| parse_rule(r).unwrap()).collect();
        RuleEngine::new(rules, Mode::Rule, Verdict::Proxy(TargetId(0)))
    }

    fn no_countries(_: &str) -> Option<Vec<IpNet>> {
        None
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn address_rules_before_any_name_rule_are_offloaded_minus_earlier_decisions() {
        let e = engine(&[
            "IP-CIDR,203.0.113.128/25,REJECT",
            "IP-CIDR,203.0.113.0/24,DIRECT",
            "GEOIP,XX,DIRECT",
            "DOMAIN,a.test,REJECT",
            "IP-CIDR,192.0.2.0/24,DIRECT",
            "MATCH,DIRECT",
        ]);
        let xx = |cc: &str| (cc == "XX").then(|| vec!["198.18.0.0/15".parse().unwrap()]);
        let fake: IpNet = "198.18.0.0/16".parse().unwrap();
        let o = e.offload(&xx, &[fake]);
        assert!(o.direct.contains(ip("203.0.113.5")));
        assert!(!o.direct.contains(ip("203.0.113.200")), "REJECT came first");
        assert!(
            !o.direct.contains(ip("198.18.0.1")),
            "the fake-ip pool never goes in"
        );
        assert!(o.direct.contains(ip("198.19.0.1")));
        assert!(!o.direct.contains(ip("192.0.2.1")), "after a name rule");
        assert_eq!(o.stopped_at, Some((3, "DOMAIN,a.test,REJECT".into())));
        assert_eq!(o.direct.ranges().len(), 2);
    }

    #[test]
    fn nothing_after_match_process_or_port_rules_and_unknown_countries_stop() {
        for first in [
            "MATCH,DIRECT",
            "PROCESS-NAME,curl,DIRECT",
            "DST-PORT,443,DIRECT",
            "GEOIP,CN,DIRECT",
        ] {
            let e = engine(&[first, "IP-CIDR,203.0.113.0/24,DIRECT"]);
            let o = e.offload(&no_countries, &[]);
            assert!(o.direct.is_empty(), "{first}");
            assert_eq!(o.stopped_at.map(|s| s.0), Some(0), "{first}");
        }
        let global = RuleEngine::new(
            vec![parse_rule("IP-CIDR,203.0.113.0/24,DIRECT").unwrap()],
            Mode::Global,
            Verdict::Direct,
        );
        assert!(global.offload(&no_countries, &[]).direct.is_empty());
    }

    const POOL: &[&str] = &[
        "IP-CIDR,203.0.113.0/24,DIRECT",
        "IP-CIDR,203.0.113.64/26,REJECT",
        "IP-CIDR,192.0.2.0/25,DIRECT",
        "IP-CIDR,192.0.2.0/24,REJECT-DROP",
        "IP-CIDR6,2001:db8::/33,DIRECT",
        "IP-CIDR6,2001:db8:1::/48,REJECT",
        "GEOIP,LAN,DIRECT",
        "DOMAIN-SUFFIX,example.test,REJECT",
        "PROCESS-NAME,curl,REJECT",
        "SRC-IP-CIDR,198.51.100.0/24,REJECT",
        "DST-PORT,22,REJECT",
        "NETWORK,udp,REJECT",
        "MATCH,DIRECT",
    ];

    /// Addresses at and around the pool's range boundaries, and elsewhere.
    const EDGES: &[&str] = &[
        "203.0.113.0",
        "203.0.113.63",
        "203.0.113.64",
        "203.0.113.100",
        "203.0.113.127",
        "203.0.113.128",
        "203.0.113.255",
        "192.0.2.0",
        "192.0.2.127",
        "192.0.2.128",
        "192.0.2.255",
        "2001:db8::1",
        "2001:db8:1::1",
        "2001:db8:7fff::1",
        "2001:db8:8000::1",
        "10.1.2.3",
        "fe80::1",
        "198.51.100.7",
        "8.8.8.8",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Exact semantics: every offloaded address is DIRECT for any name, process,
        /// source, port and network the engine could be asked about.
        #[test]
        fn offloaded_addresses_are_direct_for_every_flow(
            picks in proptest::collection::vec(0..POOL.len(), 1..7),
            edge in 0..EDGES.len(),
            random in any::<u32>(),
            use_random in any::<bool>(),
        ) {
            let list: Vec<&str> = picks.iter().map(|&i| POOL[i]).collect();
            let e = engine(&list);
            let o = e.offload(&no_countries, &[]);
            let dst = if use_random { IpAddr::from(random.to_be_bytes()) } else { ip(EDGES[edge]) };
            if o.direct.contains(dst) {
                let curl = ProcessInfo { uid: Some(0), name: Some("curl".into()), path: None };
                for network in [Network::Tcp, Network::Udp] {
                    for host in [None, Some("www.example.test")] {
                        for (src, port) in [("198.51.100.2:4000", 22), ("192.0.2.9:5000", 443)] {
                            let verdict = e.decide(&FlowMeta {
                                network,
                                src: src.parse().unwrap(),
                                dst: std::net::SocketAddr::new(dst, port),
                                origin: Origin::Local,
                                host,
                                process: Some(&curl),
                                geo: None,
                            }).verdict;
                            prop_assert_eq!(verdict, Verdict::Direct, "{:?} {}", list, dst);
                        }
                    }
                }
            }
        }
    }
}
