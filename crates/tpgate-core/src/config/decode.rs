//! The YAML tree -> the validated [`Config`], one function per section. The walk never stops
//! at a problem: every error and warning is reported, and the caller keeps the config only
//! when no error was.

use super::controller::settings;
use super::groups::{groups, resolve, Context};
use super::intercept::intercept;
use super::names::{Known, Names, Outcome, GLOBAL};
use super::providers::rule_providers;
use super::proxies::proxies;
use super::proxy_providers::proxy_providers;
use super::rule_list::rules;
use super::sniffer::sniffer;
use super::yaml::{Node, Pos, Value};
use super::{keys, value, Config, Diags, LogLevel, Mode};

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
            "sniffer" => config.sniffer = sniffer(node, d),
            "limits" => config.limits = super::limits::limits(node, d),
            "geoip-path" => config.geoip_path = check(d, node, key, value::text(node)),
            "geosite-path" => config.geosite_path = check(d, node, key, value::text(node)),
            "asn-path" => config.asn_path = check(d, node, key, value::text(node)),
            "geox-url" => geox_url(node, d, &mut config.geox),
            "geodata-mode" => {
                if let Some(b) = check(d, node, key, value::boolean(node)) {
                    config.geox.geodata_mode = b;
                }
            }
            "geo-auto-update" => {
                if let Some(b) = check(d, node, key, value::boolean(node)) {
                    config.geox.auto_update = b;
                }
            }
            "geo-update-interval" => {
                if let Some(h) = check(d, node, key, nonzero(value::uint(node, 24 * 365))) {
                    config.geox.interval = std::time::Duration::from_secs(h * 3600);
                }
            }
            "dns" => super::dns::dns(node, d, &mut config.dns),
            "hosts" => super::dns::hosts(node, d, &mut config.dns),
            "use-hosts" => super::dns::use_hosts(node, d, &mut config.dns),
            // Decoded below: groups and rules need every proxy and group name.
            "proxies" | "proxy-groups" | "rules" | "rule-providers" | "sub-rules"
            | "proxy-providers" => {}
            _ if super::controller::KEYS.contains(&key) => {}
            _ if keys::MIHOMO_IGNORED.contains(&key) => {
                d.warn(e.key_pos, key, "not used by tpgate yet; ignored");
            }
            _ if key.starts_with("cfw-") => {
                d.warn(e.key_pos, key, "a Clash for Windows setting; ignored");
            }
            // Keys that exist to hold YAML anchors (`rule-anchor:`, `pr: &pr {...}`,
            // `x-common:`) are how mihomo configs share settings: nothing to report.
            _ if key.starts_with("x-") || only_anchors(node, d) => {}
            _ => unknown_key(d, e, "", &top_candidates()),
        }
    }
    tun_dns(&entries, &mut config, d);
    if config.intercept.dns_hijack {
        let at = entries
            .iter()
            .find(|e| e.key == "intercept")
            .and_then(|e| match &e.value.value {
                Value::Map(m) => m.iter().find_map(|(k, v)| {
                    (k.value == Value::Str("dns-hijack".into())).then_some(v.pos)
                }),
                _ => None,
            });
        let listen = config.dns.listen.filter(|_| config.dns.enable);
        let problem = match listen {
            None => Some("dns-hijack needs the built-in DNS server: `dns: {enable: true, listen: 0.0.0.0:1053}`".to_owned()),
            Some(a) if !a.ip().is_unspecified() => Some(format!(
                "dns-hijack redirects queries to the DNS server on each interface's own address, \
                 so `dns.listen` must be 0.0.0.0:{0} or [::]:{0}, not {a}",
                a.port()
            )),
            Some(_) => None,
        };
        if let (Some(m), Some(pos)) = (problem, at) {
            d.error(pos, "intercept.dns-hijack", m);
        }
    }
    settings(&entries, &mut config, d);
    upstreams(&entries, &mut config, d);
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

/// A fake-ip or redir-host config written for mihomo's TUN has `dns.enable` and no
/// `listen` (TUN hijacks port 53 itself): tpgate picks `[::]:1053` (`0.0.0.0:1053`
/// without IPv6) and, unless `intercept.dns-hijack` is written, redirects every port-53
/// query from the LAN interfaces and this machine to it, and says so.
fn tun_dns(entries: &[Entry<'_>], config: &mut Config, d: &mut Diags) {
    use super::EnhancedMode;
    let dns = &mut config.dns;
    if !dns.enable || dns.listen.is_some() || dns.enhanced_mode == EnhancedMode::Normal {
        return;
    }
    let Some(node) = entries.iter().find(|e| e.key == "dns") else {
        return;
    };
    let listen: std::net::SocketAddr = if config.ipv6 {
        (std::net::Ipv6Addr::UNSPECIFIED, 1053).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 1053).into()
    };
    dns.listen = Some(listen);
    dns.listen_chosen = true;
    let written = entries.iter().any(|e| {
        e.key == "intercept"
            && matches!(&e.value.value, Value::Map(m)
                if m.iter().any(|(k, _)| k.value == Value::Str("dns-hijack".into())))
    });
    let hijack = if written {
        if config.intercept.dns_hijack {
            "port-53 queries are redirected to it (intercept.dns-hijack)"
        } else {
            "intercept.dns-hijack is false, so only clients that ask it directly use it"
        }
    } else {
        config.intercept.dns_hijack = true;
        "every port-53 query from the LAN interfaces and this machine is redirected to it \
         (intercept.dns-hijack: false turns that off)"
    };
    let mode = match dns.enhanced_mode {
        EnhancedMode::FakeIp => "fake-ip",
        _ => "redir-host",
    };
    d.warn(
        node.key_pos,
        "dns",
        format!(
            "no `listen` ({mode} configs written for a TUN have none): the DNS server \
             listens on {listen} and {hijack}"
        ),
    );
}

