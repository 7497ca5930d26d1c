//! `proxy-providers`: named lists of proxies that groups pull in with `use` (or
//! `include-all`), from a file, from the config itself (`inline`), or downloaded (`http`,
//! by the daemon, cached at `path`). The section is validated here; the content
//! (Clash YAML or share links, see `subscription`) is read by [`ProxyProvider::read`],
//! which applies the provider's `filter`, `exclude-filter`, `exclude-type` and `override`
//! the way mihomo does, and skips what tpgate cannot use with one warning per entry,
//! summarised when there are many.

use std::time::Duration;

use super::decode::{check, entries, unknown_key};
use super::filter::{NameFilter, Pattern};
use super::names::Outcome;
use super::proxies::proxy;
use super::subscription;
use super::yaml::{Node, Pos, Value};
use super::{value, Diags, HealthCheck, ProxyDef};

/// At most this many entry warnings are listed one by one; the rest are summarised.
const SHOWN_WARNINGS: usize = 5;
/// The default `size-limit`: 0 in mihomo means none; tpgate caps a body anyway.
pub const DEFAULT_SIZE_LIMIT: u64 = 16 << 20;

/// One provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProvider {
    pub name: String,
    pub source: ProxySource,
    /// Re-download period of an http provider; `None`: only at start.
    pub interval: Option<Duration>,
    /// `health-check` with `enable: true`.
    pub health: Option<HealthCheck>,
    /// The provider's own `filter`, `exclude-filter`, `exclude-type` (the latter compared
    /// with the `type` as written: `ss`, `vmess`).
    pub filter: NameFilter,
    pub overrides: Override,
    /// Largest body accepted from `url` (`size-limit`; 0 or absent: [`DEFAULT_SIZE_LIMIT`]).
    pub size_limit: u64,
    /// The proxies read when the config was loaded (a file, the inline payload, an http
    /// provider's cache); the daemon replaces them after each download.
    pub proxies: Vec<ProxyDef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxySource {
    /// `type: file`: `path`, relative to the config's directory.
    File { path: String },
    /// `type: http`: downloaded from `url` at start and every `interval`, over a marked
    /// DIRECT connection or through `proxy`, and cached at `path` (default `proxies/NAME.yaml`).
    Http {
        url: String,
        path: String,
        /// `header`: extra request headers, e.g. a `User-Agent` some subscriptions want.
        header: Vec<(String, String)>,
        /// `proxy`: the proxy or group (by name) the download goes through; `None`: a marked
        /// DIRECT connection (also when written `DIRECT`).
        proxy: Option<String>,
    },
    /// `type: inline`: the `payload` list in the config.
    Inline,
}

/// `override`: what mihomo changes on every proxy of a provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Override {
    pub udp: Option<bool>,
    pub skip_cert_verify: Option<bool>,
    pub additional_prefix: Option<String>,
    pub additional_suffix: Option<String>,
    /// `proxy-name`: `(pattern, target)` replacements, in order.
    pub proxy_name: Vec<(Pattern, String)>,
    /// `dialer-proxy`: every proxy of the provider is reached through this one.
    pub dialer_proxy: Option<String>,
}

/// The outcome of reading a provider's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Read {
    pub proxies: Vec<ProxyDef>,
    /// `LINE:COL: message` in the content, summarised when many.
    pub warnings: Vec<String>,
}

impl ProxyProvider {
    /// Reads a provider's content: the proxies tpgate can use, after the provider's filters
    /// and overrides. `Err` only when nothing in it can be read at all.
    pub fn read(&self, body: &[u8]) -> Result<Read, String> {
        let entries =
            subscription::entries(body).map_err(|e| format!("{}: {}", e.pos, e.message))?;
        Ok(self.decode(&entries.proxies, entries.skipped))
    }

