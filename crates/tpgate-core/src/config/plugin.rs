//! `plugin` and `plugin-opts` of Shadowsocks proxies, with mihomo's keys and defaults:
//! `obfs` (simple-obfs, http or tls), `v2ray-plugin` (websocket, optionally in TLS) and
//! `shadow-tls` versions 2 and 3. Another plugin (restls, kcptun...), v2ray-plugin's quic
//! mode or shadow-tls version 1 skip the proxy with one warning: dialing it without its
//! plugin would fail.

use super::decode::{check, entries, is_section, unknown_key};
use super::network::headers;
use super::proxies::Fields;
use super::yaml::{Node, Pos, Value};
use super::{value, Diags, ObfsMode, ShadowTlsVersion, SsPlugin, Tls, WsOpts};

/// mihomo's host for obfs and v2ray-plugin when none is given.
const DEFAULT_HOST: &str = "bing.com";

const OBFS_OPTS: &[&str] = &["mode", "host"];
const V2RAY_OPTS: &[&str] = &[
    "mode",
    "host",
    "path",
    "tls",
    "fingerprint",
    "headers",
    "skip-cert-verify",
    "mux",
    "v2ray-http-upgrade",
    "v2ray-http-upgrade-fast-open",
];
const SHADOW_TLS_OPTS: &[&str] = &[
    "password",
    "host",
    "fingerprint",
    "skip-cert-verify",
    "version",
];

/// The proxy's plugin: `Some(None)` without one, `None` when it is invalid (an error) or
/// cannot be carried (`skip` set, one warning).
pub(super) fn plugin(
    f: &Fields<'_>,
    who: &str,
    skip: &mut bool,
    d: &mut Diags,
) -> Option<Option<SsPlugin>> {
    let entry = f.entries.iter().find(|e| e.key == "plugin");
    let name = match entry.map(|e| e.value) {
        None
        | Some(Node {
            value: Value::Null, ..
        }) => String::new(),
        Some(n) => check(d, n, &f.path("plugin"), value::string(n))?
            .trim()
            .to_owned(),
    };
    let opts = f.node("plugin-opts");
    let Some(entry) = entry.filter(|_| !name.is_empty()) else {
        if let Some(e) = f.entries.iter().find(|e| e.key == "plugin-opts") {
            d.warn(e.key_pos, &f.path("plugin-opts"), "no `plugin`; ignored");
        }
        return Some(None);
    };
    let path = f.path("plugin-opts");
    if let Some(node) = opts {
        if !is_section(node, &path, d) {
            return None;
        }
    }
    // Where a missing option is reported: the options, or the plugin when none are given.
    let at = opts.map_or(entry.value.pos, |n| n.pos);
    let errors = d.errors.len();
    let mut unsupported = |d: &mut Diags, what: String| {
        if !*skip {
            let message = format!("{what} is not supported by tpgate; {who} skipped");
            d.warn(entry.key_pos, &f.path("plugin"), message);
        }
        *skip = true;
        None
    };
    let plugin = match name.as_str() {
        "obfs" => obfs(opts, at, &path, d),
        "v2ray-plugin" => match v2ray(opts, &path, d) {
            Ok(p) => p,
            Err(mode) => return unsupported(d, format!("v2ray-plugin mode {mode}")),
        },
        "shadow-tls" => match shadow_tls(opts, at, &path, d) {
            Ok(p) => p,
            Err(version) => return unsupported(d, format!("shadow-tls version {version}")),
        },
        other => return unsupported(d, format!("plugin {other}")),
    };
    (d.errors.len() == errors)
        .then_some(plugin)
        .flatten()
        .map(Some)
}

/// A text option, its error reported.
fn text(d: &mut Diags, node: &Node, at: &str) -> Option<String> {
    check(d, node, at, value::text(node))
}

fn flag(d: &mut Diags, node: &Node, at: &str) -> bool {
    check(d, node, at, value::boolean(node)).unwrap_or(false)
}

/// A host name for a request head or a TLS server name.
fn host(d: &mut Diags, node: &Node, at: &str) -> Option<String> {
    let h = text(d, node, at)?;
    let h = h.trim();
    if h.len() > 255
        || h.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        d.error(
            node.pos,
            at,
            "a host is at most 255 bytes with no spaces or control characters",
        );
        return None;
    }
    Some(h.to_owned())
}

fn obfs(opts: Option<&Node>, at: Pos, path: &str, d: &mut Diags) -> Option<SsPlugin> {
    let mut mode = None;
    let mut host_name = DEFAULT_HOST.to_owned();
    let at_mode = format!("{path}.mode");
    for e in opts.map(|n| entries(n, path, d)).unwrap_or_default() {
        let at = format!("{path}.{}", e.key);
        match e.key {
            "mode" => {
                let words = [("http", ObfsMode::Http), ("tls", ObfsMode::Tls)];
                mode = check(d, e.value, &at, value::keyword(e.value, &words));
                if mode.is_none() {
                    // Reported; keep `missing` below from repeating it.
                    mode = Some(ObfsMode::Http);
                }
            }
            "host" => host_name = host(d, e.value, &at).unwrap_or_default(),
            _ => unknown_key(d, &e, path, OBFS_OPTS),
        }
    }
    let Some(mode) = mode else {
        d.error(at, &at_mode, "obfs needs `mode: http` or `mode: tls`");
        return None;
    };
    if host_name.is_empty() {
        host_name = DEFAULT_HOST.to_owned();
    }
    Some(SsPlugin::Obfs {
        mode,
        host: host_name,
    })
}

