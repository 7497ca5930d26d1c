//! Matching: does a [`Matcher`] hold for a [`FlowMeta`], and which rule decides a flow.
//! Runs once per new flow on the data path, so nothing here allocates.

use std::net::IpAddr;

use ipnet::IpNet;

use super::domain::suffix_matches;
use super::{Decision, FlowMeta, Matcher, Mode, RuleEngine, Verdict};

impl Matcher {
    /// Whether this matcher holds for `flow`. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`,
    /// as a dual-stack socket reports IPv4 peers) match IPv4 CIDRs.
    pub fn matches(&self, flow: &FlowMeta) -> bool {
        match self {
            Self::IpCidr(net) => net_contains(net, flow.dst.ip()),
            Self::SrcIpCidr(net) => net_contains(net, flow.src.ip()),
            Self::DstPort(ranges) => ranges.iter().any(|r| r.contains(flow.dst.port())),
            Self::SrcPort(ranges) => ranges.iter().any(|r| r.contains(flow.src.port())),
            Self::Network(network) => *network == flow.network,
            Self::Origin(origin) => *origin == flow.origin,
            Self::Domain(name) => flow.host == Some(name.as_str()),
            Self::DomainSuffix(suffix) => flow.host.is_some_and(|h| suffix_matches(h, suffix)),
            Self::DomainKeyword(word) => flow.host.is_some_and(|h| h.contains(word.as_str())),
            Self::DomainWildcard(w) => flow.host.is_some_and(|h| w.matches(h)),
            Self::DomainRegex(r) => flow.host.is_some_and(|h| r.matches(h)),
            Self::And(all) => all.iter().all(|m| m.matches(flow)),
            Self::Or(any) => any.iter().any(|m| m.matches(flow)),
            Self::Not(inner) => !inner.matches(flow),
            Self::NoResolve(inner) => inner.matches(flow),
            Self::RuleSet(set) | Self::GeoSite(set) => set.matches(flow),
            Self::ProcessName(n) => process(flow).and_then(|p| p.name.as_ref()) == Some(n),
            Self::ProcessPath(n) => process(flow).and_then(|p| p.path.as_ref()) == Some(n),
            Self::ProcessNameRegex(r) => process(flow)
                .and_then(|p| p.name.as_deref())
                .is_some_and(|n| r.matches(n)),
            Self::ProcessPathRegex(r) => process(flow)
                .and_then(|p| p.path.as_deref())
                .is_some_and(|n| r.matches(n)),
            Self::GeoIp(code) if code == "LAN" => is_lan(flow.dst.ip()),
            Self::SrcGeoIp(code) if code == "LAN" => is_lan(flow.src.ip()),
            Self::GeoIp(code) => flow.geo.is_some_and(|g| g.dst.contains(code)),
            Self::SrcGeoIp(code) => flow.geo.is_some_and(|g| g.src.contains(code)),
            Self::IpAsn(code) => flow.geo.is_some_and(|g| g.dst.contains(code)),
            Self::SrcIpAsn(code) => flow.geo.is_some_and(|g| g.src.contains(code)),
            Self::Uid(ranges) => process(flow)
                .and_then(|p| p.uid)
                .is_some_and(|u| ranges.iter().any(|&(a, b)| a <= u && u <= b)),
            Self::SubRule { cond, .. } => cond.matches(flow),
            Self::Match => true,
        }
    }
}

/// mihomo's `GEOIP,LAN`: private, shared (CGNAT), loopback, link-local and unique-local
/// addresses.
fn is_lan(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || (a.octets()[0] == 100 && a.octets()[1] & 0xc0 == 64)
        }
        IpAddr::V6(a) => a.is_loopback() || a.is_unique_local() || a.is_unicast_link_local(),
    }
}

fn process<'a>(flow: &FlowMeta<'a>) -> Option<&'a super::ProcessInfo> {
    flow.process
}

/// The canonical form decides, but a CIDR written in mapped form (`::ffff:0:0/96`) still
/// matches the mapped address it was written for.
fn net_contains(net: &IpNet, addr: IpAddr) -> bool {
    let canonical = addr.to_canonical();
    net.contains(&canonical) || (canonical != addr && net.contains(&addr))
}

impl RuleEngine {
    /// `rule` mode: first match wins, no match is DIRECT. `global` mode: the global
    /// action for every flow. `direct` mode: DIRECT.
    pub fn decide(&self, flow: &FlowMeta) -> Decision {
        let action = match self.mode() {
            Mode::Rule => {
                if let Some((index, inner, action)) =
                    self.first_in(&self.rules, &self.index, flow, 0)
                {
                    return Decision {
                        verdict: action,
                        rule: Some(index),
                        inner,
                    };
                }
                Verdict::Direct
            }
            Mode::Global => self.global,
            Mode::Direct => Verdict::Direct,
        };
        Decision {
            verdict: action,
            rule: None,
            inner: None,
        }
    }