    fn decode(&self, items: &[Node], skipped: Vec<(Pos, String)>) -> Read {
        let mut d = Diags::default();
        let mut notes: Vec<(Pos, String)> = skipped
            .into_iter()
            .map(|(p, m)| (p, format!("{m}; skipped")))
            .collect();
        let named: Vec<(&Node, String, String)> = items
            .iter()
            .filter_map(|n| Some((n, field_text(n, "name")?, field_text(n, "type")?)))
            .collect();
        let picked = self.filter.select(&named, |(_, name, _)| name.as_str());
        let mut out = Vec::new();
        for (i, (node, name, kind)) in picked.into_iter().enumerate() {
            if !self.filter.keeps(name, kind) {
                continue;
            }
            let node = self.overrides.apply(node, name);
            if let Outcome::Ready(p) = proxy(&node, format!("proxies[{i}]"), &mut d).outcome {
                out.push(p);
            }
        }
        // Only what drops a proxy is worth a line here; ignored fields are not.
        for w in d.errors.iter().chain(&d.warnings) {
            if d.errors.contains(w) || w.message.ends_with("skipped") {
                let pos = Pos {
                    line: w.line,
                    col: w.col,
                };
                let m = if d.errors.contains(w) {
                    format!("{}; skipped", w.message)
                } else {
                    w.message.clone()
                };
                notes.push((pos, m));
            }
        }
        notes.sort_by_key(|(p, _)| *p);
        let mut warnings: Vec<String> = notes
            .iter()
            .take(SHOWN_WARNINGS)
            .map(|(p, m)| format!("{p}: {m}"))
            .collect();
        if notes.len() > SHOWN_WARNINGS {
            let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
            for k in d.summary.skipped_types.iter() {
                kinds.insert(k.0.clone(), *k.1);
            }
            let by_type: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            warnings.push(format!(
                "and {} more entries skipped{}",
                notes.len() - SHOWN_WARNINGS,
                if by_type.is_empty() {
                    String::new()
                } else {
                    format!(" (skipped by type: {})", by_type.join(", "))
                }
            ));
        }
        Read {
            proxies: out,
            warnings,
        }
    }
}

fn field_text(node: &Node, key: &str) -> Option<String> {
    let Value::Map(m) = &node.value else {
        return None;
    };
    m.iter()
        .find(|(k, _)| k.value == Value::Str(key.into()))
        .and_then(|(_, v)| value::text(v).ok())
}

impl Override {
    fn apply(&self, node: &Node, name: &str) -> Node {
        let Value::Map(entries) = &node.value else {
            return node.clone();
        };
        let mut entries = entries.clone();
        let mut set = |key: &str, v: Value| {
            let k = Value::Str(key.into());
            match entries.iter_mut().find(|(kn, _)| kn.value == k) {
                Some((_, vn)) => vn.value = v,
                None => entries.push((
                    Node {
                        pos: node.pos,
                        value: k,
                    },
                    Node {
                        pos: node.pos,
                        value: v,
                    },
                )),
            }
        };
        if let Some(b) = self.udp {
            set("udp", Value::Bool(b));
        }
        if let Some(b) = self.skip_cert_verify {
            set("skip-cert-verify", Value::Bool(b));
        }
        if let Some(dialer) = &self.dialer_proxy {
            set("dialer-proxy", Value::Str(dialer.clone()));
        }
        let mut new = name.to_owned();
        if let Some(p) = &self.additional_prefix {
            new = format!("{p}{new}");
        }
        if let Some(s) = &self.additional_suffix {
            new.push_str(s);
        }
        for (pattern, target) in &self.proxy_name {
            new = pattern.replace_all(&new, target);
        }
        if new != name {
            set("name", Value::Str(new));
        }
        Node {
            pos: node.pos,
            value: Value::Map(entries),
        }
    }
}

const KEYS: &[&str] = &[
    "type",
    "url",
    "path",
    "interval",
    "proxy",
    "header",
    "size-limit",
    "health-check",
    "override",
    "filter",
    "exclude-filter",
    "exclude-type",
    "payload",
    "dialer-proxy",
];

