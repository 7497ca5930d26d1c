//! Reading `iptables-save` output: which `TPGATE_*` chains exist, which rules of other
//! chains jump into them, who installed them, and whether anything else holds rules.

use super::{IPT_CHAIN_PREFIX, OWNER_PREFIX};

/// tpgate's chains and the jumps to them found in one family's `iptables-save` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptState {
    pub(super) tables: Vec<TableState>,
    /// Rules that are not tpgate's: a sign that the system's firewall uses this variant.
    pub foreign_rules: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct TableState {
    pub(super) name: String,
    pub(super) chains: Vec<String>,
    /// `(chain, rule spec after the chain name)` of rules that jump into tpgate's chains
    /// from a chain that is not tpgate's.
    pub(super) jumps: Vec<(String, String)>,
}

impl IptState {
    /// Reads `iptables-save` (or `ip6tables-save`) output. Lines it does not understand are
    /// skipped: the output of both variants and of older versions differs in comments.
    pub fn parse(save: &str) -> Self {
        let mut out = Self::default();
        let mut cur: Option<TableState> = None;
        for line in save.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                out.push(cur.take());
                cur = Some(TableState {
                    name: name.to_owned(),
                    ..TableState::default()
                });
            } else if line == "COMMIT" {
                out.push(cur.take());
            } else if let Some(t) = cur.as_mut() {
                if let Some(decl) = line.strip_prefix(':') {
                    let name = decl.split_whitespace().next().unwrap_or_default();
                    if ours(name) {
                        t.chains.push(name.to_owned());
                    }
                } else if let Some(rule) = line.strip_prefix("-A ") {
                    let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                    if ours(chain) {
                        continue;
                    }
                    if jumps_to_ours(spec) {
                        t.jumps.push((chain.to_owned(), spec.to_owned()));
                    } else {
                        out.foreign_rules += 1;
                    }
                }
            }
        }
        out.push(cur);
        out
    }

    fn push(&mut self, t: Option<TableState>) {
        if let Some(t) = t.filter(|t| !t.chains.is_empty() || !t.jumps.is_empty()) {
            self.tables.push(t);
        }
    }

    /// Whether tpgate has no chain and no jump here.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// How many chains of tpgate's and jumps into them there are: after another program
    /// flushed or reloaded the firewall, fewer than were installed.
    pub fn counts(&self) -> (usize, usize) {
        self.tables
            .iter()
            .fold((0, 0), |(c, j), t| (c + t.chains.len(), j + t.jumps.len()))
    }

    /// The processes named by `TPGATE_PID_<pid>` chains: who installed these chains.
    pub fn owners(&self) -> Vec<u32> {
        self.tables
            .iter()
            .flat_map(|t| &t.chains)
            .filter_map(|c| c.strip_prefix(OWNER_PREFIX)?.parse().ok())
            .collect()
    }

    /// `table/chain` for every chain of tpgate's, for messages.
    pub fn chain_names(&self) -> Vec<String> {
        self.tables
            .iter()
            .flat_map(|t| t.chains.iter().map(move |c| format!("{}/{c}", t.name)))
            .collect()
    }
}

fn ours(chain: &str) -> bool {
    chain.starts_with(IPT_CHAIN_PREFIX)
}

fn jumps_to_ours(spec: &str) -> bool {
    let words: Vec<&str> = spec.split_whitespace().collect();
    words
        .windows(2)
        .any(|w| matches!(w[0], "-j" | "-g" | "--jump" | "--goto") && ours(w[1]))
}
