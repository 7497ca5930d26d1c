//! Share links -> the fields of a `proxies:` entry, following mihomo's converter
//! (`common/convert`) for `ss://` (SIP002, SIP022 and the legacy all-base64 form),
//! `trojan://`, `vmess://` (v2rayN base64 JSON and the Xray URL form), `vless://`,
//! `hysteria2://`/`hy2://`, `tuic://`, plus `socks5://`/`socks://` and `http(s)://`.
//! tpgate builds outbounds for some of these types only; the others are still read in
//! full, so the warning that skips them names the type, and they are ready for the day
//! tpgate speaks them.

use super::super::yaml::{Node, Pos, Value};
use super::base64_any;

/// A field value of a proxy mapping.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
    Map(Vec<(String, Self)>),
}

impl Field {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    fn node(&self, pos: Pos) -> Node {
        let value = match self {
            Self::Str(s) => Value::Str(s.clone()),
            Self::Int(i) => Value::Int(*i),
            Self::Bool(b) => Value::Bool(*b),
            Self::List(l) => Value::Seq(
                l.iter()
                    .map(|s| Node {
                        pos,
                        value: Value::Str(s.clone()),
                    })
                    .collect(),
            ),
            Self::Map(m) => Value::Map(
                m.iter()
                    .map(|(k, v)| {
                        (
                            Node {
                                pos,
                                value: Value::Str(k.clone()),
                            },
                            v.node(pos),
                        )
                    })
                    .collect(),
            ),
        };
        Node { pos, value }
    }
}

/// The mapping a link stands for, every node at `pos` (the link's line).
pub(crate) fn to_node(fields: &[(&'static str, Field)], pos: Pos) -> Node {
    let entries = fields
        .iter()
        .map(|(k, v)| {
            (
                Node {
                    pos,
                    value: Value::Str((*k).to_owned()),
                },
                v.node(pos),
            )
        })
        .collect();
    Node {
        pos,
        value: Value::Map(entries),
    }
}

type Fields = Vec<(&'static str, Field)>;

/// One share link -> the fields of its proxy, or why it cannot be read.
pub fn parse_uri(link: &str) -> Result<Fields, String> {
    let link = link.trim();
    let (scheme, _) = link.split_once("://").ok_or("not a link")?;
    match scheme.to_ascii_lowercase().as_str() {
        "ss" => ss(link),
        "trojan" => trojan(link),
        "vmess" => vmess(link),
        "vless" => vless(link),
        "hysteria2" | "hy2" => hysteria2(link),
        "tuic" => tuic(link),
        "socks5" | "socks" | "socks5h" => socks(link),
        "http" | "https" => http(link),
        "ssr" | "hysteria" | "wireguard" | "anytls" => {
            Err(format!("{scheme} links are not read by tpgate"))
        }
        other => Err(format!("unknown scheme `{other}`")),
    }
}

/// The parts of `scheme://user@host:port/path?query#fragment`.
#[derive(Debug, Default)]
struct Url {
    /// Percent-decoded.
    user: Option<String>,
    password: Option<String>,
    /// Raw userinfo, for the schemes that base64 it.
    userinfo_raw: Option<String>,
    host: String,
    port: Option<u16>,
    /// A port list written where the port goes (`host:443,20000-30000`, as Hysteria 2
    /// links write port hopping); `port` is then its first port.
    port_list: Option<String>,
    /// `(key, value)` pairs, decoded (`+` is a space).
    query: Vec<(String, String)>,
    /// Decoded; the proxy's name.
    fragment: String,
}

impl Url {
    fn parse(link: &str) -> Result<Self, String> {
        let (_, rest) = link.split_once("://").ok_or("not a link")?;
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, decode(f, false)),
            None => (rest, String::new()),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let authority = rest.split('/').next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port, port_list) = match hostport.rsplit_once(':') {
            Some((h, list))
                if !hostport.ends_with(']') && (list.contains(',') || list.contains('-')) =>
            {
                let first = list
                    .split([',', '-'])
                    .next()
                    .and_then(|p| p.trim().parse::<u16>().ok())
                    .ok_or_else(|| format!("`{list}` is not a port list"))?;
                let (host, _) = host_port(h)?;
                (host, Some(first), Some(list.to_owned()))
            }
            _ => {
                let (host, port) = host_port(hostport)?;
                (host, port, None)
            }
        };
        let mut url = Self {
            host,
            port,
            port_list,
            fragment,
            ..Self::default()
        };
        if let Some(u) = userinfo {
            url.userinfo_raw = Some(u.to_owned());
            match u.split_once(':') {
                Some((a, b)) => {
                    url.user = Some(decode(a, false));
                    url.password = Some(decode(b, false));
                }
                None => url.user = Some(decode(u, false)),
            }
        }
        url.query = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (decode(k, true), decode(v, true))
            })
            .collect();
        Ok(url)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn server(&self) -> Result<Field, String> {
        if self.host.is_empty() {
            return Err("no host".to_owned());
        }
        Ok(Field::Str(self.host.clone()))
    }

    fn port_or(&self, default: Option<u16>) -> Result<Field, String> {
        self.port
            .or(default)
            .map(|p| Field::Int(p.into()))
            .ok_or_else(|| "no port".to_owned())
    }
}