/// A mapping's entries with string keys, in order; reports other keys and duplicates.
/// `geox-url`: the URLs of the files tpgate reads: `mmdb` (country database), `geoip`
/// (geoip.dat, with `geodata-mode`), `geosite`, `asn`.
fn geox_url(node: &Node, d: &mut Diags, out: &mut super::Geox) {
    for e in entries(node, "geox-url", d) {
        let path = format!("geox-url.{}", e.key);
        match e.key {
            "mmdb" => out.mmdb = check(d, e.value, &path, value::text(e.value)),
            "geosite" => out.geosite = check(d, e.value, &path, value::text(e.value)),
            "geoip" => out.geoip = check(d, e.value, &path, value::text(e.value)),
            "asn" => out.asn = check(d, e.value, &path, value::text(e.value)),
            _ => d.warn(e.key_pos, &path, "unknown key; ignored"),
        }
    }
}

/// Whether a section's node can hold keys: a mapping, or empty (`null`). Anything else is
/// an error at `section`.
pub(super) fn is_section(node: &Node, section: &str, d: &mut Diags) -> bool {
    match &node.value {
        Value::Null | Value::Map(_) => true,
        other => {
            let found = other.describe();
            d.error(
                node.pos,
                section,
                format!("expected a mapping, found {found}"),
            );
            false
        }
    }
}

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

fn top_candidates() -> Vec<&'static str> {
    keys::TOP
        .iter()
        .chain(keys::MIHOMO_IGNORED)
        .copied()
        .collect()
}

/// Whether a value is there only for its anchors: it carries one, or it is a mapping or
/// list whose every entry does.
fn only_anchors(node: &Node, d: &Diags) -> bool {
    if d.anchored.contains(&node.pos) {
        return true;
    }
    match &node.value {
        Value::Map(entries) => {
            !entries.is_empty() && entries.iter().all(|(_, v)| d.anchored.contains(&v.pos))
        }
        Value::Seq(items) => !items.is_empty() && items.iter().all(|v| d.anchored.contains(&v.pos)),
        _ => false,
    }
}

