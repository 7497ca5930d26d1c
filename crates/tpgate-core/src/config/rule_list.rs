//! The `rules` list: each string parsed by [`parse_rule_with`], its target resolved against
//! the declared proxy and group names. Rule types tpgate lacks, and targets that were
//! skipped, drop the rule with a warning; unknown targets are errors.

use super::decode::check;
use super::names::{self, Known, Names};
use super::yaml::{Node, Value};
use super::{value, Diags, RuleProvider};
use crate::rules::{parse_rule_with, Rule, RuleError, Verdict};

/// `section`: `rules`, or `sub-rules.NAME` for a sub-rules list (for error paths).
pub(super) fn rules(
    section: &str,
    node: &Node,
    names: &Names,
    providers: &[RuleProvider],
    sub_lists: &[&str],
    d: &mut Diags,
) -> Vec<Rule> {
    let Some(list) = check(d, node, section, value::list(node)) else {
        return Vec::new();
    };
    let lookup = |name: &str| match names.get(name) {
        Some(Known::Target(id)) => Some(Verdict::Proxy(id)),
        _ => None,
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let path = format!("{section}[{i}]");
        let Value::Str(text) = &item.value else {
            let found = item.value.describe();
            let message = format!("a rule is a string like `DST-PORT,25,REJECT`, found {found}");
            d.error(item.pos, &path, message);
            continue;
        };
        match parse_rule_with(text, lookup) {
            Ok(mut rule) => {
                for option in std::mem::take(&mut rule.ignored) {
                    let message =
                        format!("option `{option}` is not read (mihomo ignores it too); ignored");
                    d.warn(item.pos, &path, message);
                }
                let mut bound = true;
                for h in rule.matcher.rule_sets_mut() {
                    match providers.iter().find(|p| p.name == h.name()) {
                        Some(p) => *h = p.handle.clone(),
                        None if d.broken_providers.iter().any(|b| b == h.name()) => {
                            bound = false;
                        }
                        None => {
                            let message = format!(
                                "unknown rule provider `{}` (declare it under rule-providers)",
                                h.name()
                            );
                            d.error(item.pos, &path, message);
                            bound = false;
                        }
                    }
                }
                for (name, list) in rule.matcher.sub_rules_mut() {
                    match sub_lists.iter().position(|n| *n == name) {
                        Some(i) => *list = i,
                        None => {
                            let message = format!(
                                "unknown sub-rules list `{name}` (declare it under sub-rules)"
                            );
                            d.error(item.pos, &path, message);
                            bound = false;
                        }
                    }
                }
                if bound {
                    out.push(rule);
                }
            }
            Err(RuleError::Unsupported { kind }) => {
                let message = format!("{kind} rules are not supported yet; rule skipped");
                d.warn(item.pos, &path, message);
            }
            Err(RuleError::UnknownTarget { target }) => {
                match (names::builtin(&target), names.get(&target)) {
                    (Some(builtin), None) => {
                        let message = format!("{builtin} is not supported yet; rule skipped");
                        d.warn(item.pos, &path, message);
                    }
                    (_, Some(Known::Skipped)) => {
                        let message = format!(
                            "target `{target}` was skipped (see its warning); rule skipped, so \
                             its traffic falls through to the rules below"
                        );
                        d.warn(item.pos, &path, message);
                    }
                    // Its error is already reported.
                    (_, Some(Known::Invalid | Known::Target(_))) => {}
                    (None, None) => {
                        let hint = names.hint(&target);
                        let message = format!(
                            "unknown target `{target}` (expected DIRECT, REJECT, REJECT-DROP or \
                             a name from proxies/proxy-groups){hint}"
                        );
                        d.error(item.pos, &path, message);
                    }
                }
            }
            Err(RuleError::Skipped(why)) => d.warn(item.pos, &path, why),
            Err(e @ RuleError::Malformed(_)) => d.error(item.pos, &path, e),
        }
    }
    out
}
