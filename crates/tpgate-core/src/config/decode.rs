//! The YAML tree -> the validated [`Config`], one function per section. The walk never stops
//! at a problem: every error and warning is reported, and the caller keeps the config only
//! when no error was.

use super::intercept::intercept;
use super::yaml::{Node, Pos, Value};
use super::{keys, value, Config, Diags, LogLevel, Mode};
use crate::rules::{parse_rule, Rule, RuleError};

/// One key of a mapping, with where the key itself was written.
pub(super) struct Entry<'a> {
    pub(super) key: &'a str,
    pub(super) key_pos: Pos,
    pub(super) value: &'a Node,
}

/// Whether a value that a cross-field check needs was written, and where.
#[derive(Clone, Copy)]
pub(super) enum Seen {
    Default,
    At(Pos),
    /// Written but rejected: cross-field checks on it would only repeat the error.
    Invalid,
}

pub(super) fn decode(root: Option<&Node>, d: &mut Diags) -> Config {
    let mut config = Config::default();
    let Some(root) = root else {
        return config;
    };
    match &root.value {
        Value::Null | Value::Map(_) => {}
        other => {
            let found = other.describe();
            d.error(
                root.pos,
                "",
                format!("a config is a mapping of keys, found {found}"),
            );
            return config;
        }
    }
    let entries = entries(root, "", d);
    let mut routing_mark = Seen::Default;
    let mut fwmark = Seen::Default;
    for e in &entries {
        let (key, node) = (e.key, e.value);
        match key {
            "tproxy-port" => {
                if let Some(port) = check(d, node, key, nonzero(value::uint(node, u16::MAX.into())))
                {
                    config.tproxy_port = u16::try_from(port).unwrap_or(u16::MAX);
                }
            }
            "routing-mark" => {
                match check(d, node, key, nonzero(value::uint(node, u32::MAX.into()))) {
                    Some(mark) => {
                        config.routing_mark = u32::try_from(mark).unwrap_or(u32::MAX);
                        routing_mark = Seen::At(node.pos);
                    }
                    None => routing_mark = Seen::Invalid,
                }
            }
            "ipv6" => {
                if let Some(b) = check(d, node, key, value::boolean(node)) {
                    config.ipv6 = b;
                }
            }
            "mode" => {
                let words = [
                    ("rule", Mode::Rule),
                    ("global", Mode::Global),
                    ("direct", Mode::Direct),
                ];
                if let Some(mode) = check(d, node, key, value::keyword(node, &words)) {
                    config.mode = mode;
                }
            }
            "log-level" => {
                let words = [
                    ("silent", LogLevel::Silent),
                    ("error", LogLevel::Error),
                    ("warning", LogLevel::Warning),
                    ("info", LogLevel::Info),
                    ("debug", LogLevel::Debug),
                ];
                if let Some(level) = check(d, node, key, value::keyword(node, &words)) {
                    config.log_level = level;
                }
            }
            "intercept" => config.intercept = intercept(node, d, &mut fwmark),
            // Decoded below, once every proxy name is known.
            "rules" => {}
            _ if keys::MIHOMO_IGNORED.contains(&key) => {
                d.warn(e.key_pos, key, "not used by tpgate yet; ignored");
            }
            _ => unknown_key(d, e, ""),
        }
    }
    if let Some(e) = entries.iter().find(|e| e.key == "rules") {
        config.rules = rules(e.value, &proxy_names(&entries), d);
    }
    if config.intercept.fwmark.matches(config.routing_mark) {
        let (mark, fwmark_text) = (config.routing_mark, config.intercept.fwmark);
        let at = match (routing_mark, fwmark) {
            (Seen::Invalid, _) | (_, Seen::Invalid) => None,
            (Seen::At(pos), _) => Some((
                pos,
                "routing-mark",
                format!("{mark:#x} matches intercept.fwmark {fwmark_text}"),
            )),
            (Seen::Default, Seen::At(pos)) => Some((
                pos,
                "intercept.fwmark",
                format!("{fwmark_text} matches the default routing-mark {mark:#x}"),
            )),
            (Seen::Default, Seen::Default) => None,
        };
        if let Some((pos, path, what)) = at {
            let message = format!(
                "{what}: the proxy's own outbound packets (marked with routing-mark) would be \
                 intercepted again and loop; choose a routing-mark the fwmark does not match"
            );
            d.error(pos, path, message);
        }
    }
    config
}

