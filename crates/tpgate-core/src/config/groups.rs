//! `proxy-groups:` -> [`GroupDef`]s, in two passes: `groups` reads each group's own fields,
//! then, once every proxy and group name is known, `resolve` turns member names into
//! [`Member`]s (a group may name one declared later) and rejects cycles.

use std::time::Duration;

use super::cycles::report_cycles;
use super::decode::{check, entries, Entry};
use super::filter::NameFilter;
use super::names::{self, Declared, Known, Names, Outcome};
use super::yaml::{Node, Pos, Value};
use super::{
    keys, value, Diags, GroupDef, GroupKind, HealthCheck, LbStrategy, Member, ProxyDef,
    ProxyProvider, TargetId,
};

/// The URL url-test, fallback and load-balance groups check when none is written.
pub const DEFAULT_HEALTH_URL: &str = "https://www.gstatic.com/generate_204";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
const DEFAULT_TOLERANCE: Duration = Duration::from_millis(150);
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);

/// A group whose own fields are read and whose members are still names.
pub(super) struct RawGroup<'a> {
    name: String,
    name_pos: Pos,
    kind: GroupKind,
    members: &'a [Node],
    health: Option<HealthCheck>,
    /// `use`: provider names as written.
    uses: &'a [Node],
    include_all_proxies: bool,
    include_all_providers: bool,
    filter: NameFilter,
    hidden: bool,
    icon: Option<String>,
    disable_udp: bool,
}

pub(super) fn groups<'a>(node: &'a Node, d: &mut Diags) -> Vec<Declared<RawGroup<'a>>> {
    let Some(list) = check(d, node, "proxy-groups", value::list(node)) else {
        return Vec::new();
    };
    list.iter()
        .enumerate()
        .map(|(i, item)| group(item, format!("proxy-groups[{i}]"), d))
        .collect()
}

