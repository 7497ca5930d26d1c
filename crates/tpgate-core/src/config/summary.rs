//! What `tpgate check` tells a user moving a mihomo config over, after the diagnostics:
//! how many proxies tpgate can use and which types it skipped, which groups were left
//! with no member, which files it will download at start. Built while decoding
//! ([`Collect`]) and finished from the decoded [`Config`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Config, Member, ProviderSource};

/// The summary of one config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Proxies tpgate will use (from `proxies:` and the providers read at load).
    pub proxies: usize,
    /// Proxies skipped, by type (`vmess: 3`), with the reason being in their warnings.
    pub skipped_types: BTreeMap<String, usize>,
    /// Groups with no member tpgate can use: they reject all traffic.
    pub empty_groups: Vec<String>,
    /// Groups whose members come from http providers that are downloaded at start.
    pub waiting_groups: Vec<String>,
    /// `(what, url, cache path)` of each download made at start.
    pub downloads: Vec<(String, String, Option<String>)>,
}

impl Summary {
    /// The summary as lines of text, for `tpgate check`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut proxies = format!("proxies: {} usable", self.proxies);
        if !self.skipped_types.is_empty() {
            let skipped: usize = self.skipped_types.values().sum();
            let _ = write!(proxies, ", {skipped} skipped (");
            let kinds: Vec<String> = self
                .skipped_types
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = write!(proxies, "{})", kinds.join(", "));
        }
        out.push(proxies);
        if !self.empty_groups.is_empty() {
            out.push(format!(
                "groups left with no usable member (they reject all traffic): {}",
                self.empty_groups.join(", ")
            ));
        }
        if !self.waiting_groups.is_empty() {
            out.push(format!(
                "groups filled by providers downloaded at start: {}",
                self.waiting_groups.join(", ")
            ));
        }
        if self.downloads.is_empty() {
            out.push("downloads at start: none".to_owned());
        } else {
            out.push(format!("downloads at start: {}", self.downloads.len()));
            for (what, url, path) in &self.downloads {
                let cache = path
                    .as_deref()
                    .map_or_else(String::new, |p| format!(" -> {p}"));
                out.push(format!("  {what}: {url}{cache}"));
            }
        }
        out
    }
}

/// What the decoder notes on the way.
#[derive(Debug, Default)]
pub(super) struct Collect {
    pub(super) skipped_types: BTreeMap<String, usize>,
}

impl Collect {
    pub(super) fn skipped(&mut self, kind: &str) {
        *self.skipped_types.entry(kind.to_owned()).or_default() += 1;
    }

    pub(super) fn finish(self, config: &Config) -> Summary {
        let mut downloads = Vec::new();
        for p in &config.rule_providers {
            if let ProviderSource::Http { url, path } = &p.source {
                downloads.push((
                    format!("rule provider {}", p.name),
                    url.clone(),
                    path.clone(),
                ));
            }
        }
        for p in &config.proxy_providers {
            if let super::ProxySource::Http { url, path, .. } = &p.source {
                downloads.push((
                    format!("proxy provider {}", p.name),
                    url.clone(),
                    Some(path.clone()),
                ));
            }
        }
        let waits = |g: &super::GroupDef| {
            g.uses.iter().any(|&i| {
                config
                    .proxy_providers
                    .get(i)
                    .is_some_and(|p| p.proxies.is_empty())
            })
        };
        let empty_groups = config
            .groups
            .iter()
            .filter(|g| g.members == [Member::Reject] && !waits(g))
            .map(|g| g.name.clone())
            .collect();
        let waiting_groups = config
            .groups
            .iter()
            .filter(|g| waits(g))
            .map(|g| g.name.clone())
            .collect();
        Summary {
            proxies: config.proxies.len()
                + config
                    .proxy_providers
                    .iter()
                    .map(|p| p.proxies.len())
                    .sum::<usize>(),
            skipped_types: self.skipped_types,
            empty_groups,
            waiting_groups,
            downloads,
        }
    }
}