/// A mapping's entries with string keys, in order; reports other keys and duplicates.
pub(super) fn entries<'a>(node: &'a Node, section: &str, d: &mut Diags) -> Vec<Entry<'a>> {
    let Value::Map(map) = &node.value else {
        return Vec::new();
    };
    let mut out: Vec<Entry<'a>> = Vec::with_capacity(map.len());
    for (k, v) in map {
        let Value::Str(key) = &k.value else {
            let found = k.value.describe();
            d.error(k.pos, section, format!("keys are strings, found {found}"));
            continue;
        };
        if let Some(first) = out.iter().find(|e| e.key == key) {
            let message = format!("duplicate key (first at {})", first.key_pos);
            d.error(k.pos, &join(section, key), message);
            continue;
        }
        out.push(Entry {
            key,
            key_pos: k.pos,
            value: v,
        });
    }
    out
}

fn join(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    }
}

pub(super) fn unknown_key(d: &mut Diags, e: &Entry<'_>, section: &str) {
    let key = e.key;
    let hint = if section.is_empty() && keys::INTERCEPT.contains(&key) {
        format!("; `{key}` belongs in the `intercept` section")
    } else if !section.is_empty()
        && (keys::TOP.contains(&key) || keys::MIHOMO_IGNORED.contains(&key))
    {
        format!("; `{key}` is a top-level key")
    } else {
        let candidates: Vec<&str> = if section.is_empty() {
            keys::TOP
                .iter()
                .chain(keys::MIHOMO_IGNORED)
                .copied()
                .collect()
        } else {
            keys::INTERCEPT.to_vec()
        };
        keys::suggest(key, &candidates)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default()
    };
    d.error(
        e.key_pos,
        &join(section, key),
        format!("unknown key `{key}`{hint}"),
    );
}

/// Reports a conversion's error at `node`.
pub(super) fn check<T>(
    d: &mut Diags,
    node: &Node,
    path: &str,
    result: Result<T, String>,
) -> Option<T> {
    result
        .map_err(|message| d.error(node.pos, path, message))
        .ok()
}

fn nonzero(value: Result<u64, String>) -> Result<u64, String> {
    match value? {
        0 => Err("must be nonzero".to_owned()),
        v => Ok(v),
    }
}

/// The converted items of a list, each error reported at its item as `path[i]`.
pub(super) fn items<T>(
    node: &Node,
    path: &str,
    d: &mut Diags,
    convert: fn(&Node) -> Result<T, String>,
) -> Vec<T> {
    let Some(list) = check(d, node, path, value::list(node)) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        if let Some(v) = check(d, item, &format!("{path}[{i}]"), convert(item)) {
            out.push(v);
        }
    }
    out
}

/// Names defined under `proxies` and `proxy-groups`, which rules may target.
fn proxy_names<'a>(entries: &[Entry<'a>]) -> Vec<&'a str> {
    let mut names = Vec::new();
    for e in entries
        .iter()
        .filter(|e| matches!(e.key, "proxies" | "proxy-groups"))
    {
        let Value::Seq(items) = &e.value.value else {
            continue;
        };
        for item in items {
            let Value::Map(fields) = &item.value else {
                continue;
            };
            for (k, v) in fields {
                if let (Value::Str(k), Value::Str(name)) = (&k.value, &v.value) {
                    if k == "name" {
                        names.push(name.as_str());
                    }
                }
            }
        }
    }
    names
}

fn rules(node: &Node, proxies: &[&str], d: &mut Diags) -> Vec<Rule> {
    let Some(list) = check(d, node, "rules", value::list(node)) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let path = format!("rules[{i}]");
        let Value::Str(text) = &item.value else {
            let found = item.value.describe();
            let message = format!("a rule is a string like `DST-PORT,25,REJECT`, found {found}");
            d.error(item.pos, &path, message);
            continue;
        };
        match parse_rule(text) {
            Ok(rule) => out.push(rule),
            Err(RuleError::Unsupported { kind }) => {
                d.warn(
                    item.pos,
                    &path,
                    format!("{kind} rules are not supported yet; rule skipped"),
                );
            }
            Err(RuleError::UnknownTarget { target }) if proxies.contains(&target.as_str()) => {
                let message = format!(
                    "target `{target}` is a proxy or proxy group; proxy targets arrive with \
                     upstream support; rule skipped"
                );
                d.warn(item.pos, &path, message);
            }
            Err(RuleError::UnknownTarget { target }) => {
                let names = if proxies.is_empty() {
                    ""
                } else {
                    " or a name from proxies/proxy-groups"
                };
                let message = format!(
                    "unknown target `{target}` (expected DIRECT, REJECT, REJECT-DROP{names})"
                );
                d.error(item.pos, &path, message);
            }
            Err(e @ RuleError::Malformed(_)) => d.error(item.pos, &path, e),
        }
    }
    out
}