    /// The first rule of `rules` that decides `flow`: a plain rule that holds, or a
    /// `SUB-RULE` whose condition holds and whose list decides (else the list goes on after
    /// it). Sub-rule nesting is bounded (the config refuses cycles; this is a backstop).
    #[allow(clippy::type_complexity)]
    pub(super) fn first_in(
        &self,
        rules: &[super::Rule],
        index: &super::index::Index,
        flow: &FlowMeta<'_>,
        depth: usize,
    ) -> Option<(usize, Option<(usize, usize)>, Verdict)> {
        let mut candidate = index.first_match(rules, flow);
        while let Some(i) = candidate {
            // Only the main list's rules can be switched off (`PATCH /rules/disable`).
            if depth == 0 && self.is_disabled(i) {
                candidate = rules[i + 1..]
                    .iter()
                    .position(|r| r.matcher.matches(flow))
                    .map(|p| p + i + 1);
                continue;
            }
            let Matcher::SubRule { list, .. } = rules[i].matcher else {
                return Some((i, None, rules[i].verdict));
            };
            if let Some(sub) = self.subs.get(list).filter(|_| depth < 8) {
                if let Some((j, inner, action)) =
                    self.first_in(&sub.rules, &sub.index, flow, depth + 1)
                {
                    return Some((i, Some(inner.unwrap_or((list, j))), action));
                }
            }
            candidate = rules[i + 1..]
                .iter()
                .position(|r| r.matcher.matches(flow))
                .map(|p| p + i + 1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use proptest::prelude::*;

    use super::*;
    use crate::net::{Network, Origin};
    use crate::rules::TargetId;
    use crate::rules::{parse_rule, PortRange, Rule};

    fn flow(src: &str, dst: &str) -> FlowMeta<'static> {
        FlowMeta {
            network: Network::Tcp,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            origin: Origin::Forwarded,
            host: None,
            process: None,
            geo: None,
        }
    }

    fn engine(rules: &[&str], mode: Mode) -> RuleEngine {
        let rules = rules.iter().map(|r| parse_rule(r).unwrap()).collect();
        RuleEngine::new(rules, mode, Verdict::Proxy(TargetId(7)))
    }

    fn decided(verdict: Verdict, rule: Option<usize>) -> Decision {
        Decision {
            verdict,
            rule,
            inner: None,
        }
    }

    #[test]
    fn domain_and_logic_rules_match_the_flow_name() {
        let e = engine(
            &[
                "DOMAIN,exact.example.com,REJECT",
                "AND,((DOMAIN-SUFFIX,example.com),(NETWORK,udp)),REJECT-DROP",
                "DOMAIN-SUFFIX,example.com,REJECT",
                "NOT,((DOMAIN-KEYWORD,tube)),DIRECT",
                "MATCH,REJECT",
            ],
            Mode::Rule,
        );
        let base = flow("198.51.100.2:40000", "203.0.113.9:443");
        let named = |host| FlowMeta {
            host: Some(host),
            ..base
        };
        assert_eq!(
            e.decide(&named("exact.example.com")),
            decided(Verdict::Reject, Some(0))
        );
        let udp = FlowMeta {
            network: Network::Udp,
            ..named("www.example.com")
        };
        assert_eq!(e.decide(&udp), decided(Verdict::RejectDrop, Some(1)));
        assert_eq!(
            e.decide(&named("www.example.com")),
            decided(Verdict::Reject, Some(2))
        );
        assert_eq!(
            e.decide(&named("badexample.com")),
            decided(Verdict::Direct, Some(3))
        );
        assert_eq!(
            e.decide(&named("youtube.com")),
            decided(Verdict::Reject, Some(4))
        );
        // No name: domain rules never match, NOT of one does.
        assert_eq!(e.decide(&base), decided(Verdict::Direct, Some(3)));
    }

    #[test]
    fn fake_destinations_need_resolving_only_before_an_ip_rule() {
        let e = engine(
            &[
                "DOMAIN-SUFFIX,a.example,REJECT",
                "IP-CIDR,10.0.0.0/8,DIRECT",
                "MATCH,REJECT",
            ],
            Mode::Rule,
        );
        let fake = flow("198.51.100.2:40000", "198.18.0.5:443");
        let named = |host| FlowMeta {
            host: Some(host),
            ..fake
        };
        assert!(
            !e.needs_real_dst(&named("x.a.example")),
            "decided before the IP rule"
        );
        assert!(
            e.needs_real_dst(&named("b.example")),
            "the IP rule comes first"
        );
        let e = engine(
            &["IP-CIDR,10.0.0.0/8,DIRECT,no-resolve", "MATCH,REJECT"],
            Mode::Rule,
        );
        assert!(!e.needs_real_dst(&named("b.example")), "no-resolve");
    }

    #[test]
    fn first_match_wins_and_default_is_direct() {
        let e = engine(
            &[
                "DST-PORT,25,REJECT",
                "IP-CIDR,192.0.2.0/24,REJECT-DROP",
                "NETWORK,udp,REJECT",
            ],
            Mode::Rule,
        );
        let f = flow("198.51.100.2:40000", "192.0.2.9:25");
        assert_eq!(e.decide(&f), decided(Verdict::Reject, Some(0)));
        let f = flow("198.51.100.2:40000", "192.0.2.9:443");
        assert_eq!(e.decide(&f), decided(Verdict::RejectDrop, Some(1)));
        let f = flow("198.51.100.2:40000", "203.0.113.1:443");
        assert_eq!(e.decide(&f), decided(Verdict::Direct, None));
        let f = FlowMeta {
            network: Network::Udp,
            ..f
        };
        assert_eq!(e.decide(&f), decided(Verdict::Reject, Some(2)));
        assert_eq!(
            e.rule(2).map(|r| r.text.as_str()),
            Some("NETWORK,udp,REJECT")
        );
    }

    #[test]
    fn global_mode_is_the_global_action_and_direct_mode_is_direct() {
        let f = flow("198.51.100.2:1", "192.0.2.9:2");
        let e = engine(&["MATCH,REJECT"], Mode::Global);
        assert_eq!(e.decide(&f), decided(Verdict::Proxy(TargetId(7)), None));
        assert_eq!(e.global(), Verdict::Proxy(TargetId(7)));
        let e = engine(&["MATCH,REJECT"], Mode::Direct);
        assert_eq!(e.decide(&f), decided(Verdict::Direct, None));
        let e = RuleEngine::new(Vec::new(), Mode::Global, Verdict::Direct);
        assert_eq!(e.decide(&f), decided(Verdict::Direct, None));
    }

    #[test]
    fn mode_and_disabled_rules_change_live_and_copies_keep_their_own() {
        let f = flow("198.51.100.2:1", "192.0.2.9:2");
        let e = engine(&["DST-PORT,2,REJECT", "MATCH,DIRECT"], Mode::Rule);
        assert_eq!(e.decide(&f), decided(Verdict::Reject, Some(0)));
        assert!(e.set_disabled(0, true));
        assert!(e.is_disabled(0));
        assert_eq!(e.decide(&f), decided(Verdict::Direct, Some(1)));
        assert!(!e.set_disabled(2, true), "no such rule");
        let copy = e.clone();
        e.set_mode(Mode::Global);
        assert_eq!(e.mode(), Mode::Global);
        assert_eq!(e.decide(&f), decided(Verdict::Proxy(TargetId(7)), None));
        assert_eq!(copy.mode(), Mode::Rule, "a copy changes on its own");
        assert!(copy.is_disabled(0), "and starts with the same switches");
        e.set_mode(Mode::Rule);
        e.set_disabled(0, false);
        assert_eq!(e.decide(&f), decided(Verdict::Reject, Some(0)));
        let e = e.with_global(Verdict::Proxy(TargetId(9)));
        e.set_mode(Mode::Global);
        assert_eq!(e.decide(&f), decided(Verdict::Proxy(TargetId(9)), None));
    }

    #[test]
    fn every_matcher() {
        let f = FlowMeta {
            network: Network::Udp,
            src: "[2001:db8::5]:5353".parse().unwrap(),
            dst: "[2001:db8:1::1]:53".parse().unwrap(),
            origin: Origin::Local,
            host: None,
            process: None,
            geo: None,
        };
        let holds = |rule: &str| parse_rule(rule).unwrap().matcher.matches(&f);
        assert!(holds("IP-CIDR6,2001:db8:1::/48,DIRECT"));
        assert!(!holds("IP-CIDR6,2001:db8:2::/48,DIRECT"));
        assert!(!holds("IP-CIDR,0.0.0.0/0,DIRECT"));
        assert!(holds("SRC-IP-CIDR,2001:db8::/64,DIRECT"));
        assert!(holds("SRC-PORT,5000-6000,DIRECT"));
        assert!(!holds("SRC-PORT,53,DIRECT"));
        assert!(holds("DST-PORT,443/53,DIRECT"));
        assert!(holds("NETWORK,udp,DIRECT"));
        assert!(!holds("NETWORK,tcp,DIRECT"));
        assert!(holds("ORIGIN,local,DIRECT"));
        assert!(!holds("ORIGIN,forwarded,DIRECT"));
        assert!(holds("MATCH,DIRECT"));
    }

    #[test]
    fn mapped_ipv4_matches_ipv4_cidrs() {
        let e = engine(
            &[
                "SRC-IP-CIDR,10.0.0.0/8,REJECT",
                "IP-CIDR,192.0.2.0/24,REJECT-DROP",
            ],
            Mode::Rule,
        );
        let f = flow("[::ffff:10.1.2.3]:1000", "[2001:db8::1]:80");
        assert_eq!(e.decide(&f), decided(Verdict::Reject, Some(0)));
        let f = flow("[2001:db8::2]:1000", "[::ffff:192.0.2.1]:80");
        assert_eq!(e.decide(&f), decided(Verdict::RejectDrop, Some(1)));
        let mapped = engine(&["IP-CIDR6,::ffff:0:0/96,REJECT"], Mode::Rule);
        let f = flow("[2001:db8::2]:1000", "[::ffff:192.0.2.1]:80");
        assert_eq!(mapped.decide(&f), decided(Verdict::Reject, Some(0)));
    }

    fn any_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32)
                .prop_map(|(a, p)| IpNet::new(Ipv4Addr::from(a).into(), p).unwrap().trunc()),
            (any::<u128>(), 0u8..=128)
                .prop_map(|(a, p)| IpNet::new(Ipv6Addr::from(a).into(), p).unwrap().trunc()),
        ]
    }

    /// Addresses near `net` as often as anywhere, so both outcomes are exercised.
    fn any_addr_near(net: IpNet) -> impl Strategy<Value = IpAddr> {
        let base = net.network();
        prop_oneof![
            any::<u128>().prop_map(move |bits| match base {
                IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) ^ (bits as u32 & 0xffff))),
                IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) ^ (bits & 0xffff_ffff))),
            }),
            any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
            any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
        ]
    }

    fn with_dst(addr: IpAddr, port: u16) -> FlowMeta<'static> {
        FlowMeta {
            network: Network::Tcp,
            src: "192.0.2.1:1".parse().unwrap(),
            dst: SocketAddr::new(addr, port),
            origin: Origin::Local,
            host: None,
            process: None,
            geo: None,
        }
    }

    proptest! {
        #[test]
        fn cidr_matches_what_ipnet_contains(
            (net, addr) in any_net().prop_flat_map(|net| (Just(net), any_addr_near(net)))
        ) {
            let m = Matcher::IpCidr(net);
            prop_assert_eq!(m.matches(&with_dst(addr, 80)), net.contains(&addr));
            if let IpAddr::V4(v4) = addr {
                let mapped = IpAddr::V6(v4.to_ipv6_mapped());
                prop_assert_eq!(m.matches(&with_dst(mapped, 80)), net.contains(&addr) || net.contains(&mapped));
            }
        }

        #[test]
        fn port_ranges_are_inclusive(a in 1u16.., b in 1u16.., port in any::<u16>()) {
            let (start, end) = (a.min(b), a.max(b));
            let m = Matcher::DstPort(vec![PortRange { start, end }]);
            prop_assert_eq!(m.matches(&with_dst(IpAddr::V4(Ipv4Addr::LOCALHOST), port)), start <= port && port <= end);
            let text = format!("DST-PORT,{start}-{end},DIRECT");
            prop_assert_eq!(parse_rule(&text).unwrap().matcher, m);
        }

        #[test]
        fn decision_is_the_first_matching_rule(
            ranges in proptest::collection::vec((1u16..200, 0u16..50, 0usize..3), 0..8),
            port in 0u16..260,
        ) {
            let actions = [Verdict::Direct, Verdict::Reject, Verdict::RejectDrop];
            let rules: Vec<Rule> = ranges.iter().map(|&(start, len, a)| Rule {
                matcher: Matcher::DstPort(vec![PortRange { start, end: start + len }]),
                verdict: actions[a],
                no_resolve: false,
                text: String::new(),
                ignored: Vec::new(),
            }).collect();
            let expected = ranges.iter().position(|&(s, len, _)| s <= port && port <= s + len);
            let e = RuleEngine::new(rules, Mode::Rule, Verdict::Direct);
            let d = e.decide(&with_dst(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
            prop_assert_eq!(d.rule, expected);
            let action = expected.map_or(Verdict::Direct, |i| actions[ranges[i].2]);
            prop_assert_eq!(d.verdict, action);
        }
    }
}