fn group<'a>(node: &'a Node, path: String, d: &mut Diags) -> Declared<RawGroup<'a>> {
    let mut out = Declared {
        path,
        name: None,
        outcome: Outcome::Invalid,
        dialer: None,
    };
    let path = out.path.clone();
    if !matches!(node.value, Value::Map(_)) {
        let found = node.value.describe();
        let message =
            format!("a proxy group is a mapping with name, type and proxies, found {found}");
        d.error(node.pos, &path, message);
        return out;
    }
    let errors = d.errors.len();
    let fields = entries(node, &path, d);
    let field = |key: &str| fields.iter().find(|e| e.key == key).map(|e| e.value);
    let at = |key: &str| format!("{path}.{key}");
    for key in ["name", "type"] {
        if field(key).is_none() {
            d.error(node.pos, &path, format!("missing `{key}`"));
        }
    }
    out.name = field("name")
        .and_then(|n| check(d, n, &at("name"), names::name(n, true)).map(|name| (name, n.pos)));
    let who = out
        .name
        .as_ref()
        .map_or_else(|| "group".to_owned(), |(n, _)| format!("group `{n}`"));
    let Some(type_node) = field("type") else {
        return out;
    };
    let Some(kind) = check(d, type_node, &at("type"), value::string(type_node)) else {
        return out;
    };
    let kind = kind.trim().to_ascii_lowercase();
    if !keys::GROUP_TYPES.contains(&kind.as_str()) {
        let why = match keys::suggest(&kind, keys::GROUP_TYPES) {
            Some(s) if kind != "smart" => format!("unknown type `{kind}` (did you mean `{s}`?)"),
            _ => format!("type {kind} is not supported by tpgate"),
        };
        d.warn(type_node.pos, &at("type"), format!("{why}; {who} skipped"));
        if d.errors.len() == errors {
            out.outcome = Outcome::Skipped;
        }
        return out;
    }
    for e in &fields {
        let key = e.key;
        if keys::GROUP_FIELDS.contains(&key) {
            continue;
        }
        if keys::GROUP_IGNORED.contains(&key) {
            d.warn(e.key_pos, &at(key), "not used by tpgate; ignored");
        } else {
            let hint = keys::suggest(key, keys::GROUP_FIELDS)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            d.unknown(e.key_pos, &at(key), format!("unknown field{hint}; ignored"));
        }
    }
    let flag = |d: &mut Diags, key: &str| {
        field(key)
            .and_then(|n| check(d, n, &at(key), value::boolean(n)))
            .unwrap_or(false)
    };
    let include_all = flag(d, "include-all");
    let include_all_proxies = include_all || flag(d, "include-all-proxies");
    let include_all_providers = include_all || flag(d, "include-all-providers");
    let hidden = flag(d, "hidden");
    let disable_udp = flag(d, "disable-udp");
    let text = |d: &mut Diags, key: &str| {
        let n = field(key)?;
        check(d, n, &at(key), value::text(n))
    };
    let icon = text(d, "icon");
    let filter = {
        let (f, x, t) = (
            text(d, "filter"),
            text(d, "exclude-filter"),
            text(d, "exclude-type"),
        );
        match NameFilter::parse(f.as_deref(), x.as_deref(), t.as_deref()) {
            Ok(f) => f,
            Err(m) => {
                let at_key = if f
                    .as_deref()
                    .is_some_and(|f| NameFilter::parse(Some(f), None, None).is_err())
                {
                    "filter"
                } else {
                    "exclude-filter"
                };
                let n = field(at_key).unwrap_or(node);
                d.error(n.pos, &at(at_key), m);
                NameFilter::default()
            }
        }
    };
    let list_of = |d: &mut Diags, key: &str| -> &'a [Node] {
        match field(key) {
            Some(n) => check(d, n, &at(key), value::list(n)).unwrap_or_default(),
            None => &[],
        }
    };
    let members = list_of(d, "proxies");
    let uses = list_of(d, "use");
    if members.is_empty() && uses.is_empty() && !include_all_proxies && !include_all_providers {
        let where_ = field("proxies").map_or(node.pos, |n| n.pos);
        let message = format!("a {kind} group needs at least one member in `proxies` or `use`");
        d.error(where_, &at("proxies"), message);
    }
    let only = |d: &mut Diags, key: &str, types: &str| {
        if let Some(e) = fields.iter().find(|e| e.key == key) {
            d.warn(
                e.key_pos,
                &at(key),
                format!("only used by {types} groups; ignored"),
            );
        }
    };
    let millis = |d: &mut Diags, key: &str| {
        let n = field(key)?;
        check(d, n, &at(key), value::uint(n, u32::MAX.into())).map(Duration::from_millis)
    };
    let kind = match kind.as_str() {
        "select" => GroupKind::Select,
        "url-test" => GroupKind::UrlTest {
            tolerance: millis(d, "tolerance").unwrap_or(DEFAULT_TOLERANCE),
        },
        "fallback" => GroupKind::Fallback,
        "load-balance" => GroupKind::LoadBalance(strategy(field("strategy"), &at("strategy"), d)),
        _ => GroupKind::Relay,
    };
    if !matches!(kind, GroupKind::UrlTest { .. }) {
        only(d, "tolerance", "url-test");
    }
    if !matches!(kind, GroupKind::LoadBalance(_)) {
        only(d, "strategy", "load-balance");
    }

    let health = health(&fields, kind, &path, &who, d);
    if d.errors.len() > errors {
        return out;
    }
    let Some((name, name_pos)) = out.name.clone() else {
        return out;
    };
    out.outcome = Outcome::Ready(RawGroup {
        name,
        name_pos,
        kind,
        members,
        health,
        uses,
        include_all_proxies,
        include_all_providers,
        filter,
        hidden,
        icon,
        disable_udp,
    });
    out
}

/// The health check: always for url-test, fallback and load-balance; for select and relay
/// only when a `url` is written (their other check fields are then ignored with a warning).
fn health(
    fields: &[Entry<'_>],
    kind: GroupKind,
    path: &str,
    who: &str,
    d: &mut Diags,
) -> Option<HealthCheck> {
    let field = |key: &str| fields.iter().find(|e| e.key == key).map(|e| e.value);
    let at = |key: &str| format!("{path}.{key}");
    let url = field("url").and_then(|n| check(d, n, &at("url"), url(n)));
    let interval = field("interval").and_then(|n| {
        check(d, n, &at("interval"), value::uint(n, u32::MAX.into())).map(Duration::from_secs)
    });
    let lazy = field("lazy").and_then(|n| check(d, n, &at("lazy"), value::boolean(n)));
    let timeout = field("timeout").and_then(|n| {
        let ms = value::uint(n, u32::MAX.into()).and_then(|ms| match ms {
            0 => Err("a timeout of 0 ms would fail every check".to_owned()),
            ms => Ok(Duration::from_millis(ms)),
        });
        check(d, n, &at("timeout"), ms)
    });
    let expected_status = field("expected-status").and_then(|n| {
        let s = value::text(n).and_then(|t| super::filter::expected_status(&t));
        check(d, n, &at("expected-status"), s).flatten()
    });
    let checked = !matches!(kind, GroupKind::Select | GroupKind::Relay) || url.is_some();
    let health = checked.then(|| HealthCheck {
        expected_status: expected_status.clone(),
        url: url.unwrap_or_else(|| DEFAULT_HEALTH_URL.to_owned()),
        interval: interval.unwrap_or(DEFAULT_INTERVAL),
        lazy: lazy.unwrap_or(true),
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
    });
    if !checked {
        for key in ["interval", "lazy", "timeout"] {
            if let Some(e) = fields.iter().find(|e| e.key == key) {
                let message = format!("a {who} without `url` is not health-checked; ignored");
                d.warn(e.key_pos, &at(key), message);
            }
        }
    }
    health
}

fn strategy(node: Option<&Node>, path: &str, d: &mut Diags) -> LbStrategy {
    let Some(node) = node else {
        return LbStrategy::ConsistentHashing;
    };
    let words = [
        ("consistent-hashing", Some(LbStrategy::ConsistentHashing)),
        ("round-robin", Some(LbStrategy::RoundRobin)),
        ("sticky-sessions", None),
    ];
    match check(d, node, path, value::keyword(node, &words)) {
        Some(Some(s)) => s,
        Some(None) => {
            let message = "sticky-sessions is not supported yet; consistent-hashing is used";
            d.warn(node.pos, path, message);
            LbStrategy::ConsistentHashing
        }
        None => LbStrategy::ConsistentHashing,
    }
}

pub(super) fn url(node: &Node) -> Result<String, String> {
    let url = value::string(node)?.trim();
    let rest = ["http://", "https://"].iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|s| s.eq_ignore_ascii_case(scheme))
            .map(|_| &url[scheme.len()..])
    });
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(url.to_owned()),
        Some(_) => Err(format!("`{url}` has no host")),
        None => Err(format!(
            "expected an http:// or https:// URL, found `{url}`"
        )),
    }
}

