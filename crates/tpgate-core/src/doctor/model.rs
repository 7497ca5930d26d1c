//! One model for rulesets from both worlds: nftables chains (from `nft -j`) and iptables
//! chains (from `iptables-save`) become [`Chain`]s of [`Rule`]s whose conditions and
//! actions are reduced to what matters for TPROXY (marks, owners, conntrack direction,
//! input interface, tproxy, jumps). [`flatten`] follows jumps from every base chain, so a
//! check sees each rule with the hook it really runs in and the exclusions before it.

use std::collections::HashSet;

use crate::net::Mark;
use crate::plan::Family;

/// Families a chain applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Fam {
    V4,
    V6,
    /// nftables `inet`.
    Both,
}

impl Fam {
    pub(super) fn families(self) -> &'static [Family] {
        match self {
            Self::V4 => &[Family::V4],
            Self::V6 => &[Family::V6],
            Self::Both => &[Family::V4, Family::V6],
        }
    }
}

/// Netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Other,
}

impl Hook {
    pub(super) fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "prerouting" => Self::Prerouting,
            "input" => Self::Input,
            "forward" => Self::Forward,
            "output" => Self::Output,
            "postrouting" => Self::Postrouting,
            _ => Self::Other,
        }
    }

    pub(super) const fn as_str(self) -> &'static str {
        match self {
            Self::Prerouting => "prerouting",
            Self::Input => "input",
            Self::Forward => "forward",
            Self::Output => "output",
            Self::Postrouting => "postrouting",
            Self::Other => "other",
        }
    }
}

/// Conntrack direction a condition restricts a rule to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Dir {
    Original,
    Reply,
}

/// A match, reduced to what the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cond {
    /// `meta mark [&m] ==/!= v`, `-m mark [!] --mark v/m`.
    Mark {
        mark: Mark,
        negated: bool,
    },
    /// skuid / skgid / cgroup: the packet's socket owner.
    Owner,
    /// Only packets of this conntrack direction (`ct direction`, `--ctdir`, `ct state new`).
    CtDir(Dir),
    /// Input interface name(s).
    Iif {
        names: Vec<String>,
        negated: bool,
    },
    /// `socket transparent 1` / `-m socket --transparent`.
    SocketTransparent,
    /// Only packets of one family (`ip daddr ...`, `meta nfproto ipv4`, `tproxy ip to`).
    Only(Family),
    Other,
}

/// A statement or target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// `tproxy to :port` / `-j TPROXY --on-port`; `mark` is the mark the same rule sets.
    Tproxy {
        port: Option<u16>,
        mark: Option<Mark>,
    },
    /// `meta mark set` / `-j MARK --set-mark`: the bits of `mask` become `value`.
    SetMark(Mark),
    Jump(String),
    Goto(String),
    Return,
    Accept,
    Drop,
    Other,
}

/// One rule: where it lives (for messages), its matches and its statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    /// How a person finds it: `-A CLASH -p tcp -j TPROXY ...` or `handle 12`.
    pub(super) text: String,
    pub(super) conds: Vec<Cond>,
    pub(super) actions: Vec<Action>,
}

impl Rule {
    /// Ends the chain for the packets it matches (return, accept, drop).
    pub(super) fn is_exit(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Return | Action::Accept | Action::Drop))
    }

    pub(super) fn set_mark(&self) -> Option<Mark> {
        self.actions.iter().find_map(|a| match a {
            Action::SetMark(m) => Some(*m),
            _ => None,
        })
    }

    pub(super) fn tproxy(&self) -> Option<(Option<u16>, Option<Mark>)> {
        self.actions.iter().find_map(|a| match a {
            Action::Tproxy { port, mark } => Some((*port, mark.or(self.set_mark()))),
            _ => None,
        })
    }
}

/// A chain of either world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    /// `nft inet tpgate` or `iptables-nft mangle`: the table, named so a person finds it.
    pub(super) origin: String,
    pub(super) fam: Fam,
    pub(super) name: String,
    pub(super) hook: Option<Hook>,
    pub(super) rules: Vec<Rule>,
}

impl Chain {
    /// `nft inet tpgate chain prerouting`.
    pub(super) fn location(&self) -> String {
        format!("{} chain {}", self.origin, self.name)
    }
}

/// A rule as it runs: reached from a base chain with `hook`, behind `guards` (earlier rules
/// on its path that end the chain for the packets they match) and under `path_conds` (the
/// conditions of the jumps that lead to it).
#[derive(Debug, Clone)]
pub(super) struct Placed<'a> {
    pub(super) hook: Hook,
    pub(super) fam: Fam,
    pub(super) chain: &'a Chain,
    pub(super) rule: &'a Rule,
    pub(super) guards: Vec<&'a Rule>,
    pub(super) path_conds: Vec<&'a Cond>,
}

impl Placed<'_> {
    /// Own conditions and those of the jumps leading here.
    pub(super) fn all_conds(&self) -> impl Iterator<Item = &Cond> {
        self.rule
            .conds
            .iter()
            .chain(self.path_conds.iter().copied())
    }

    pub(super) fn location(&self) -> String {
        format!("{}: {}", self.chain.location(), self.rule.text)
    }

    /// Families this rule can act on: its chain's, narrowed by family-specific matches.
    pub(super) fn families(&self) -> Vec<Family> {
        self.fam
            .families()
            .iter()
            .copied()
            .filter(|f| {
                self.all_conds()
                    .all(|c| !matches!(c, Cond::Only(o) if o != f))
            })
            .collect()
    }
}

/// Deepest jump chain followed (the kernel allows 16).
const MAX_DEPTH: usize = 16;

/// Every rule reachable from a base chain, with its hook and what guards it.
pub(super) fn flatten(chains: &[Chain]) -> Vec<Placed<'_>> {
    let mut out = Vec::new();
    for c in chains {
        if let Some(hook) = c.hook {
            walk(chains, c, hook, &[], &[], 0, &mut out);
        }
    }
    out
}

fn walk<'a>(
    chains: &'a [Chain],
    chain: &'a Chain,
    hook: Hook,
    guards_in: &[&'a Rule],
    path_in: &[&'a Cond],
    depth: usize,
    out: &mut Vec<Placed<'a>>,
) {
    let mut guards = guards_in.to_vec();
    for rule in &chain.rules {
        out.push(Placed {
            hook,
            fam: chain.fam,
            chain,
            rule,
            guards: guards.clone(),
            path_conds: path_in.to_vec(),
        });
        for a in &rule.actions {
            if let Action::Jump(t) | Action::Goto(t) = a {
                let target = chains
                    .iter()
                    .find(|c| c.origin == chain.origin && &c.name == t && c.hook.is_none());
                if let (Some(target), true) = (target, depth < MAX_DEPTH) {
                    let mut path = path_in.to_vec();
                    path.extend(rule.conds.iter());
                    walk(chains, target, hook, &guards, &path, depth + 1, out);
                }
            }
        }
        if rule.is_exit() {
            guards.push(rule);
        }
    }
}

/// Rules in chains no base chain reaches (never run).
pub(super) fn unreachable<'a>(
    chains: &'a [Chain],
    flat: &[Placed<'a>],
) -> Vec<(&'a Chain, &'a Rule)> {
    let reached: HashSet<*const Rule> = flat.iter().map(|p| p.rule as *const Rule).collect();
    chains
        .iter()
        .flat_map(|c| c.rules.iter().map(move |r| (c, r)))
        .filter(|(_, r)| !reached.contains(&(*r as *const Rule)))
        .collect()
}
