//! `network` and its options (`ws-opts`, `grpc-opts`, `h2-opts`) of vmess, vless and trojan
//! proxies, with mihomo's keys and defaults. A network tpgate does not carry (`http`,
//! `quic`, `xhttp`, or `h2` for trojan, which mihomo does not offer either) skips the
//! proxy with one warning, so a node is never dialed over the wrong transport; options
//! written for another network than the chosen one are warned about.

use super::decode::{check, entries, is_section, unknown_key};
use super::proxies::Fields;
use super::yaml::{Node, Value};
use super::{value, Diags, EarlyData, GrpcOpts, H2Opts, HttpOpts, ProxyNetwork, WsOpts};

/// Keys of `ws-opts`.
const WS_OPTS: &[&str] = &[
    "path",
    "headers",
    "max-early-data",
    "early-data-header-name",
    "v2ray-http-upgrade",
    "v2ray-http-upgrade-fast-open",
];

/// Keys of `h2-opts`.
const H2_OPTS: &[&str] = &["host", "path"];

/// mihomo's host when `h2-opts.host` is empty.
const DEFAULT_H2_HOST: &str = "www.example.com";

/// Keys of `http-opts`.
const HTTP_OPTS: &[&str] = &["method", "path", "headers"];

/// Keys of `grpc-opts`.
const GRPC_OPTS: &[&str] = &["grpc-service-name"];

/// mihomo's service name when `grpc-service-name` is empty.
const DEFAULT_SERVICE: &str = "GunService";

/// Each network's options key.
const OPTS: &[(&str, &str)] = &[
    ("ws-opts", "ws"),
    ("grpc-opts", "grpc"),
    ("h2-opts", "h2"),
    ("http-opts", "http"),
];

/// The proxy's `network`; `None` (with `skip` set and one warning) when tpgate cannot carry
/// it, or when its options are invalid (an error).
pub(super) fn network(
    f: &Fields<'_>,
    kind: &str,
    who: &str,
    skip: &mut bool,
    d: &mut Diags,
) -> Option<ProxyNetwork> {
    let name = f
        .get(d, "network", value::string)
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let opts_of = match name.as_str() {
        "httpupgrade" => "ws",
        n => n,
    };
    for (key, net) in OPTS {
        if let Some(e) = f.entries.iter().find(|e| e.key == *key) {
            if *net != opts_of && !matches!(e.value.value, Value::Null) {
                let message = format!("only used with `network: {net}`; ignored");
                d.warn(e.key_pos, &f.path(key), message);
            }
        }
    }
    match name.as_str() {
        "" | "tcp" => Some(ProxyNetwork::Tcp),
        "ws" | "httpupgrade" => {
            let mut ws = ws_opts(f, kind, d)?;
            ws.http_upgrade |= name == "httpupgrade";
            Some(ProxyNetwork::Ws(ws))
        }
        "grpc" => Some(ProxyNetwork::Grpc(grpc_opts(f, d)?)),
        "h2" if kind != "trojan" => Some(ProxyNetwork::H2(h2_opts(f, d)?)),
        "http" if kind != "trojan" => Some(ProxyNetwork::Http(http_opts(f, d)?)),
        other => {
            if !*skip {
                let e = f.entries.iter().find(|e| e.key == "network")?;
                let message = format!(
                    "network {other} is not supported by tpgate for {kind} (supported: {}); \
                     {who} skipped",
                    if kind == "trojan" {
                        "tcp, ws, grpc"
                    } else {
                        "tcp, ws, grpc, h2, http"
                    }
                );
                d.warn(e.key_pos, &f.path("network"), message);
            }
            *skip = true;
            None
        }
    }
}

