//! `rule-providers`: named rule sets that `RULE-SET` rules refer to. The loader validates
//! each provider and parses `inline` payloads; `file` and `http` contents are read by the
//! daemon (and `tpgate check`), which fills each provider's [`RuleSetHandle`].

use std::time::Duration;

use super::decode::{check, entries};
use super::yaml::{Node, Value};
use super::{value, Diags};
use crate::rules::{Behavior, Format, RuleSet, RuleSetHandle};

/// One provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProvider {
    pub name: String,
    pub source: ProviderSource,
    pub behavior: Behavior,
    pub format: Format,
    /// Refresh period of an `http` provider (`interval`, seconds); `None`: never.
    pub interval: Option<Duration>,
    /// Shared with every rule naming this provider.
    pub handle: RuleSetHandle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderSource {
    /// `type: file`: read from `path` (relative to the config file's directory).
    File { path: String },
    /// `type: http`: downloaded from `url`, cached at `path` when given.
    Http { url: String, path: Option<String> },
    /// `type: inline`: the `payload` list in the config itself (already loaded).
    Inline,
}

pub(super) fn rule_providers(node: &Node, d: &mut Diags) -> Vec<RuleProvider> {
    let Value::Map(_) = &node.value else {
        if !matches!(node.value, Value::Null) {
            let found = node.value.describe();
            d.error(
                node.pos,
                "rule-providers",
                format!("expected a mapping of names, found {found}"),
            );
        }
        return Vec::new();
    };
    entries(node, "rule-providers", d)
        .into_iter()
        .filter_map(|e| provider(e.key, e.value, d))
        .collect()
}

const KEYS: &[&str] = &[
    "type",
    "behavior",
    "format",
    "path",
    "url",
    "interval",
    "payload",
    "proxy",
    "size-limit",
    "header",
];

fn provider(name: &str, node: &Node, d: &mut Diags) -> Option<RuleProvider> {
    let p = provider_fields(name, node, d);
    if p.is_none() {
        // Rules naming it are dropped without a second error.
        d.broken_providers.push(name.to_owned());
    }
    p
}

fn provider_fields(name: &str, node: &Node, d: &mut Diags) -> Option<RuleProvider> {
    let path = format!("rule-providers.{name}");
    let Value::Map(_) = &node.value else {
        let found = node.value.describe();
        d.error(
            node.pos,
            &path,
            format!("expected a mapping, found {found}"),
        );
        return None;
    };
    let (mut kind, mut behavior, mut format) = (None, None, Format::Yaml);
    let (mut file, mut url, mut interval, mut payload) = (None, None, None, None);
    let mut ok = true;
    for e in entries(node, &path, d) {
        let p = format!("{path}.{}", e.key);
        let n = e.value;
        match e.key {
            "type" => {
                let words = [("file", "file"), ("http", "http"), ("inline", "inline")];
                kind = check(d, n, &p, value::keyword(n, &words));
                ok &= kind.is_some();
            }
            "behavior" => {
                let words = [
                    ("domain", Behavior::Domain),
                    ("ipcidr", Behavior::IpCidr),
                    ("classical", Behavior::Classical),
                ];
                behavior = check(d, n, &p, value::keyword(n, &words));
                ok &= behavior.is_some();
            }
            "format" => match value::string(n) {
                Ok("yaml") => format = Format::Yaml,
                Ok("text") => format = Format::Text,
                Ok("mrs") => format = Format::Mrs,
                Ok(other) => {
                    d.error(
                        n.pos,
                        &p,
                        format!("unknown format `{other}`; expected yaml, text or mrs"),
                    );
                    ok = false;
                }
                Err(m) => {
                    d.error(n.pos, &p, m);
                    ok = false;
                }
            },
            "path" => file = check(d, n, &p, value::text(n)),
            "url" => {
                url = check(
                    d,
                    n,
                    &p,
                    value::text(n).and_then(|u| {
                        if u.starts_with("http://") || u.starts_with("https://") {
                            Ok(u)
                        } else {
                            Err(format!("`{u}` is not an http:// or https:// URL"))
                        }
                    }),
                );
                ok &= url.is_some();
            }
            "interval" => {
                interval = check(d, n, &p, value::uint(n, 365 * 86_400))
                    .map(|s| (s > 0).then(|| Duration::from_secs(s.max(60))));
            }
            "payload" => payload = Some(n),
            "proxy" | "size-limit" | "header" => {
                d.warn(e.key_pos, &p, "not used by tpgate yet; ignored");
            }
            _ => super::decode::unknown_key(d, &e, &path, KEYS),
        }
    }
    let Some(kind) = kind else {
        if ok {
            d.error(node.pos, &path, "missing `type` (file, http or inline)");
        }
        return None;
    };
    let Some(behavior) = behavior else {
        if ok {
            d.error(
                node.pos,
                &path,
                "missing `behavior` (domain, ipcidr or classical)",
            );
        }
        return None;
    };
    if format == Format::Mrs && (behavior == Behavior::Classical || kind == "inline") {
        let at = node.pos;
        d.error(
            at,
            &path,
            "the mrs format holds domain or ipcidr sets in a file or download; not \
             classical, not inline",
        );
        return None;
    }
    let handle = RuleSetHandle::new(name);
    let source = match kind {
        "file" => ProviderSource::File {
            path: file.or_else(|| {
                d.error(node.pos, &path, "a file provider needs `path`");
                None
            })?,
        },
        "http" => ProviderSource::Http {
            url: url.or_else(|| {
                if ok {
                    d.error(node.pos, &path, "an http provider needs `url`");
                }
                None
            })?,
            path: file,
        },
        _ => {
            let Some(list) = payload else {
                d.error(node.pos, &path, "an inline provider needs `payload`");
                return None;
            };
            let items = check(d, list, &format!("{path}.payload"), value::list(list))?;
            let mut text = String::new();
            for (i, item) in items.iter().enumerate() {
                if let Some(s) = check(d, item, &format!("{path}.payload[{i}]"), value::text(item))
                {
                    text.push_str(&s);
                }
                text.push('\n');
            }
            match RuleSet::parse(behavior, Format::Text, &text) {
                Ok((set, warnings)) => {
                    for w in warnings {
                        let at = items.get(w.line - 1).map_or(list.pos, |n| n.pos);
                        d.warn(at, &format!("{path}.payload[{}]", w.line - 1), w.message);
                    }
                    handle.replace(set);
                }
                Err(errors) => {
                    for e in errors {
                        let at = items.get(e.line - 1).map_or(list.pos, |n| n.pos);
                        d.error(at, &format!("{path}.payload[{}]", e.line - 1), e.message);
                    }
                    return None;
                }
            }
            ProviderSource::Inline
        }
    };
    ok.then(|| RuleProvider {
        name: name.to_owned(),
        source,
        behavior,
        format,
        interval: interval.flatten(),
        handle,
    })
}