fn host_port(text: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed `[` in the host")?;
        (h, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port.filter(|p| !p.is_empty()) {
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("`{p}` is not a port"))?,
        ),
        None => None,
    };
    Ok((decode(host, false), port))
}

/// Percent-decoding (`plus`: `+` is a space, as in a query); invalid escapes are kept.
fn decode(text: &str, plus: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn b64_text(text: &str) -> Option<String> {
    base64_any(text).and_then(|b| String::from_utf8(b).ok())
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "true" | "True" | "TRUE"))
}

fn list(v: &str) -> Field {
    Field::List(v.split(',').map(str::to_owned).collect())
}

/// `ss://`: SIP002 (`base64(method:password)@host:port`), SIP022 (`method:password@...`,
/// percent-encoded), and the legacy `ss://base64(method:password@host:port)#name`.
fn ss(link: &str) -> Result<Fields, String> {
    let mut url = Url::parse(link)?;
    if url.port.is_none() {
        // Legacy: everything before `#` (and `?`) is base64.
        let body = link
            .split_once("://")
            .map(|x| x.1)
            .unwrap_or("")
            .split(['#', '?'])
            .next()
            .unwrap_or("");
        let inner = b64_text(body).ok_or("neither host:port nor base64")?;
        let fragment = std::mem::take(&mut url.fragment);
        let query = std::mem::take(&mut url.query);
        url = Url::parse(&format!("ss://{inner}"))?;
        url.fragment = fragment;
        url.query = query;
    }
    let (cipher, password) = match (&url.user, &url.password) {
        (Some(c), Some(p)) => (c.clone(), p.clone()),
        (Some(_), None) => {
            let raw = url.userinfo_raw.as_deref().unwrap_or("");
            let text = b64_text(&decode(raw, false)).ok_or("the user info is not base64")?;
            let (c, p) = text
                .split_once(':')
                .ok_or("the user info is not method:password")?;
            (c.to_owned(), p.to_owned())
        }
        _ => return Err("no method and password".to_owned()),
    };
    let mut f: Fields = vec![
        ("name", Field::Str(url.fragment.clone())),
        ("type", Field::Str("ss".into())),
        ("server", url.server()?),
        ("port", url.port_or(None)?),
        ("cipher", Field::Str(cipher)),
        ("password", Field::Str(password)),
        ("udp", Field::Bool(true)),
    ];
    if url.get("udp-over-tcp") == Some("true") || url.get("uot") == Some("1") {
        f.push(("udp-over-tcp", Field::Bool(true)));
    }
    if let Some(plugin) = url.get("plugin") {
        let mut parts = plugin.split(';');
        let name = parts.next().unwrap_or("");
        let opts: Vec<(&str, &str)> = parts
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        let opt = |k: &str| {
            opts.iter()
                .find(|(key, _)| *key == k)
                .map_or(String::new(), |(_, v)| (*v).to_owned())
        };
        if name.contains("obfs") {
            f.push(("plugin", Field::Str("obfs".into())));
            f.push((
                "plugin-opts",
                Field::Map(vec![
                    ("mode".into(), Field::Str(opt("obfs"))),
                    ("host".into(), Field::Str(opt("obfs-host"))),
                ]),
            ));
        } else if name.contains("v2ray-plugin") {
            f.push(("plugin", Field::Str("v2ray-plugin".into())));
            f.push((
                "plugin-opts",
                Field::Map(vec![
                    ("mode".into(), Field::Str(opt("mode"))),
                    ("host".into(), Field::Str(opt("host"))),
                    ("path".into(), Field::Str(opt("path"))),
                    ("tls".into(), Field::Bool(plugin.contains("tls"))),
                ]),
            ));
        } else if !name.is_empty() {
            f.push(("plugin", Field::Str(name.to_owned())));
        }
    }
    Ok(f)
}