/// The `proxy-providers` section, each provider's content read when `d` has file access
/// (`file` providers and the caches of `http` ones) or inline.
pub(super) fn proxy_providers(node: &Node, d: &mut Diags) -> Vec<ProxyProvider> {
    let Value::Map(_) = &node.value else {
        if !matches!(node.value, Value::Null) {
            let found = node.value.describe();
            d.error(
                node.pos,
                "proxy-providers",
                format!("expected a mapping of names, found {found}"),
            );
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries(node, "proxy-providers", d) {
        if let Some(p) = provider(e.key, e.value, d) {
            out.push(p);
        } else {
            d.broken_providers.push(e.key.to_owned());
        }
    }
    out
}

fn provider(name: &str, node: &Node, d: &mut Diags) -> Option<ProxyProvider> {
    let path = format!("proxy-providers.{name}");
    let Value::Map(_) = &node.value else {
        let found = node.value.describe();
        d.error(
            node.pos,
            &path,
            format!("expected a mapping, found {found}"),
        );
        return None;
    };
    let errors = d.errors.len();
    let fields = entries(node, &path, d);
    let field = |key: &str| fields.iter().find(|e| e.key == key).map(|e| e.value);
    let at = |key: &str| format!("{path}.{key}");
    for e in &fields {
        match e.key {
            "dialer-proxy" => d.warn(e.key_pos, &at(e.key), "not used by tpgate yet; ignored"),
            k if KEYS.contains(&k) => {}
            _ => unknown_key(d, e, &path, KEYS),
        }
    }
    let kind = match field("type") {
        Some(n) => check(
            d,
            n,
            &at("type"),
            value::keyword(n, &[("file", 0), ("http", 1), ("inline", 2)]),
        ),
        None => {
            d.error(node.pos, &path, "missing `type` (file, http or inline)");
            None
        }
    };
    let text = |d: &mut Diags, key: &str| {
        let n = field(key)?;
        check(d, n, &at(key), value::text(n))
    };
    let file = text(d, "path");
    let url = field("url").and_then(|n| {
        let u = value::text(n).and_then(|u| {
            if u.starts_with("http://") || u.starts_with("https://") {
                Ok(u)
            } else {
                Err(format!("`{u}` is not an http:// or https:// URL"))
            }
        });
        check(d, n, &at("url"), u)
    });
    // No floor: mihomo has none, and a subscription's owner decides how often it is asked.
    let interval = field("interval")
        .and_then(|n| check(d, n, &at("interval"), value::uint(n, 365 * 86_400)))
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    let via = text(d, "proxy").filter(|v| !v.eq_ignore_ascii_case("DIRECT"));
    let size_limit = field("size-limit")
        .and_then(|n| check(d, n, &at("size-limit"), value::uint(n, u64::MAX)))
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_SIZE_LIMIT);
    let filter = {
        let f = text(d, "filter");
        let x = text(d, "exclude-filter");
        let t = text(d, "exclude-type");
        match NameFilter::parse(f.as_deref(), x.as_deref(), t.as_deref()) {
            Ok(f) => f,
            Err(m) => {
                let n = field("filter").or(field("exclude-filter")).unwrap_or(node);
                d.error(n.pos, &path, m);
                NameFilter::default()
            }
        }
    };
    let header = field("header")
        .map(|n| headers(n, &at("header"), d))
        .unwrap_or_default();
    let overrides = field("override")
        .map(|n| overrides(n, &at("override"), d))
        .unwrap_or_default();
    let health = field("health-check").and_then(|n| health(n, &at("health-check"), d));
    let source = match kind? {
        0 => ProxySource::File {
            path: file.or_else(|| {
                d.error(node.pos, &path, "a file provider needs `path`");
                None
            })?,
        },
        1 => {
            let url = url.or_else(|| {
                if field("url").is_none() {
                    d.error(node.pos, &path, "an http provider needs `url`");
                }
                None
            })?;
            ProxySource::Http {
                url,
                path: file.unwrap_or_else(|| format!("proxies/{name}.yaml")),
                header,
                proxy: via,
            }
        }
        _ => ProxySource::Inline,
    };
    if d.errors.len() > errors {
        return None;
    }
    let mut p = ProxyProvider {
        name: name.to_owned(),
        source,
        interval,
        health,
        filter,
        overrides,
        size_limit,
        proxies: Vec::new(),
    };
    load_content(&mut p, node, field("payload"), &path, d);
    Some(p)
}

/// Reads what is available now: the inline payload, the file, the http cache.
fn load_content(
    p: &mut ProxyProvider,
    node: &Node,
    payload: Option<&Node>,
    path: &str,
    d: &mut Diags,
) {
    let read = match (&p.source, payload) {
        (ProxySource::Inline, Some(list)) => {
            let Some(items) = check(d, list, &format!("{path}.payload"), value::list(list)) else {
                return;
            };
            let r = p.decode(items, Vec::new());
            // Positions are the config's own here.
            for w in &r.warnings {
                d.warn(list.pos, &format!("{path}.payload"), w);
            }
            p.proxies = r.proxies;
            return;
        }
        (ProxySource::Inline, None) => {
            d.error(node.pos, path, "an inline provider needs `payload`");
            return;
        }
        (ProxySource::File { path: file }, _) | (ProxySource::Http { path: file, .. }, _) => {
            let Some(files) = d.files else {
                return;
            };
            match files.read(file) {
                Ok(Some(body)) => (file.clone(), body),
                Ok(None) if matches!(p.source, ProxySource::Http { .. }) => return,
                Ok(None) => {
                    d.error(node.pos, path, format!("`{file}` does not exist"));
                    return;
                }
                Err(e) => {
                    d.error(node.pos, path, format!("`{file}`: {e}"));
                    return;
                }
            }
        }
    };
    let (file, body) = read;
    let cache = matches!(p.source, ProxySource::Http { .. });
    match p.read(&body) {
        Ok(r) => {
            for w in &r.warnings {
                d.warn(node.pos, path, format!("{file}:{w}"));
            }
            if r.proxies.is_empty() {
                d.warn(
                    node.pos,
                    path,
                    format!("`{file}` has no proxy tpgate can use (after the filters)"),
                );
            }
            p.proxies = r.proxies;
        }
        Err(m) if cache => d.warn(
            node.pos,
            path,
            format!("the cache {file}:{m}; it will be downloaded again"),
        ),
        Err(m) => d.error(node.pos, path, format!("{file}:{m}")),
    }
}

fn headers(node: &Node, path: &str, d: &mut Diags) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !matches!(node.value, Value::Map(_)) {
        d.error(
            node.pos,
            path,
            "expected a mapping of header names to values",
        );
        return out;
    }
    for e in entries(node, path, d) {
        let values: Vec<&Node> = match &e.value.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![e.value],
        };
        for v in values {
            if let Some(t) = check(d, v, &format!("{path}.{}", e.key), value::text(v)) {
                out.push((e.key.to_owned(), t));
            }
        }
    }
    out
}

