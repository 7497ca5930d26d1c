//! An index over the rules that are lookups by key (`DOMAIN`, `DOMAIN-SUFFIX`, `IP-CIDR`,
//! `SRC-IP-CIDR`, and `MATCH`), so a config with 100,000 of them decides a flow with a few
//! hash lookups instead of a scan. First match still wins: the index yields the smallest
//! rule number among the keyed rules that hold, and only the other rules (keywords, regexes,
//! ports, logic) numbered below it are tried one by one.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{FlowMeta, Matcher, Rule};

/// Smallest rule number per key.
#[derive(Debug, Clone, Default)]
pub(super) struct Index {
    exact: HashMap<Box<str>, usize>,
    suffix: HashMap<Box<str>, usize>,
    dst: Cidrs,
    src: Cidrs,
    /// The first `MATCH`.
    catch_all: Option<usize>,
    /// Rules the index cannot answer, in order: tried only below the index's answer.
    scan: Vec<usize>,
}

/// CIDRs by prefix length; only lengths in use are probed.
#[derive(Debug, Clone, Default)]
struct Cidrs {
    v4: HashMap<(u8, u32), usize>,
    v6: HashMap<(u8, u128), usize>,
    lens4: Vec<u8>,
    lens6: Vec<u8>,
}

fn keep_min<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K, rule: usize) {
    map.entry(key)
        .and_modify(|r| *r = (*r).min(rule))
        .or_insert(rule);
}

impl Cidrs {
    fn insert(&mut self, net: IpNet, rule: usize) {
        match net.trunc() {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                keep_min(&mut self.v4, (len, u32::from(n.network())), rule);
                if !self.lens4.contains(&len) {
                    self.lens4.push(len);
                }
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                keep_min(&mut self.v6, (len, u128::from(n.network())), rule);
                if !self.lens6.contains(&len) {
                    self.lens6.push(len);
                }
            }
        }
    }

    /// Smallest rule whose CIDR holds `ip` (its canonical form, and the mapped form as
    /// written, like the matcher does).
    fn lookup(&self, ip: IpAddr) -> Option<usize> {
        let canonical = ip.to_canonical();
        let mut best = self.lookup_one(canonical);
        if canonical != ip {
            best = min_opt(best, self.lookup_one(ip));
        }
        best
    }

    fn lookup_one(&self, ip: IpAddr) -> Option<usize> {
        let mut best = None;
        match ip {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                for &len in &self.lens4 {
                    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                    best = min_opt(best, self.v4.get(&(len, bits & mask)).copied());
                }
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                for &len in &self.lens6 {
                    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    best = min_opt(best, self.v6.get(&(len, bits & mask)).copied());
                }
            }
        }
        best
    }
}

fn min_opt(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Index {
    pub(super) fn build(rules: &[Rule]) -> Self {
        let mut ix = Self::default();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.matcher {
                Matcher::Domain(d) => keep_min(&mut ix.exact, d.as_str().into(), i),
                Matcher::DomainSuffix(s) if !s.starts_with('.') => {
                    keep_min(&mut ix.suffix, s.as_str().into(), i);
                }
                Matcher::IpCidr(net) => ix.dst.insert(*net, i),
                Matcher::SrcIpCidr(net) => ix.src.insert(*net, i),
                Matcher::Match => {
                    ix.catch_all.get_or_insert(i);
                }
                _ => ix.scan.push(i),
            }
        }
        ix
    }

    /// The first rule (by number) that holds for `flow`.
    pub(super) fn first_match(&self, rules: &[Rule], flow: &FlowMeta<'_>) -> Option<usize> {
        let mut best = self.catch_all;
        if let Some(host) = flow.host {
            best = min_opt(best, self.exact.get(host).copied());
            if !self.suffix.is_empty() {
                // Every label-aligned suffix of the name: `a.b.c` -> `a.b.c`, `b.c`, `c`.
                let mut rest = host;
                loop {
                    best = min_opt(best, self.suffix.get(rest).copied());
                    match rest.split_once('.') {
                        Some((_, r)) => rest = r,
                        None => break,
                    }
                }
            }
        }
        best = min_opt(best, self.dst.lookup(flow.dst.ip()));
        best = min_opt(best, self.src.lookup(flow.src.ip()));
        let bound = best.unwrap_or(usize::MAX);
        self.scan
            .iter()
            .copied()
            .take_while(|&i| i < bound)
            .find(|&i| rules[i].matcher.matches(flow))
            .or(best)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::net::{Network, Origin};
    use crate::rules::{parse_rule, Mode, RuleEngine, Verdict};

    fn rule_text() -> impl Strategy<Value = String> {
        let name = "(a|b|c)(\\.(a|b|c)){0,2}";
        prop_oneof![
            name.prop_map(|n| format!("DOMAIN,{n},REJECT")),
            name.prop_map(|n| format!("DOMAIN-SUFFIX,{n},REJECT")),
            "(a|b)".prop_map(|k| format!("DOMAIN-KEYWORD,{k},REJECT")),
            (0u8..4, 0u8..=32).prop_map(|(x, len)| format!("IP-CIDR,192.0.2.{x}/{len},REJECT")),
            (0u8..4, 0u8..=32)
                .prop_map(|(x, len)| format!("SRC-IP-CIDR,198.51.100.{x}/{len},REJECT")),
            (0u16..4, 96u8..=128)
                .prop_map(|(x, len)| format!("IP-CIDR6,2001:db8::{x}/{len},REJECT")),
            (1u16..4).prop_map(|p| format!("DST-PORT,{p},REJECT")),
            Just("NETWORK,udp,REJECT".to_owned()),
            Just("AND,((DOMAIN-SUFFIX,a),(DST-PORT,1)),REJECT".to_owned()),
            Just("MATCH,REJECT".to_owned()),
        ]
    }

    proptest! {
        /// The indexed decision is exactly the first rule that holds, scanning in order.
        #[test]
        fn index_agrees_with_a_scan(
            texts in proptest::collection::vec(rule_text(), 0..24),
            host in proptest::option::of("(a|b|c)(\\.(a|b|c)){0,3}"),
            d in 0u8..5, s in 0u8..5, port in 1u16..5, v6 in any::<bool>(), udp in any::<bool>(),
        ) {
            let rules: Vec<Rule> = texts.iter().map(|t| parse_rule(t).unwrap()).collect();
            let dst: std::net::SocketAddr = if v6 {
                format!("[2001:db8::{d}]:{port}").parse().unwrap()
            } else {
                format!("192.0.2.{d}:{port}").parse().unwrap()
            };
            let flow = FlowMeta {
                network: if udp { Network::Udp } else { Network::Tcp },
                src: format!("198.51.100.{s}:5000").parse().unwrap(),
                dst,
                origin: Origin::Forwarded,
                host: host.as_deref(),
                process: None,
                geo: None,
            };
            let want = rules.iter().position(|r| r.matcher.matches(&flow));
            let e = RuleEngine::new(rules, Mode::Rule, Verdict::Direct);
            prop_assert_eq!(e.decide(&flow).rule, want);
        }
    }
}