fn trojan(link: &str) -> Result<Fields, String> {
    let url = Url::parse(link)?;
    let mut f: Fields = vec![
        ("name", Field::Str(url.fragment.clone())),
        ("type", Field::Str("trojan".into())),
        ("server", url.server()?),
        ("port", url.port_or(Some(443))?),
        ("password", Field::Str(url.user.clone().unwrap_or_default())),
        ("udp", Field::Bool(true)),
        (
            "skip-cert-verify",
            Field::Bool(truthy(url.get("allowInsecure"))),
        ),
    ];
    if let Some(sni) = url.get("sni").or_else(|| url.get("peer")) {
        f.push(("sni", Field::Str(sni.to_owned())));
    }
    if let Some(alpn) = url.get("alpn") {
        f.push(("alpn", list(alpn)));
    }
    transport(&url, &mut f);
    Ok(f)
}

/// `type=ws|grpc|...` of trojan and vless links (Xray's share-link form, read as mihomo's
/// converter does: `type=http` is HTTP/2 unless `headerType=http`, `ed`/`eh` are
/// WebSocket early data).
fn transport(url: &Url, f: &mut Fields) {
    let mut network = url.get("type").map(str::to_ascii_lowercase);
    if url
        .get("headerType")
        .is_some_and(|t| t.eq_ignore_ascii_case("http"))
    {
        network = Some("http".into());
    } else if network.as_deref() == Some("http") {
        network = Some("h2".into());
    }
    if let Some(network) = network {
        match network.as_str() {
            "h2" => {
                let mut opts = vec![(
                    "path".into(),
                    Field::Str(url.get("path").unwrap_or("/").into()),
                )];
                if let Some(host) = url.get("host").filter(|h| !h.is_empty()) {
                    opts.push(("host".into(), list(host)));
                }
                f.push(("network", Field::Str(network.clone())));
                f.push(("h2-opts", Field::Map(opts)));
            }
            "ws" | "httpupgrade" => {
                let mut opts = vec![(
                    "path".into(),
                    Field::Str(url.get("path").unwrap_or("/").into()),
                )];
                if let Some(host) = url.get("host") {
                    opts.push((
                        "headers".into(),
                        Field::Map(vec![("Host".into(), Field::Str(host.into()))]),
                    ));
                }
                let ed = url.get("ed").and_then(|e| e.parse::<i64>().ok());
                if let (Some(ed), "ws") = (ed, network.as_str()) {
                    let header = url.get("eh").unwrap_or("Sec-WebSocket-Protocol");
                    opts.push(("max-early-data".into(), Field::Int(ed)));
                    opts.push(("early-data-header-name".into(), Field::Str(header.into())));
                }
                f.push(("network", Field::Str(network.clone())));
                f.push(("ws-opts", Field::Map(opts)));
            }
            "grpc" => {
                f.push(("network", Field::Str(network.clone())));
                f.push((
                    "grpc-opts",
                    Field::Map(vec![(
                        "grpc-service-name".into(),
                        Field::Str(url.get("serviceName").unwrap_or("").into()),
                    )]),
                ));
            }
            _ => f.push(("network", Field::Str(network.clone()))),
        }
    }
}