fn ws_opts(f: &Fields<'_>, kind: &str, d: &mut Diags) -> Option<WsOpts> {
    let mut ws = WsOpts {
        path: "/".to_owned(),
        ..WsOpts::default()
    };
    let Some(node) = f.node("ws-opts") else {
        return Some(ws);
    };
    let path = f.path("ws-opts");
    if !is_section(node, &path, d) {
        return None;
    }
    let errors = d.errors.len();
    let mut max_early = 0;
    let mut header = None;
    for e in entries(node, &path, d) {
        let at = format!("{path}.{}", e.key);
        match e.key {
            "path" => {
                if let Some(p) = check(d, e.value, &at, value::text(e.value)) {
                    ws.path = p;
                }
            }
            "headers" => ws.headers = headers(e.value, &at, d),
            "max-early-data" | "early-data-header-name" if kind == "trojan" => d.warn(
                e.key_pos,
                &at,
                "mihomo does not send early data for trojan; ignored",
            ),
            "max-early-data" => {
                max_early =
                    check(d, e.value, &at, value::uint(e.value, u32::MAX.into())).unwrap_or(0);
            }
            "early-data-header-name" => {
                header =
                    check(d, e.value, &at, value::text(e.value)).filter(|h| !h.trim().is_empty());
            }
            "v2ray-http-upgrade" => {
                ws.http_upgrade = check(d, e.value, &at, value::boolean(e.value)).unwrap_or(false);
            }
            "v2ray-http-upgrade-fast-open" => {
                ws.fast_open = check(d, e.value, &at, value::boolean(e.value)).unwrap_or(false);
            }
            _ => unknown_key(d, &e, &path, WS_OPTS),
        }
    }
    if max_early > 0 {
        ws.early_data = Some(EarlyData {
            max: usize::try_from(max_early).unwrap_or(usize::MAX),
            header,
        });
    }
    if let Some(max) = take_ed(&mut ws.path) {
        ws.early_data = Some(EarlyData {
            max,
            header: Some("Sec-WebSocket-Protocol".to_owned()),
        });
    }
    if !ws.path.starts_with('/') {
        ws.path.insert(0, '/');
    }
    if let Some(bad) = ws
        .path
        .bytes()
        .find(|b| matches!(b, b' ' | b'\r' | b'\n' | 0))
    {
        let message = format!("a path cannot hold byte {bad:#04x}");
        d.error(node.pos, &format!("{path}.path"), message);
    }
    if ws.fast_open && !ws.http_upgrade {
        let message = "only used with `v2ray-http-upgrade: true`; ignored";
        d.warn(
            node.pos,
            &format!("{path}.v2ray-http-upgrade-fast-open"),
            message,
        );
        ws.fast_open = false;
    }
    (d.errors.len() == errors).then_some(ws)
}

/// `?ed=N` in a WebSocket path (Xray's share links): removed from the path; N is the early
/// data limit.
fn take_ed(path: &mut String) -> Option<usize> {
    let (p, query) = path.split_once('?')?;
    let mut max = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("ed=").map(str::parse::<usize>) {
            Some(Ok(n)) if max.is_none() => {
                max = Some(n);
                false
            }
            _ => true,
        })
        .collect();
    let max = max?;
    *path = if kept.is_empty() {
        p.to_owned()
    } else {
        format!("{p}?{}", kept.join("&"))
    };
    (max > 0).then_some(max)
}

/// `headers`: a mapping of names to text values.
pub(super) fn headers(node: &Node, path: &str, d: &mut Diags) -> Vec<(String, String)> {
    if !is_section(node, path, d) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for e in entries(node, path, d) {
        let at = format!("{path}.{}", e.key);
        let name_ok = !e.key.is_empty() && e.key.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !name_ok {
            d.error(e.key_pos, &at, "not a valid HTTP header name");
            continue;
        }
        match value::text(e.value) {
            Ok(v) if v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) => {
                d.error(e.value.pos, &at, "a header value cannot hold CR, LF or NUL");
            }
            Ok(v) => out.push((e.key.to_owned(), v)),
            Err(m) => d.error(e.value.pos, &at, m),
        }
    }
    out
}

/// `http-opts`: `method`, `path` (a list, or one path), `headers` (each a list of values,
/// or one value).
fn http_opts(f: &Fields<'_>, d: &mut Diags) -> Option<HttpOpts> {
    let mut http = HttpOpts {
        method: "GET".to_owned(),
        paths: vec!["/".to_owned()],
        headers: Vec::new(),
    };
    let Some(node) = f.node("http-opts") else {
        return Some(http);
    };
    let path = f.path("http-opts");
    if !is_section(node, &path, d) {
        return None;
    }
    let errors = d.errors.len();
    let list = |n: &Node| match &n.value {
        Value::Seq(items) => items.iter().map(value::text).collect::<Result<Vec<_>, _>>(),
        _ => value::text(n).map(|t| vec![t]),
    };
    for e in entries(node, &path, d) {
        let at = format!("{path}.{}", e.key);
        match e.key {
            "method" => {
                let m = check(d, e.value, &at, value::text(e.value)).unwrap_or_default();
                if !m.is_empty() {
                    if m.bytes().all(|b| b.is_ascii_alphabetic()) {
                        http.method = m.to_ascii_uppercase();
                    } else {
                        d.error(e.value.pos, &at, format!("`{m}` is not an HTTP method"));
                    }
                }
            }
            "path" => {
                let paths: Vec<String> = check(d, e.value, &at, list(e.value))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        if p.starts_with('/') {
                            p
                        } else {
                            format!("/{p}")
                        }
                    })
                    .collect();
                if paths.iter().any(|p| {
                    p.bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                }) {
                    d.error(
                        e.value.pos,
                        &at,
                        "a path cannot hold spaces or control characters",
                    );
                } else if !paths.is_empty() {
                    http.paths = paths;
                }
            }
            "headers" => {
                if !is_section(e.value, &at, d) {
                    continue;
                }
                for h in entries(e.value, &at, d) {
                    let hat = format!("{at}.{}", h.key);
                    let name_ok = !h.key.is_empty()
                        && h.key.bytes().all(|b| b.is_ascii_graphic() && b != b':');
                    if !name_ok {
                        d.error(h.key_pos, &hat, "not a valid HTTP header name");
                        continue;
                    }
                    let Some(values) = check(d, h.value, &hat, list(h.value)) else {
                        continue;
                    };
                    if values
                        .iter()
                        .any(|v| v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)))
                    {
                        d.error(
                            h.value.pos,
                            &hat,
                            "a header value cannot hold CR, LF or NUL",
                        );
                        continue;
                    }
                    if !values.is_empty() {
                        http.headers.push((h.key.to_owned(), values));
                    }
                }
            }
            _ => unknown_key(d, &e, &path, HTTP_OPTS),
        }
    }
    (d.errors.len() == errors).then_some(http)
}