/// v2ray-plugin's options; `Err(mode)` for a mode other than websocket.
fn v2ray(opts: Option<&Node>, path: &str, d: &mut Diags) -> Result<Option<SsPlugin>, String> {
    let mut ws = WsOpts {
        path: "/".to_owned(),
        ..WsOpts::default()
    };
    let mut mode = String::new();
    let mut host_name = DEFAULT_HOST.to_owned();
    let mut tls = false;
    let mut skip_cert_verify = false;
    let mut header_list = Vec::new();
    let mut mux = true;
    for e in opts.map(|n| entries(n, path, d)).unwrap_or_default() {
        let at = format!("{path}.{}", e.key);
        match e.key {
            "mode" => mode = text(d, e.value, &at).unwrap_or_default(),
            "host" => host_name = host(d, e.value, &at).unwrap_or_default(),
            "path" => {
                if let Some(p) = text(d, e.value, &at) {
                    if p.bytes().any(|b| matches!(b, b' ' | b'\r' | b'\n' | 0)) {
                        d.error(e.value.pos, &at, "a path cannot hold spaces, CR, LF or NUL");
                    }
                    ws.path = p;
                }
            }
            "headers" => header_list = headers(e.value, &at, d),
            "tls" => tls = flag(d, e.value, &at),
            "skip-cert-verify" => skip_cert_verify = flag(d, e.value, &at),
            "mux" => mux = check(d, e.value, &at, value::boolean(e.value)).unwrap_or(true),
            "v2ray-http-upgrade" => ws.http_upgrade = flag(d, e.value, &at),
            "v2ray-http-upgrade-fast-open" => ws.fast_open = flag(d, e.value, &at),
            "fingerprint" => d.warn(e.key_pos, &at, "not used by tpgate; ignored"),
            _ => unknown_key(d, &e, path, V2RAY_OPTS),
        }
    }
    // No mode is v2ray-plugin's own default, websocket (share links often leave it out).
    let mode = mode.trim().to_ascii_lowercase();
    if !mode.is_empty() && mode != "websocket" {
        return Err(mode);
    }
    if !ws.path.starts_with('/') {
        ws.path.insert(0, '/');
    }
    if host_name.is_empty() {
        host_name = DEFAULT_HOST.to_owned();
    }
    // mihomo: the request's host is `host` unless `headers` names one; so is TLS's name.
    ws.headers = header_list;
    if ws.host_header().is_none() {
        ws.headers.insert(0, ("Host".to_owned(), host_name));
    }
    if ws.fast_open && !ws.http_upgrade {
        ws.fast_open = false;
    }
    let tls = tls.then(|| Tls {
        sni: ws.host_header().map(str::to_owned),
        skip_cert_verify,
        ..Tls::default()
    });
    Ok(Some(SsPlugin::V2ray { ws, tls, mux }))
}

/// shadow-tls's options; `Err(version)` for a version other than 2 and 3.
fn shadow_tls(
    opts: Option<&Node>,
    at: Pos,
    path: &str,
    d: &mut Diags,
) -> Result<Option<SsPlugin>, u64> {
    let mut version = 2;
    let mut host_name = None;
    let mut password = None;
    let mut skip_cert_verify = false;
    for e in opts.map(|n| entries(n, path, d)).unwrap_or_default() {
        let at = format!("{path}.{}", e.key);
        match e.key {
            "version" => version = check(d, e.value, &at, value::uint(e.value, 255)).unwrap_or(2),
            "host" => host_name = host(d, e.value, &at),
            "password" => password = text(d, e.value, &at),
            "skip-cert-verify" => skip_cert_verify = flag(d, e.value, &at),
            "fingerprint" => d.warn(e.key_pos, &at, "not used by tpgate; ignored"),
            _ => unknown_key(d, &e, path, SHADOW_TLS_OPTS),
        }
    }
    let version = match version {
        2 => ShadowTlsVersion::V2,
        3 => ShadowTlsVersion::V3,
        other => return Err(other),
    };
    let mut missing = |key: &str| d.error(at, path, format!("shadow-tls needs `{key}`"));
    let host_name = host_name.filter(|h| !h.is_empty());
    let password = password.filter(|p| !p.is_empty());
    if host_name.is_none() {
        missing("host");
    }
    if password.is_none() {
        missing("password");
    }
    Ok(host_name
        .zip(password)
        .map(|(host, password)| SsPlugin::ShadowTls {
            host,
            password,
            skip_cert_verify,
            version,
        }))
}
