//! What a flow passes on its way to its verdict, for the daemon's two "is it worth waiting
//! for" questions: [`RuleEngine::needs_real_dst`] (resolve a fake-ip flow's name before the
//! address rules?) and [`RuleEngine::name_matters`] (sniff the name at all?). Both look only
//! at the rules precomputed as able to ask (see [`Lookers`]), so they cost one decision and
//! a short scan; neither does I/O.

use super::{Decision, FlowMeta, Matcher, Mode, Rule, RuleEngine};

/// For one rule list: the rules that may want something a flow's first decision lacks, in
/// order. `SUB-RULE`s are in both: their list may ask.
#[derive(Debug, Clone, Default)]
pub(super) struct Lookers {
    /// Rules that look at the destination address without `no-resolve`.
    real_dst: Vec<usize>,
    /// Rules that look at the name.
    name: Vec<usize>,
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
            name: pick(|r| r.matcher.looks_at_name()),
        }
    }
}

/// What [`RuleEngine::evaluate`] is asked besides the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Only the decision.
    Nothing,
    /// Also: could the flow's name change the decision? (see [`RuleEngine::name_matters`])
    NameMatters,
    /// Also: does a rule want the real address of this stand-in destination? (see
    /// [`RuleEngine::needs_real_dst`])
    RealDst,
}

/// The outcome of one pass of [`RuleEngine::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    pub decision: Decision,
    /// Asked with [`Ask::NameMatters`]: a name-looking rule comes at or before the decision.
    pub name_matters: bool,
    /// Asked with [`Ask::RealDst`]: an address-looking rule comes at or before it.
    pub needs_real_dst: bool,
}

#[derive(Debug, Clone, Copy)]
enum Question {
    /// Would a rule look at the real destination address?
    RealDst,
    /// Would a rule look at the name?
    Name,
}

impl Question {
    fn candidates(self, lookers: &Lookers) -> &[usize] {
        match self {
            Self::RealDst => &lookers.real_dst,
            Self::Name => &lookers.name,
        }
    }

    /// Whether `m` asks, given what the rule sets hold now (a refresh may change it).
    fn asked_by(self, m: &Matcher) -> bool {
        match self {
            Self::RealDst => m.any_inside(&|m| match m {
                Matcher::IpCidr(_) | Matcher::GeoIp(_) | Matcher::IpAsn(_) => Some(true),
                Matcher::RuleSet(h) => Some(h.current().has_cidrs()),
                Matcher::NoResolve(_) => Some(false),
                _ => None,
            }),
            Self::Name => m.any_inside(&|m| match m {
                Matcher::RuleSet(h) | Matcher::GeoSite(h) => Some(h.current().has_domains()),
                _ if m.is_name_leaf() => Some(true),
                _ => None,
            }),
        }
    }
}

impl Matcher {
    /// Whether this matcher (or one inside it) may look at the name: `DOMAIN*`,
    /// `DOMAIN-WILDCARD`, `DOMAIN-REGEX`, `GEOSITE`, rule sets (their domain entries),
    /// logic rules and `SUB-RULE` conditions containing one.
    pub fn looks_at_name(&self) -> bool {
        self.any_inside(&|m| {
            (m.is_name_leaf() || matches!(m, Self::RuleSet(_) | Self::GeoSite(_))).then_some(true)
        })
    }

    fn is_name_leaf(&self) -> bool {
        matches!(
            self,
            Self::Domain(_)
                | Self::DomainSuffix(_)
                | Self::DomainKeyword(_)
                | Self::DomainWildcard(_)
                | Self::DomainRegex(_)
        )
    }

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

    /// For a flow decided without a name (`flow.host` is ignored, taken as `None`): whether
    /// its name could change the verdict, i.e. whether a rule that can look at the name
    /// comes at or before the rule that decides the flow now: `DOMAIN`, `DOMAIN-SUFFIX`,
    /// `DOMAIN-KEYWORD`, `DOMAIN-WILDCARD`, `DOMAIN-REGEX`, `GEOSITE`, a `RULE-SET` whose
    /// provider holds domain entries now, a logic rule containing one, a `SUB-RULE` whose
    /// condition contains one or whose condition holds and whose list has one up to that
    /// list's verdict. Always false in `global` and `direct` mode. `flow.process` and
    /// `flow.geo` should be what the flow will be decided with. When false, sniffing the
    /// flow (and waiting for its first bytes) cannot change where it goes.
    pub fn name_matters(&self, flow: &FlowMeta<'_>) -> bool {
        self.asks(
            Question::Name,
            &FlowMeta {
                host: None,
                ..*flow
            },
        )
    }

    fn asks(&self, q: Question, flow: &FlowMeta<'_>) -> bool {
        let decision = self.decide(flow);
        self.asks_after(q, flow, &decision)
    }

    /// [`Self::asks`] for a flow already decided as `decision`: no second decision.
    fn asks_after(&self, q: Question, flow: &FlowMeta<'_>, decision: &Decision) -> bool {
        if self.mode() != Mode::Rule || q.candidates(&self.lookers).is_empty() {
            return false;
        }
        let bound = decision.rule.unwrap_or(self.rules.len());
        self.asks_in(q, &self.rules, &self.lookers, bound, flow, 0)
    }

    /// One pass over the rules: the flow's [`Decision`] and, as `ask` says, whether its name
    /// could change it ([`Self::name_matters`], with `flow.host` taken as `None`) or whether
    /// its destination is a stand-in whose real address a rule wants
    /// ([`Self::needs_real_dst`]). The look-ahead scans only the precomputed candidate
    /// rules up to the deciding one; the flow is decided once.
    pub fn evaluate(&self, flow: &FlowMeta<'_>, ask: Ask) -> Evaluation {
        let flow = match ask {
            Ask::NameMatters => FlowMeta {
                host: None,
                ..*flow
            },
            Ask::Nothing | Ask::RealDst => *flow,
        };
        let decision = self.decide(&flow);
        let (name_matters, needs_real_dst) = match ask {
            Ask::Nothing => (false, false),
            Ask::NameMatters => (self.asks_after(Question::Name, &flow, &decision), false),
            Ask::RealDst => (false, self.asks_after(Question::RealDst, &flow, &decision)),
        };
        Evaluation {
            decision,
            name_matters,
            needs_real_dst,
        }
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