/// A key tpgate does not know in `section` (empty: the top level): a warning with a "did
/// you mean" among `candidates`, or a hint when it belongs in another section; an error
/// under `--strict`. mihomo ignores unknown keys, so a config it runs keeps loading.
pub(super) fn unknown_key(d: &mut Diags, e: &Entry<'_>, section: &str, candidates: &[&str]) {
    let key = e.key;
    let hint = if section.is_empty() && keys::INTERCEPT.contains(&key) {
        format!("; `{key}` belongs in the `intercept` section")
    } else if !section.is_empty()
        && (keys::TOP.contains(&key) || keys::MIHOMO_IGNORED.contains(&key))
    {
        format!("; `{key}` is a top-level key")
    } else {
        keys::suggest(key, candidates)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default()
    };
    d.unknown(
        e.key_pos,
        &join(section, key),
        format!("unknown key `{key}`{hint}; ignored"),
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

/// `proxies`, `proxy-groups` and the `rules` that target them.
fn upstreams(entries: &[Entry<'_>], config: &mut Config, d: &mut Diags) {
    let field = |key: &str| entries.iter().find(|e| e.key == key).map(|e| e.value);
    let declared_proxies = field("proxies").map(|n| proxies(n, d)).unwrap_or_default();
    let declared_groups = field("proxy-groups")
        .map(|n| groups(n, d))
        .unwrap_or_default();
    config.proxy_providers = field("proxy-providers")
        .map(|n| proxy_providers(n, d))
        .unwrap_or_default();
    let names = Names::new(&declared_proxies, &declared_groups, d);
    let mut dialers = Vec::new();
    config.proxies = declared_proxies
        .into_iter()
        .filter_map(|p| match p.outcome {
            Outcome::Ready(r) => {
                dialers.push((p.path, p.dialer));
                Some(r)
            }
            Outcome::Skipped | Outcome::Invalid => None,
        })
        .collect();
    super::dialers::resolve(&mut config.proxies, &dialers, &names, d);
    let cx = Context {
        names: &names,
        proxies: &config.proxies,
        providers: &config.proxy_providers,
    };
    config.groups = resolve(&declared_groups, &cx, d);
    super::dialers::report_cycles(&config.proxies, &config.groups, &dialers, d);
    empty_groups(&declared_groups, config, d);
    config.global_target = match names.get(GLOBAL) {
        Some(Known::Target(id)) if id.0 as usize >= config.proxies.len() => Some(id),
        _ => None,
    };
    config.rule_providers = field("rule-providers")
        .map(|n| rule_providers(n, d))
        .unwrap_or_default();
    bind_dns_sets(entries, config, d);
    let sub_node = field("sub-rules");
    let sub_entries = sub_node.map(|n| match &n.value {
        Value::Map(_) => self::entries(n, "sub-rules", d),
        other => {
            let found = other.describe();
            d.error(
                n.pos,
                "sub-rules",
                format!("expected a mapping of list names, found {found}"),
            );
            Vec::new()
        }
    });
    let sub_entries = sub_entries.unwrap_or_default();
    let sub_names: Vec<&str> = sub_entries.iter().map(|e| e.key).collect();
    for e in &sub_entries {
        let section = format!("sub-rules.{}", e.key);
        let list = rules(
            &section,
            e.value,
            &names,
            &config.rule_providers,
            &sub_names,
            d,
        );
        config.sub_rules.push((e.key.to_owned(), list));
    }
    if let (Some(cycle), Some(n)) = (sub_rule_cycle(&config.sub_rules), sub_node) {
        d.error(
            n.pos,
            "sub-rules",
            format!("sub-rules lists refer to each other in a loop: {cycle}"),
        );
    }
    if let Some(n) = field("rules") {
        config.rules = rules("rules", n, &names, &config.rule_providers, &sub_names, d);
    }
}

/// `rule-set:NAME` entries of the DNS settings share the rule provider's set.
fn bind_dns_sets(entries: &[Entry<'_>], config: &mut Config, d: &mut Diags) {
    let at = entries.iter().find(|e| e.key == "dns").map(|e| e.key_pos);
    let providers = &config.rule_providers;
    let mut unknown = Vec::new();
    for h in config.dns.sets_mut(false) {
        match providers.iter().find(|p| p.name == h.name()) {
            Some(p) => *h = p.handle.clone(),
            None => unknown.push(h.name().to_owned()),
        }
    }
    unknown.sort();
    unknown.dedup();
    if let (Some(pos), false) = (at, unknown.is_empty()) {
        let names = unknown.join(", ");
        d.warn(
            pos,
            "dns",
            format!("rule-set entries name no rule provider ({names}); they match nothing"),
        );
    }
}

/// Warns about each group that `use`s providers or includes all proxies and still has no
/// member tpgate can use now (an http provider not downloaded yet does not count).
fn empty_groups(
    declared: &[super::names::Declared<super::groups::RawGroup<'_>>],
    config: &Config,
    d: &mut Diags,
) {
    let provided = config.provided();
    for g in &config.groups {
        if g.uses.is_empty() && !g.members.is_empty() {
            continue;
        }
        let waiting = g.uses.iter().any(|&k| {
            config.proxy_providers.get(k).is_some_and(|p| {
                p.proxies.is_empty() && matches!(p.source, super::ProxySource::Http { .. })
            })
        });
        if waiting {
            continue;
        }
        let slots = config.expand_group(g, &provided);
        if slots == [super::Slot::Member(super::Member::Reject)] {
            if let Some((pos, path)) = declared.iter().find_map(|r| {
                r.name
                    .as_ref()
                    .filter(|(n, _)| *n == g.name)
                    .map(|(_, p)| (*p, format!("{}.name", r.path)))
            }) {
                d.warn(
                    pos,
                    &path,
                    format!(
                        "group `{}` has no member tpgate can use (its providers and filters \
                         left none); it rejects all traffic",
                        g.name
                    ),
                );
            }
        }
    }
}

/// A loop among sub-rules lists (`a -> b -> a`), if any.
fn sub_rule_cycle(lists: &[(String, Vec<crate::rules::Rule>)]) -> Option<String> {
    fn refs(rules: &[crate::rules::Rule]) -> Vec<usize> {
        rules
            .iter()
            .filter_map(|r| match &r.matcher {
                crate::rules::Matcher::SubRule { list, .. } => Some(*list),
                _ => None,
            })
            .collect()
    }
    fn visit(
        i: usize,
        lists: &[(String, Vec<crate::rules::Rule>)],
        path: &mut Vec<usize>,
        done: &mut Vec<bool>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|&p| p == i) {
            let names: Vec<&str> = path[at..]
                .iter()
                .chain([&i])
                .map(|&p| lists[p].0.as_str())
                .collect();
            return Some(names.join(" -> "));
        }
        if done[i] {
            return None;
        }
        path.push(i);
        for next in refs(&lists[i].1) {
            if next < lists.len() {
                if let Some(c) = visit(next, lists, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        done[i] = true;
        None
    }
    let mut done = vec![false; lists.len()];
    (0..lists.len()).find_map(|i| visit(i, lists, &mut Vec::new(), &mut done))
}