fn overrides(node: &Node, path: &str, d: &mut Diags) -> Override {
    let mut o = Override::default();
    if !matches!(node.value, Value::Map(_)) {
        d.error(node.pos, path, "expected a mapping");
        return o;
    }
    for e in entries(node, path, d) {
        let p = format!("{path}.{}", e.key);
        let n = e.value;
        match e.key {
            "udp" => o.udp = check(d, n, &p, value::boolean(n)),
            "skip-cert-verify" => o.skip_cert_verify = check(d, n, &p, value::boolean(n)),
            "additional-prefix" => o.additional_prefix = check(d, n, &p, value::text(n)),
            "additional-suffix" => o.additional_suffix = check(d, n, &p, value::text(n)),
            "proxy-name" => {
                let Some(list) = check(d, n, &p, value::list(n)) else {
                    continue;
                };
                for (i, item) in list.iter().enumerate() {
                    let ip = format!("{p}[{i}]");
                    let pattern = field_text(item, "pattern");
                    let target = field_text(item, "target").unwrap_or_default();
                    match pattern.map(|t| Pattern::new(&t)) {
                        Some(Ok(pat)) => o.proxy_name.push((pat, target)),
                        Some(Err(m)) => d.error(item.pos, &ip, m),
                        None => d.error(item.pos, &ip, "expected {pattern: REGEX, target: TEXT}"),
                    }
                }
            }
            "dialer-proxy" => {
                o.dialer_proxy = check(d, n, &p, value::text(n)).filter(|t| !t.trim().is_empty());
            }
            "tfo" | "mptcp" | "udp-over-tcp" | "up" | "down" | "interface-name"
            | "routing-mark" | "ip-version" => {
                d.warn(e.key_pos, &p, "not used by tpgate; ignored");
            }
            _ => unknown_key(
                d,
                &e,
                path,
                &[
                    "udp",
                    "skip-cert-verify",
                    "additional-prefix",
                    "additional-suffix",
                    "proxy-name",
                    "tfo",
                    "mptcp",
                    "udp-over-tcp",
                    "up",
                    "down",
                    "dialer-proxy",
                    "interface-name",
                    "routing-mark",
                    "ip-version",
                ],
            ),
        }
    }
    o
}

fn health(node: &Node, path: &str, d: &mut Diags) -> Option<HealthCheck> {
    if !matches!(node.value, Value::Map(_)) {
        d.error(node.pos, path, "expected a mapping");
        return None;
    }
    let mut hc = HealthCheck {
        expected_status: None,
        url: super::DEFAULT_HEALTH_URL.to_owned(),
        interval: Duration::from_secs(300),
        lazy: true,
        timeout: Duration::from_millis(5000),
    };
    let mut enable = false;
    for e in entries(node, path, d) {
        let p = format!("{path}.{}", e.key);
        let n = e.value;
        match e.key {
            "enable" => enable = check(d, n, &p, value::boolean(n)).unwrap_or(false),
            "url" => {
                if let Some(u) = check(d, n, &p, super::groups::url(n)) {
                    hc.url = u;
                }
            }
            "interval" => {
                if let Some(s) = check(d, n, &p, value::uint(n, u32::MAX.into())).filter(|s| *s > 0)
                {
                    hc.interval = Duration::from_secs(s);
                }
            }
            "timeout" => {
                if let Some(ms) =
                    check(d, n, &p, value::uint(n, u32::MAX.into())).filter(|s| *s > 0)
                {
                    hc.timeout = Duration::from_millis(ms);
                }
            }
            "lazy" => hc.lazy = check(d, n, &p, value::boolean(n)).unwrap_or(true),
            "expected-status" => {
                let s = value::text(n).and_then(|t| super::filter::expected_status(&t));
                hc.expected_status = check(d, n, &p, s).flatten();
            }
            _ => unknown_key(
                d,
                &e,
                path,
                &[
                    "enable",
                    "url",
                    "interval",
                    "timeout",
                    "lazy",
                    "expected-status",
                ],
            ),
        }
    }
    enable.then_some(hc)
}
