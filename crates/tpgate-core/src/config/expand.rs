//! A group's members as mihomo orders them: the members written in `proxies` (with
//! `include-all-proxies`) first, then each provider of `use` in turn, its proxies through
//! the group's `filter`; with several providers and several filter regexes, everything is
//! reordered by regex; then `exclude-type` and `exclude-filter`; an empty result is
//! `[REJECT]` (mihomo's COMPATIBLE). Pure: the daemon calls it again whenever a provider's
//! proxies change.

use super::{Config, GroupDef, Member, ProxyDef};

/// One member of an expanded group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A member written in the config (or DIRECT / REJECT).
    Member(Member),
    /// Proxy `index` of provider `provider` (its current list).
    Provided { provider: usize, index: usize },
}

impl Config {
    /// The members of `g` given each provider's current proxies (`provided[k]` for
    /// `proxy_providers[k]`; missing ones count as empty). Never empty.
    pub fn expand_group(&self, g: &GroupDef, provided: &[&[ProxyDef]]) -> Vec<Slot> {
        let name_of = |s: &Slot| -> String {
            match *s {
                Slot::Member(Member::Direct) => "DIRECT".to_owned(),
                Slot::Member(Member::Reject) => "REJECT".to_owned(),
                Slot::Member(Member::Target(id)) => {
                    self.target_name(id).unwrap_or_default().to_owned()
                }
                Slot::Provided { provider, index } => provided
                    .get(provider)
                    .and_then(|l| l.get(index))
                    .map_or_else(String::new, |p| p.name.clone()),
            }
        };
        let mut out: Vec<Slot> = g.members.iter().map(|&m| Slot::Member(m)).collect();
        let mut from_providers = Vec::new();
        for &k in &g.uses {
            let list = provided.get(k).copied().unwrap_or(&[]);
            let indexed: Vec<(usize, &ProxyDef)> = list.iter().enumerate().collect();
            for (index, p) in g.filter.select(&indexed, |(_, p)| p.name.as_str()) {
                if g.filter.keeps(&p.name, p.kind.adapter_type()) {
                    from_providers.push(Slot::Provided {
                        provider: k,
                        index: *index,
                    });
                }
            }
        }
        out.extend(from_providers);
        if g.uses.len() > 1 && g.filter.filter.len() > 1 {
            let names: Vec<(Slot, String)> = out.iter().map(|s| (*s, name_of(s))).collect();
            let mut sorted: Vec<Slot> = Vec::with_capacity(out.len());
            for p in &g.filter.filter {
                for (s, n) in &names {
                    if p.is_match(n) && !sorted.contains(s) {
                        sorted.push(*s);
                    }
                }
            }
            for (s, _) in &names {
                if !sorted.contains(s) {
                    sorted.push(*s);
                }
            }
            out = sorted;
        }
        if out.is_empty() {
            out.push(Slot::Member(Member::Reject));
        }
        out
    }

    /// Each provider's proxies as loaded with the config.
    pub fn provided(&self) -> Vec<&[ProxyDef]> {
        self.proxy_providers
            .iter()
            .map(|p| p.proxies.as_slice())
            .collect()
    }
}