/// `vmess://`: v2rayN's base64 JSON, else the Xray URL form.
fn vmess(link: &str) -> Result<Fields, String> {
    let body = link.split_once("://").map_or("", |x| x.1);
    let Some(json) = b64_text(body.trim()) else {
        let mut f = xray(link, "vmess")?;
        let url = Url::parse(link)?;
        f.push(("alterId", Field::Int(0)));
        f.push((
            "cipher",
            Field::Str(url.get("encryption").unwrap_or("auto").into()),
        ));
        return Ok(f);
    };
    let v: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| format!("the base64 JSON is not JSON: {e}"))?;
    let s = |k: &str| match v.get(k) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let name = s("ps").ok_or("no `ps` (name)")?;
    let server = s("add")
        .filter(|a| !a.is_empty())
        .ok_or("no `add` (server)")?;
    let port: u16 = s("port")
        .and_then(|p| p.parse().ok())
        .ok_or("no valid `port`")?;
    let mut f: Fields = vec![
        ("name", Field::Str(name)),
        ("type", Field::Str("vmess".into())),
        ("server", Field::Str(server)),
        ("port", Field::Int(port.into())),
        ("uuid", Field::Str(s("id").unwrap_or_default())),
        (
            "alterId",
            Field::Int(s("aid").and_then(|a| a.parse().ok()).unwrap_or(0)),
        ),
        (
            "cipher",
            Field::Str(s("scy").filter(|c| !c.is_empty()).unwrap_or("auto".into())),
        ),
        ("udp", Field::Bool(true)),
    ];
    let tls = s("tls").is_some_and(|t| t.to_ascii_lowercase().ends_with("tls"));
    f.push(("tls", Field::Bool(tls)));
    if let Some(sni) = s("sni").filter(|x| !x.is_empty()) {
        f.push(("servername", Field::Str(sni)));
    }
    let mut network = s("net").unwrap_or_default().to_ascii_lowercase();
    if s("type").as_deref() == Some("http") {
        network = "http".into();
    } else if network == "http" {
        network = "h2".into();
    }
    if !network.is_empty() {
        f.push(("network", Field::Str(network.clone())));
    }
    match network.as_str() {
        "ws" | "httpupgrade" => {
            let mut opts = vec![(
                "path".into(),
                Field::Str(s("path").filter(|p| !p.is_empty()).unwrap_or("/".into())),
            )];
            if let Some(host) = s("host").filter(|h| !h.is_empty()) {
                opts.push((
                    "headers".into(),
                    Field::Map(vec![("Host".into(), Field::Str(host))]),
                ));
            }
            f.push(("ws-opts", Field::Map(opts)));
        }
        "h2" => {
            let mut opts = vec![(
                "path".into(),
                Field::Str(s("path").filter(|p| !p.is_empty()).unwrap_or("/".into())),
            )];
            if let Some(host) = s("host").filter(|h| !h.is_empty()) {
                opts.push(("host".into(), list(&host)));
            }
            f.push(("h2-opts", Field::Map(opts)));
        }
        "grpc" => f.push((
            "grpc-opts",
            Field::Map(vec![(
                "grpc-service-name".into(),
                Field::Str(s("path").unwrap_or_default()),
            )]),
        )),
        _ => {}
    }
    Ok(f)
}

/// The Xray share-link standard of vless (and URL-form vmess).
fn xray(link: &str, kind: &str) -> Result<Fields, String> {
    let url = Url::parse(link)?;
    if url.port.is_none() {
        return Err("no port".to_owned());
    }
    let mut f: Fields = vec![
        ("name", Field::Str(url.fragment.clone())),
        ("type", Field::Str(kind.to_owned())),
        ("server", url.server()?),
        ("port", url.port_or(None)?),
        ("uuid", Field::Str(url.user.clone().unwrap_or_default())),
        ("udp", Field::Bool(true)),
    ];
    let security = url.get("security").unwrap_or("").to_ascii_lowercase();
    if security.ends_with("tls") || security == "reality" {
        f.push(("tls", Field::Bool(true)));
    }
    if let Some(sni) = url.get("sni") {
        f.push(("servername", Field::Str(sni.into())));
    }
    if let Some(pbk) = url.get("pbk") {
        f.push((
            "reality-opts",
            Field::Map(vec![
                ("public-key".into(), Field::Str(pbk.into())),
                (
                    "short-id".into(),
                    Field::Str(url.get("sid").unwrap_or("").into()),
                ),
            ]),
        ));
    }
    transport(&url, &mut f);
    Ok(f)
}

fn vless(link: &str) -> Result<Fields, String> {
    let mut f = xray(link, "vless")?;
    let url = Url::parse(link)?;
    if let Some(flow) = url.get("flow") {
        f.push(("flow", Field::Str(flow.to_ascii_lowercase())));
    }
    Ok(f)
}

