//! What a flow passes on its way to its verdict, for the daemon's "is it worth waiting for"
//! question [`RuleEngine::needs_real_dst`] (resolve a fake-ip flow's name before the
//! address rules?). It looks only at the rules precomputed as able to ask (see
//! [`Lookers`]), so it costs one decision and a short scan; it does no I/O.

use super::{FlowMeta, Matcher, Rule, RuleEngine};
use crate::config::Mode;

/// For one rule list: the rules that may want something a flow's first decision lacks, in
/// order. `SUB-RULE`s are in both: their list may ask.
#[derive(Debug, Clone, Default)]
pub(super) struct Lookers {
    /// Rules that look at the destination address without `no-resolve`.
    real_dst: Vec<usize>,
}

impl Lookers {
    pub(super) fn build(rules: &[Rule]) -> Self {
        let pick = |asks: fn(&Rule) -> bool| -> Vec<usize> {
            rules
                .iter()
                .enumerate()
                .filter(|(_, r)| asks(r) || matches!(r.matcher, Matcher::SubRule { .. }))
                .map(|(i, _)| i)
                .collect()
        };
        Self {
            real_dst: pick(|r| !r.no_resolve && r.matcher.looks_at_dst_ip()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Question {
    /// Would a rule look at the real destination address?
    RealDst,
}

impl Question {
    fn candidates(self, lookers: &Lookers) -> &[usize] {
        match self {
            Self::RealDst => &lookers.real_dst,
        }
    }

    /// Whether `m` asks, given what the rule sets hold now (a refresh may change it).
    fn asked_by(self, m: &Matcher) -> bool {
        match self {
            Self::RealDst => m.any_inside(&|m| match m {
                Matcher::IpCidr(_) | Matcher::GeoIp(_) => Some(true),
                Matcher::RuleSet(h) => Some(h.current().has_cidrs()),
                Matcher::NoResolve(_) => Some(false),
                _ => None,
            }),
        }
    }
}

impl Matcher {
    /// Whether `leaf` says yes for this matcher or one inside it; `leaf` answers for the
    /// matchers it knows, `None` means "look inside".
    fn any_inside(&self, leaf: &impl Fn(&Self) -> Option<bool>) -> bool {
        leaf(self).unwrap_or_else(|| self.inner().iter().any(|m| m.any_inside(leaf)))
    }
}

impl RuleEngine {
    /// For a flow whose destination address is a stand-in (a fake-ip address; its name is
    /// in `flow.host`): whether a rule that looks at the destination address comes at or
    /// before the rule that decides it now, so the name must be resolved and the flow
    /// decided again with the real address (mihomo's behaviour). Rules with `no-resolve`,
    /// logic entries with their own `no-resolve`, and rule sets without address entries do
    /// not count; a `SUB-RULE` counts by its condition, and, when the condition holds, by
    /// the rules of its list up to that list's verdict.
    pub fn needs_real_dst(&self, flow: &FlowMeta<'_>) -> bool {
        self.asks(Question::RealDst, flow)
    }

    fn asks(&self, q: Question, flow: &FlowMeta<'_>) -> bool {
        if self.mode != Mode::Rule || q.candidates(&self.lookers).is_empty() {
            return false;
        }
        let bound = self.decide(flow).rule.unwrap_or(self.rules.len());
        self.asks_in(q, &self.rules, &self.lookers, bound, flow, 0)
    }

    /// Whether a rule of `rules` numbered at most `bound` asks `q` for `flow`: the rule
    /// itself, or for a `SUB-RULE` whose condition holds, a rule of its list up to that
    /// list's verdict (nesting bounded like [`RuleEngine::decide`]'s).
    fn asks_in(
        &self,
        q: Question,
        rules: &[Rule],
        lookers: &Lookers,
        bound: usize,
        flow: &FlowMeta<'_>,
        depth: usize,
    ) -> bool {
        q.candidates(lookers)
            .iter()
            .take_while(|&&i| i <= bound)
            .any(|&i| match &rules[i].matcher {
                Matcher::SubRule { cond, list, .. } => {
                    q.asked_by(cond)
                        || (cond.matches(flow)
                            && self
                                .subs
                                .get(*list)
                                .filter(|sub| depth < 8 && !q.candidates(&sub.lookers).is_empty())
                                .is_some_and(|sub| {
                                    let bound = self
                                        .first_in(&sub.rules, &sub.index, flow, depth + 1)
                                        .map_or(sub.rules.len(), |(j, _, _)| j);
                                    self.asks_in(
                                        q,
                                        &sub.rules,
                                        &sub.lookers,
                                        bound,
                                        flow,
                                        depth + 1,
                                    )
                                }))
                }
                m => q.asked_by(m),
            })
    }
}

#[cfg(test)]
mod tests;