/// What group members are resolved against: the names, the ready proxies (for
/// `include-all-proxies` and `exclude-type`) and the proxy providers.
pub(super) struct Context<'c> {
    pub(super) names: &'c Names,
    pub(super) proxies: &'c [ProxyDef],
    pub(super) providers: &'c [ProxyProvider],
}

/// The ready groups with their members resolved, in order (group `j` is `TargetId(n + j)`
/// for `n` proxies). Reports unknown members and cycles.
pub(super) fn resolve(
    raw: &[Declared<RawGroup<'_>>],
    cx: &Context<'_>,
    d: &mut Diags,
) -> Vec<GroupDef> {
    let (names, proxies) = (cx.names, cx.proxies.len());
    let ready: Vec<(&str, &RawGroup<'_>)> = raw
        .iter()
        .filter_map(|g| g.ready().map(|r| (g.path.as_str(), r)))
        .collect();
    let kinds: Vec<GroupKind> = ready.iter().map(|(_, g)| g.kind).collect();
    let groups: Vec<GroupDef> = ready
        .iter()
        .map(|(path, g)| {
            let uses = uses(g, path, cx, d);
            let mut members = members(g, path, names, !uses.is_empty(), d);
            if g.include_all_proxies {
                include_all(&mut members, g, cx);
            }
            exclude(&mut members, &g.filter, cx, &kinds);
            GroupDef {
                name: g.name.clone(),
                kind: g.kind,
                members,
                uses,
                filter: g.filter.clone(),
                health: g.health.clone(),
                hidden: g.hidden,
                icon: g.icon.clone(),
                disable_udp: g.disable_udp,
            }
        })
        .collect();
    let at: Vec<(Pos, String)> = ready
        .iter()
        .map(|(path, g)| (g.name_pos, format!("{path}.name")))
        .collect();
    report_cycles(&groups, proxies, &at, d);
    groups
}

/// `use` (or every provider, sorted by name, for `include-all-providers`) as indexes.
fn uses(g: &RawGroup<'_>, path: &str, cx: &Context<'_>, d: &mut Diags) -> Vec<usize> {
    if g.include_all_providers {
        let mut all: Vec<usize> = (0..cx.providers.len()).collect();
        all.sort_by(|&a, &b| cx.providers[a].name.cmp(&cx.providers[b].name));
        return all;
    }
    let mut out = Vec::new();
    for (i, node) in g.uses.iter().enumerate() {
        let path = format!("{path}.use[{i}]");
        let Some(name) = check(d, node, &path, value::text(node)) else {
            continue;
        };
        match cx.providers.iter().position(|p| p.name == name) {
            Some(k) if !out.contains(&k) => out.push(k),
            Some(_) => d.warn(
                node.pos,
                &path,
                format!("`{name}` is listed twice; ignored"),
            ),
            None if d.broken_providers.contains(&name) => {}
            None => {
                let candidates: Vec<&str> = cx.providers.iter().map(|p| p.name.as_str()).collect();
                let hint = keys::suggest(&name, &candidates)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                let also = if cx.names.get(&name).is_some() {
                    " (it is a proxy or group: list it under `proxies`)"
                } else {
                    ""
                };
                d.error(
                    node.pos,
                    &path,
                    format!("unknown proxy provider `{name}`{also}{hint}"),
                );
            }
        }
    }
    out
}

/// `include-all-proxies`: every proxy of `proxies:` tpgate uses, sorted by name, through
/// `filter` when the group has one (mihomo's order: each regex in turn).
fn include_all(members: &mut Vec<Member>, g: &RawGroup<'_>, cx: &Context<'_>) {
    let mut sorted: Vec<(usize, &str)> = cx
        .proxies
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.name.as_str()))
        .collect();
    sorted.sort_by(|a, b| a.1.cmp(b.1));
    for (i, _) in g.filter.select(&sorted, |(_, n)| n) {
        let m = Member::Target(TargetId(u32::try_from(*i).unwrap_or(u32::MAX)));
        if !members.contains(&m) {
            members.push(m);
        }
    }
}