fn h2_opts(f: &Fields<'_>, d: &mut Diags) -> Option<H2Opts> {
    let mut h2 = H2Opts {
        hosts: Vec::new(),
        path: "/".to_owned(),
    };
    if let Some(node) = f.node("h2-opts") {
        let path = f.path("h2-opts");
        if !is_section(node, &path, d) {
            return None;
        }
        let errors = d.errors.len();
        for e in entries(node, &path, d) {
            let at = format!("{path}.{}", e.key);
            match e.key {
                "host" => {
                    let hosts = match &e.value.value {
                        Value::Seq(items) => items.iter().map(value::text).collect(),
                        _ => value::text(e.value).map(|h| vec![h]),
                    };
                    h2.hosts = check(d, e.value, &at, hosts).unwrap_or_default();
                }
                "path" => {
                    // mihomo's share-link converter writes a one-item list here.
                    let text = match &e.value.value {
                        Value::Seq(items) => items.first().map_or(Ok(String::new()), value::text),
                        _ => value::text(e.value),
                    };
                    if let Some(p) = check(d, e.value, &at, text) {
                        h2.path = p;
                    }
                }
                // The converter's (empty) `headers`; mihomo does not read it either.
                "headers" => {}
                _ => unknown_key(d, &e, &path, H2_OPTS),
            }
        }
        let bad = |t: &str| {
            t.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        };
        if h2.hosts.iter().any(|h| bad(h)) || bad(&h2.path) {
            let message = "hosts and the path cannot hold spaces or control characters";
            d.error(node.pos, &path, message);
        }
        if d.errors.len() > errors {
            return None;
        }
    }
    h2.hosts.retain(|h| !h.is_empty());
    if h2.hosts.is_empty() {
        h2.hosts.push(DEFAULT_H2_HOST.to_owned());
    }
    if !h2.path.starts_with('/') {
        h2.path.insert(0, '/');
    }
    Some(h2)
}

fn grpc_opts(f: &Fields<'_>, d: &mut Diags) -> Option<GrpcOpts> {
    let mut service_name = String::new();
    if let Some(node) = f.node("grpc-opts") {
        let path = f.path("grpc-opts");
        if !is_section(node, &path, d) {
            return None;
        }
        for e in entries(node, &path, d) {
            match e.key {
                "grpc-service-name" => match value::text(e.value) {
                    Ok(s) => service_name = s,
                    Err(m) => {
                        d.error(e.value.pos, &format!("{path}.grpc-service-name"), m);
                        return None;
                    }
                },
                _ => unknown_key(d, &e, &path, GRPC_OPTS),
            }
        }
    }
    let service_name = service_name.trim().trim_matches('/').to_owned();
    if service_name
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        let node = f.node("grpc-opts")?;
        let message = "a service name cannot hold spaces or control characters";
        d.error(node.pos, &f.path("grpc-opts.grpc-service-name"), message);
        return None;
    }
    Some(GrpcOpts {
        service_name: if service_name.is_empty() {
            DEFAULT_SERVICE.to_owned()
        } else {
            service_name
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed_in_the_path() {
        let mut p = "/ray?ed=2048".to_owned();
        assert_eq!(take_ed(&mut p), Some(2048));
        assert_eq!(p, "/ray");
        let mut p = "/ray?a=1&ed=10&b=2".to_owned();
        assert_eq!(take_ed(&mut p), Some(10));
        assert_eq!(p, "/ray?a=1&b=2");
        let mut p = "/ray?ed=x".to_owned();
        assert_eq!(take_ed(&mut p), None);
        assert_eq!(p, "/ray?ed=x");
        let mut p = "/ray".to_owned();
        assert_eq!(take_ed(&mut p), None);
    }
}