fn hysteria2(link: &str) -> Result<Fields, String> {
    let url = Url::parse(link)?;
    let mut f: Fields = vec![
        ("name", Field::Str(url.fragment.clone())),
        ("type", Field::Str("hysteria2".into())),
        ("server", url.server()?),
        ("port", url.port_or(Some(443))?),
    ];
    let auth = match (&url.user, &url.password) {
        (Some(u), Some(p)) => Some(format!("{u}:{p}")),
        (Some(u), None) => Some(u.clone()),
        _ => None,
    };
    if let Some(a) = auth {
        f.push(("password", Field::Str(a)));
    }
    for (key, field) in [
        ("obfs", "obfs"),
        ("obfs-password", "obfs-password"),
        ("sni", "sni"),
    ] {
        if let Some(v) = url.get(key) {
            f.push((field, Field::Str(v.into())));
        }
    }
    f.push(("skip-cert-verify", Field::Bool(truthy(url.get("insecure")))));
    if let Some(alpn) = url.get("alpn") {
        f.push(("alpn", list(alpn)));
    }
    // Port hopping: a port list in the authority, or `mport` (v2rayN and others).
    if let Some(ports) = url.port_list.as_deref().or(url.get("mport")) {
        f.push(("ports", Field::Str(ports.to_owned())));
    }
    if let Some(fp) = url.get("pinSHA256") {
        f.push(("fingerprint", Field::Str(fp.to_owned())));
    }
    Ok(f)
}

fn tuic(link: &str) -> Result<Fields, String> {
    let url = Url::parse(link)?;
    let mut f: Fields = vec![
        ("name", Field::Str(url.fragment.clone())),
        ("type", Field::Str("tuic".into())),
        ("server", url.server()?),
        ("port", url.port_or(None)?),
        ("udp", Field::Bool(true)),
    ];
    match (&url.user, &url.password) {
        (Some(u), Some(p)) => {
            f.push(("uuid", Field::Str(u.clone())));
            f.push(("password", Field::Str(p.clone())));
        }
        (Some(u), None) => f.push(("token", Field::Str(u.clone()))),
        _ => {}
    }
    if let Some(cc) = url.get("congestion_control") {
        f.push(("congestion-controller", Field::Str(cc.into())));
    }
    if let Some(alpn) = url.get("alpn") {
        f.push(("alpn", list(alpn)));
    }
    if let Some(sni) = url.get("sni") {
        f.push(("sni", Field::Str(sni.into())));
    }
    if url.get("disable_sni") == Some("1") {
        f.push(("disable-sni", Field::Bool(true)));
    }
    if let Some(mode) = url.get("udp_relay_mode") {
        f.push(("udp-relay-mode", Field::Str(mode.into())));
    }
    Ok(f)
}

/// `socks5://user:pass@host:port#name`, and v2rayN's `socks://base64(user:pass)@...`.
fn socks(link: &str) -> Result<Fields, String> {
    let url = Url::parse(link)?;
    let mut f: Fields = vec![
        ("name", Field::Str(url.fragment.clone())),
        ("type", Field::Str("socks5".into())),
        ("server", url.server()?),
        ("port", url.port_or(Some(1080))?),
    ];
    let (user, pass) = match (&url.user, &url.password) {
        (Some(u), Some(p)) => (Some(u.clone()), Some(p.clone())),
        (Some(u), None) => match b64_text(u)
            .and_then(|t| t.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())))
        {
            Some((a, b)) => (Some(a), Some(b)),
            None => (Some(u.clone()), None),
        },
        _ => (None, None),
    };
    if let Some(u) = user.filter(|u| !u.is_empty()) {
        f.push(("username", Field::Str(u)));
    }
    if let Some(p) = pass.filter(|p| !p.is_empty()) {
        f.push(("password", Field::Str(p)));
    }
    f.push(("udp", Field::Bool(true)));
    Ok(f)
}

/// `http://user:pass@host:port#name`; `https://` is HTTP CONNECT over TLS.
fn http(link: &str) -> Result<Fields, String> {
    let url = Url::parse(link)?;
    let tls = link
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    let mut f: Fields = vec![
        ("name", Field::Str(url.fragment.clone())),
        ("type", Field::Str("http".into())),
        ("server", url.server()?),
        ("port", url.port_or(Some(if tls { 443 } else { 80 }))?),
    ];
    if let Some(u) = url.user.clone().filter(|u| !u.is_empty()) {
        f.push(("username", Field::Str(u)));
    }
    if let Some(p) = url.password.clone().filter(|p| !p.is_empty()) {
        f.push(("password", Field::Str(p)));
    }
    if tls {
        f.push(("tls", Field::Bool(true)));
        if let Some(sni) = url.get("sni") {
            f.push(("sni", Field::Str(sni.into())));
        }
    }
    Ok(f)
}