/// `exclude-filter` and `exclude-type` over the written members, as mihomo applies them
/// to every proxy of a group (types as mihomo's adapters name them).
fn exclude(members: &mut Vec<Member>, f: &NameFilter, cx: &Context<'_>, kinds: &[GroupKind]) {
    if f.exclude.is_none() && f.exclude_types.is_empty() {
        return;
    }
    let n = cx.proxies.len();
    members.retain(|m| {
        let (name, kind) = match m {
            Member::Direct => ("DIRECT".to_owned(), "Direct"),
            Member::Reject => ("REJECT".to_owned(), "Reject"),
            Member::Target(id) => {
                let i = id.0 as usize;
                match cx.proxies.get(i) {
                    Some(p) => (p.name.clone(), p.kind.adapter_type()),
                    None => {
                        let name = cx.names.name_of(*id).unwrap_or_default();
                        let kind = kinds.get(i - n).map_or("", |k| k.adapter_type());
                        (name, kind)
                    }
                }
            }
        };
        f.keeps(&name, kind)
    });
}

fn members(
    g: &RawGroup<'_>,
    path: &str,
    names: &Names,
    has_providers: bool,
    d: &mut Diags,
) -> Vec<Member> {
    let relay = g.kind == GroupKind::Relay;
    let errors = d.errors.len();
    let mut out = Vec::with_capacity(g.members.len());
    let mut dropped = false;
    for (i, node) in g.members.iter().enumerate() {
        let path = format!("{path}.proxies[{i}]");
        let Some(name) = check(d, node, &path, value::text(node)) else {
            continue;
        };
        // A declared name first (case-sensitive: a proxy may be called `Direct`), then the
        // built-ins in any case.
        let member = match (names.get(&name), names::builtin(&name)) {
            (Some(Known::Target(id)), _) => Member::Target(id),
            (Some(Known::Skipped), _) => {
                dropped = true;
                continue;
            }
            (Some(Known::Invalid), _) => continue,
            (None, Some("DIRECT")) => Member::Direct,
            (None, Some("REJECT" | "REJECT-DROP" | "COMPATIBLE")) => Member::Reject,
            (None, Some(other)) => {
                let message = format!("{other} cannot be a group member; dropped");
                d.warn(node.pos, &path, message);
                continue;
            }
            (None, None) => {
                let hint = names.hint(&name);
                let message = format!("unknown proxy or group `{name}`{hint}");
                d.error(node.pos, &path, message);
                continue;
            }
        };
        if relay && matches!(member, Member::Direct | Member::Reject) {
            let message = format!("`{name}` cannot be a hop of a relay, which chains proxies");
            d.error(node.pos, &path, message);
            continue;
        }
        if !relay && out.contains(&member) {
            d.warn(
                node.pos,
                &path,
                format!("`{name}` is listed twice; ignored"),
            );
            continue;
        }
        out.push(member);
    }
    let name_path = format!("{path}.name");
    if relay && dropped && d.errors.len() == errors {
        let message = format!(
            "relay `{}` lost a hop that tpgate skipped, so the chain cannot be built; the \
             group rejects all traffic",
            g.name
        );
        d.warn(g.name_pos, &name_path, message);
        return vec![Member::Reject];
    }
    if out.is_empty() && (has_providers || g.include_all_proxies) {
        // Filled from providers or by `include-all-proxies`; emptiness is judged after.
        return out;
    }
    if out.is_empty() {
        if d.errors.len() == errors {
            let why = "every member was skipped";
            let message = format!(
                "group `{}` has no member tpgate can use ({why}); it rejects all traffic",
                g.name
            );
            d.warn(g.name_pos, &name_path, message);
        }
        out.push(Member::Reject);
    }
    out
}
