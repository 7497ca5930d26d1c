//! The proxies of proxy providers, which change while the daemon runs: each gets a
//! [`TargetId`] after the config's proxies and groups, kept while a proxy of that name
//! stays in its provider (an unchanged proxy keeps its outbound too), so groups can be
//! expanded again without disturbing what did not change.

use std::io;
use std::sync::Arc;

use tpgate_core::config::{ProxyDef, TargetId};
use tracing::warn;

use super::Upstream;

#[derive(Debug)]
pub(super) struct Table {
    /// The first id given to a provided proxy.
    base: u32,
    /// Per provider: its proxies now, in order.
    lists: Vec<Vec<(ProxyDef, Arc<Upstream>, TargetId)>>,
    /// By `id - base`; `None` once the proxy left its provider.
    by_id: Vec<Option<Arc<Upstream>>>,
}

impl Table {
    pub(super) fn new(base: u32, providers: usize) -> Self {
        Self {
            base,
            lists: vec![Vec::new(); providers],
            by_id: Vec::new(),
        }
    }

    /// Provider `k` now has `proxies`. A proxy whose outbound cannot be built is left out
    /// with a warning; the others are kept.
    pub(super) fn set(&mut self, k: usize, proxies: &[ProxyDef]) -> io::Result<()> {
        let Some(slot) = self.lists.get_mut(k) else {
            return Err(io::Error::other(format!("no proxy provider {k}")));
        };
        let old = std::mem::take(slot);
        let mut new = Vec::with_capacity(proxies.len());
        for p in proxies {
            if new
                .iter()
                .any(|(d, _, _): &(ProxyDef, _, _)| d.name == p.name)
            {
                continue;
            }
            let same_name = old.iter().find(|(d, _, _)| d.name == p.name);
            let (up, id) = match same_name {
                Some((d, up, id)) if d == p => (up.clone(), *id),
                found => {
                    let up = match Upstream::new(p) {
                        Ok(u) => Arc::new(u),
                        Err(e) => {
                            warn!("provided proxy {}: {e}; left out", p.name);
                            continue;
                        }
                    };
                    let id = match found {
                        Some((_, _, id)) => *id,
                        None => {
                            let n = u32::try_from(self.by_id.len()).unwrap_or(u32::MAX);
                            self.by_id.push(None);
                            TargetId(self.base.saturating_add(n))
                        }
                    };
                    (up, id)
                }
            };
            if let Some(e) = self.entry(id) {
                *e = Some(up.clone());
            }
            new.push((p.clone(), up, id));
        }
        for (_, _, id) in &old {
            if !new.iter().any(|(_, _, n)| n == id) {
                if let Some(e) = self.entry(*id) {
                    *e = None;
                }
            }
        }
        self.lists[k] = new;
        Ok(())
    }

    fn entry(&mut self, id: TargetId) -> Option<&mut Option<Arc<Upstream>>> {
        let i = id.0.checked_sub(self.base)? as usize;
        self.by_id.get_mut(i)
    }

    pub(super) fn get(&self, id: TargetId) -> Option<Arc<Upstream>> {
        let i = id.0.checked_sub(self.base)? as usize;
        self.by_id.get(i).cloned().flatten()
    }

    /// Every provided proxy, provider by provider.
    pub(super) fn all(&self) -> impl Iterator<Item = Arc<Upstream>> + '_ {
        self.lists
            .iter()
            .flat_map(|l| l.iter().map(|(_, u, _)| u.clone()))
    }

    pub(super) fn id_of(&self, name: &str) -> Option<TargetId> {
        self.lists
            .iter()
            .flat_map(|l| l.iter())
            .find(|(d, _, _)| d.name == name)
            .map(|(_, _, id)| *id)
    }

    /// Each provider's proxies, as [`tpgate_core::config::Config::expand_group`] wants.
    pub(super) fn defs(&self) -> Vec<Vec<ProxyDef>> {
        self.lists
            .iter()
            .map(|l| l.iter().map(|(d, _, _)| d.clone()).collect())
            .collect()
    }

    /// The id of proxy `index` of provider `provider`.
    pub(super) fn id(&self, provider: usize, index: usize) -> Option<TargetId> {
        self.lists.get(provider)?.get(index).map(|(_, _, id)| *id)
    }
}
