//! `proxies:` -> [`ProxyDef`]s. tpgate speaks socks5, http, ss, trojan, vless, vmess,
//! hysteria2 and tuic; a proxy of another type, or one that needs something tpgate lacks
//! (a plugin other than obfs, v2ray-plugin and shadow-tls v2, an unsupported cipher), is
//! skipped with one warning so the rest of a mihomo config still loads. Names are checked
//! for uniqueness later, by `names`.

use super::cipher::{check_password, cipher, supported_names};
use super::decode::{check, entries, Entry};
use super::names::{self, Declared, Outcome};
use super::network::network;
use super::plugin::plugin;
use super::yaml::{Node, Pos, Value};
use super::{
    keys, value, Credentials, Diags, ProxyDef, ProxyKind, ProxyNetwork, Tls, Uuid, VlessFlow,
    VmessCipher,
};

pub(super) fn proxies(node: &Node, d: &mut Diags) -> Vec<Declared<ProxyDef>> {
    let Some(list) = check(d, node, "proxies", value::list(node)) else {
        return Vec::new();
    };
    list.iter()
        .enumerate()
        .map(|(i, item)| proxy(item, format!("proxies[{i}]"), d))
        .collect()
}

/// The fields of one proxy, looked up by key.
pub(super) struct Fields<'a> {
    pub(super) path: String,
    pub(super) entries: Vec<Entry<'a>>,
}

impl<'a> Fields<'a> {
    pub(super) fn node(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|e| e.key == key).map(|e| e.value)
    }

    pub(super) fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// A field converted, its error reported; `None` when absent or invalid.
    pub(super) fn get<T>(
        &self,
        d: &mut Diags,
        key: &str,
        convert: impl Fn(&'a Node) -> Result<T, String>,
    ) -> Option<T> {
        let node = self.node(key)?;
        check(d, node, &self.path(key), convert(node))
    }

    /// A required field; its absence is reported at the proxy (`at`).
    pub(super) fn required<T>(
        &self,
        d: &mut Diags,
        at: Pos,
        key: &str,
        convert: impl Fn(&'a Node) -> Result<T, String>,
    ) -> Option<T> {
        if self.node(key).is_none() {
            d.error(at, &self.path, format!("missing `{key}`"));
        }
        self.get(d, key, convert)
    }
}

/// One proxy mapping; also used for the proxies of proxy providers.
pub(super) fn proxy(node: &Node, path: String, d: &mut Diags) -> Declared<ProxyDef> {
    let invalid = |path| Declared {
        path,
        name: None,
        outcome: Outcome::Invalid,
        dialer: None,
    };
    if !matches!(node.value, Value::Map(_)) {
        let found = node.value.describe();
        let message =
            format!("a proxy is a mapping with name, type, server and port, found {found}");
        d.error(node.pos, &path, message);
        return invalid(path);
    }
    let errors = d.errors.len();
    let f = Fields {
        entries: entries(node, &path, d),
        path,
    };
    let name = f.required(d, node.pos, "name", |n| names::name(n, false));
    let name_at = f.node("name").map(|n| n.pos);
    let dialer = f
        .get(d, "dialer-proxy", value::text)
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .zip(f.node("dialer-proxy").map(|n| n.pos));
    let declared = |outcome| Declared {
        path: f.path.clone(),
        name: name.clone().zip(name_at),
        outcome,
        dialer: dialer.clone(),
    };
    let who = name
        .as_deref()
        .map_or_else(|| "proxy".to_owned(), |n| format!("proxy `{n}`"));
    let Some(kind) = f.required(d, node.pos, "type", value::string) else {
        return declared(Outcome::Invalid);
    };
    let mut kind = kind.trim().to_ascii_lowercase();
    if kind == "hy2" {
        kind = "hysteria2".to_owned();
    }
    if kind == "direct" {
        return declared(direct(&f, name.clone(), d, errors));
    }
    if !keys::PROXY_TYPES.contains(&kind.as_str()) {
        d.summary.skipped(&kind);
        let type_node = f.node("type").unwrap_or(node);
        let why = if keys::PROXY_TYPES_UNSUPPORTED.contains(&kind.as_str()) {
            format!("type {kind} is not supported by tpgate")
        } else {
            let hint = keys::suggest(&kind, keys::PROXY_TYPES)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            format!("unknown type `{kind}`{hint}")
        };
        d.warn(
            type_node.pos,
            &f.path("type"),
            format!("{why}; {who} skipped"),
        );
        return declared(if d.errors.len() > errors {
            Outcome::Invalid
        } else {
            Outcome::Skipped
        });
    }
    let server = f.required(d, node.pos, "server", value::host);
    let port = if kind == "hysteria2" && f.node("port").is_none() && f.node("ports").is_some() {
        super::hysteria2::first_port(&f)
    } else {
        f.required(d, node.pos, "port", port)
    };
    let udp = f.get(d, "udp", value::boolean).unwrap_or(false);
    let mut skip = other_fields(&f, &kind, &who, d);
    let kind_name = kind.clone();
    let kind = match kind.as_str() {
        "socks5" | "http" => plain(&f, &kind, d),
        "ss" => shadowsocks(&f, node.pos, &who, &mut skip, d),
        "vless" => vless(&f, node.pos, &who, &mut skip, d),
        "vmess" => vmess(&f, node.pos, &who, &mut skip, d),
        "hysteria2" => super::hysteria2::hysteria2(&f, node.pos, d),
        "tuic" => super::tuic::tuic(&f, node.pos, &who, &mut skip, d),
        _ => trojan(&f, node.pos, &who, &mut skip, d),
    };
    let outcome = match (kind, server, port) {
        _ if d.errors.len() > errors => Outcome::Invalid,
        _ if skip => {
            d.summary.skipped(&kind_name);
            Outcome::Skipped
        }
        (Some(kind), Some(server), Some(port)) => Outcome::Ready(ProxyDef {
            name: name.clone().unwrap_or_default(),
            server,
            port,
            // mihomo relays UDP through every hysteria2 and tuic proxy, whatever `udp` says.
            udp: (udp || matches!(kind, ProxyKind::Hysteria2(_) | ProxyKind::Tuic(_)))
                && !matches!(kind, ProxyKind::Http { .. }),
            kind,
            dialer: None,
            dialer_name: dialer.as_ref().map(|(n, _)| n.clone()),
        }),
        _ => Outcome::Invalid,
    };
    declared(outcome)
}

/// `type: direct`: connects directly; only `udp` and dialing options, which tpgate's own
/// marked dialing replaces.
fn direct(f: &Fields<'_>, name: Option<String>, d: &mut Diags, errors: usize) -> Outcome<ProxyDef> {
    for e in &f.entries {
        match e.key {
            "name" | "type" | "udp" => {}
            "dialer-proxy" => d.warn(
                e.key_pos,
                &f.path("dialer-proxy"),
                "a direct proxy connects directly; ignored",
            ),
            key if keys::PROXY_IGNORED.contains(&key) => {
                d.warn(e.key_pos, &f.path(key), "not used by tpgate; ignored");
            }
            key => d.warn(
                e.key_pos,
                &f.path(key),
                "not a field of direct proxies; ignored",
            ),
        }
    }
    let udp = f.get(d, "udp", value::boolean).unwrap_or(true);
    match name {
        Some(name) if d.errors.len() == errors => Outcome::Ready(ProxyDef {
            name,
            server: String::new(),
            port: 0,
            udp,
            kind: ProxyKind::Direct,
            dialer: None,
            dialer_name: None,
        }),
        _ => Outcome::Invalid,
    }
}

fn port(node: &Node) -> Result<u16, String> {
    match value::uint(node, u16::MAX.into())? {
        0 => Err("port 0 is not a port (1-65535)".to_owned()),
        p => Ok(u16::try_from(p).unwrap_or(u16::MAX)),
    }
}

/// Warns about the fields tpgate does not read; returns whether one of them turns on
/// something tpgate cannot do, so the proxy is skipped (the first such field is named).
fn other_fields(f: &Fields<'_>, kind: &str, who: &str, d: &mut Diags) -> bool {
    let used = keys::proxy_fields(kind);
    let mut skip = false;
    for e in &f.entries {
        let key = e.key;
        if keys::PROXY_COMMON.contains(&key) || used.contains(&key) {
            continue;
        }
        let path = f.path(key);
        if keys::PROXY_TRANSPORT.contains(&key) {
            if let Some(what) = transport(key, e.value) {
                if !skip {
                    let message = format!("{what} is not supported by tpgate; {who} skipped");
                    d.warn(e.key_pos, &path, message);
                }
                skip = true;
            }
        } else if key == "udp" && kind == "http" {
            // HTTP CONNECT has no UDP; mihomo configs often carry `udp: true` anyway.
        } else if keys::PROXY_IGNORED.contains(&key) {
            d.warn(e.key_pos, &path, "not used by tpgate; ignored");
        } else if keys::PROXY_TYPES
            .iter()
            .any(|t| keys::proxy_fields(t).contains(&key))
        {
            d.warn(
                e.key_pos,
                &path,
                format!("not a field of {kind} proxies; ignored"),
            );
        } else {
            let hint = keys::suggest(key, used)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            d.warn(e.key_pos, &path, format!("unknown field{hint}; ignored"));
        }
    }
    skip
}

/// What a transport field turns on, or `None` when it is written but off.
fn transport(key: &str, node: &Node) -> Option<String> {
    let off = match &node.value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Str(s) => s.trim().is_empty() || (key == "network" && s.eq_ignore_ascii_case("tcp")),
        Value::Map(entries) if matches!(key, "smux" | "ss-opts") => {
            !entries.iter().any(|(k, v)| {
                k.value == Value::Str("enabled".to_owned()) && v.value == Value::Bool(true)
            })
        }
        _ => false,
    };
    if off {
        return None;
    }
    Some(match (&node.value, key) {
        (Value::Str(s), "network" | "flow" | "obfs") => format!("{key} {}", s.trim()),
        _ => format!("`{key}`"),
    })
}

/// `socks5` and `http`: optional credentials and optional TLS.
fn plain(f: &Fields<'_>, kind: &str, d: &mut Diags) -> Option<ProxyKind> {
    let username = f.get(d, "username", value::text).unwrap_or_default();
    let password = f.get(d, "password", value::text).unwrap_or_default();
    if kind == "socks5" {
        for (key, text) in [("username", &username), ("password", &password)] {
            if let Some(node) = f.node(key).filter(|_| text.len() > 255) {
                let message = format!("SOCKS5 allows at most 255 bytes, this has {}", text.len());
                d.error(node.pos, &f.path(key), message);
            }
        }
        if let Some(node) = f.node("password").filter(|_| username.is_empty()) {
            if !password.is_empty() {
                d.error(
                    node.pos,
                    &f.path("password"),
                    "a password needs a `username`",
                );
            }
        }
    }
    let auth = (!username.is_empty() || !password.is_empty())
        .then_some(Credentials { username, password });
    let tls = if f.get(d, "tls", value::boolean).unwrap_or(false) {
        Some(tls(f, d))
    } else {
        for key in ["sni", "skip-cert-verify", "fingerprint"] {
            if let Some(e) = f.entries.iter().find(|e| e.key == key) {
                d.warn(
                    e.key_pos,
                    &f.path(key),
                    "only used with `tls: true`; ignored",
                );
            }
        }
        None
    };
    Some(match kind {
        "socks5" => ProxyKind::Socks5 { auth, tls },
        _ => ProxyKind::Http { auth, tls },
    })
}

fn tls(f: &Fields<'_>, d: &mut Diags) -> Tls {
    let sni = match (f.node("sni"), f.node("servername")) {
        (Some(_), Some(second)) => {
            let message = "give either `sni` or its alias `servername`, not both";
            d.error(second.pos, &f.path("servername"), message);
            None
        }
        (Some(_), None) => f.get(d, "sni", value::text),
        (None, Some(_)) => f.get(d, "servername", value::text),
        (None, None) => None,
    };
    Tls {
        sni: sni.filter(|s| !s.trim().is_empty()),
        skip_cert_verify: f
            .get(d, "skip-cert-verify", value::boolean)
            .unwrap_or(false),
        alpn: Vec::new(),
        fingerprint: f.get(d, "fingerprint", fingerprint).flatten(),
        reality: None,
    }
}

/// `fingerprint`: a certificate's SHA-256 in hex, with or without `:` between the bytes
/// (empty: none). mihomo also takes a uTLS name here in old configs (`chrome`...), which is
/// `client-fingerprint`'s job: that is an error saying so.
fn fingerprint(node: &Node) -> Result<Option<[u8; 32]>, String> {
    let text = value::text(node)?;
    let hex: String = text.trim().chars().filter(|c| *c != ':').collect();
    if hex.is_empty() {
        return Ok(None);
    }
    let bad = || {
        format!(
            "expected a certificate's SHA-256 as 64 hex digits (`openssl x509 -noout -fingerprint -sha256`), found `{}`",
            text.trim()
        )
    };
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(Some(out))
}

/// `alpn`: a list of protocol names (or one name, or names separated by commas).
fn alpn(node: &Node) -> Result<Vec<String>, String> {
    let names: Vec<String> = match &node.value {
        Value::Seq(items) => items.iter().map(value::text).collect::<Result<_, _>>()?,
        _ => value::text(node)?
            .split(',')
            .map(|s| s.trim().to_owned())
            .collect(),
    };
    let names: Vec<String> = names.into_iter().filter(|n| !n.is_empty()).collect();
    match names.iter().find(|n| n.len() > 255) {
        Some(n) => Err(format!(
            "an ALPN name is at most 255 bytes, `{n}` is longer"
        )),
        None => Ok(names),
    }
}

/// [`tls`] with `alpn`, for the proxies that read it (trojan, vless, vmess).
pub(super) fn tls_with_alpn(f: &Fields<'_>, d: &mut Diags) -> Tls {
    Tls {
        alpn: f.get(d, "alpn", alpn).unwrap_or_default(),
        ..tls(f, d)
    }
}

/// [`tls_with_alpn`] with `reality-opts`, for the stream proxies (trojan, vless, vmess).
fn stream_tls(f: &Fields<'_>, d: &mut Diags) -> Tls {
    Tls {
        reality: super::reality::reality_opts(f, d),
        ..tls_with_alpn(f, d)
    }
}

fn shadowsocks(
    f: &Fields<'_>,
    at: Pos,
    who: &str,
    skip: &mut bool,
    d: &mut Diags,
) -> Option<ProxyKind> {
    let name = f.required(d, at, "cipher", value::string)?;
    let password = f.required(d, at, "password", value::text)?;
    let Some(cipher) = cipher(name) else {
        if !*skip {
            let node = f.node("cipher")?;
            let message = format!(
                "cipher {} is not supported by tpgate (supported: {}); {who} skipped",
                name.trim(),
                supported_names()
            );
            d.warn(node.pos, &f.path("cipher"), message);
        }
        *skip = true;
        return None;
    };
    let node = f.node("password")?;
    check(
        d,
        node,
        &f.path("password"),
        check_password(cipher, &password),
    )?;
    let plugin = plugin(f, who, skip, d)?;
    Some(ProxyKind::Shadowsocks {
        cipher,
        password,
        plugin,
    })
}

fn trojan(f: &Fields<'_>, at: Pos, who: &str, skip: &mut bool, d: &mut Diags) -> Option<ProxyKind> {
    let password = f.required(d, at, "password", value::text)?;
    if password.is_empty() {
        let node = f.node("password")?;
        d.error(node.pos, &f.path("password"), "the password is empty");
    }
    let tls = stream_tls(f, d);
    let network = network(f, "trojan", who, skip, d)?;
    Some(ProxyKind::Trojan {
        password,
        tls,
        network,
    })
}

/// `vless`: the user id, optional TLS, the network, the flow (XTLS Vision, which needs TLS
/// over `network: tcp`, as in Xray and mihomo).
fn vless(f: &Fields<'_>, at: Pos, who: &str, skip: &mut bool, d: &mut Diags) -> Option<ProxyKind> {
    let uuid = f.required(d, at, "uuid", |n| {
        value::string(n)?.parse::<Uuid>().map_err(|e| e.to_string())
    })?;
    let tls = optional_tls(f, d);
    reality_needs_tls(f, tls.is_some(), who, skip, d);
    let network = network(f, "vless", who, skip, d)?;
    let flow = vless_flow(f, tls.is_some(), &network, who, skip, d);
    Some(ProxyKind::Vless {
        uuid,
        tls,
        network,
        flow,
    })
}

/// `flow` of a vless proxy; one tpgate cannot speak, or Vision without TLS over TCP, skips
/// the proxy with a warning (`skip`).
fn vless_flow(
    f: &Fields<'_>,
    tls: bool,
    network: &ProxyNetwork,
    who: &str,
    skip: &mut bool,
    d: &mut Diags,
) -> Option<VlessFlow> {
    let at = f.entries.iter().find(|e| e.key == "flow")?.key_pos;
    let name = f.get(d, "flow", value::text)?;
    let flow = match name.trim() {
        "" => return None,
        "xtls-rprx-vision" => VlessFlow::Vision,
        "xtls-rprx-vision-udp443" => VlessFlow::VisionUdp443,
        other => {
            if !*skip {
                let message = format!(
                    "flow {other} is not supported by tpgate (supported: xtls-rprx-vision); {who} skipped"
                );
                d.warn(at, &f.path("flow"), message);
            }
            *skip = true;
            return None;
        }
    };
    let why = match network {
        _ if !tls => Some("needs `tls: true`"),
        ProxyNetwork::Tcp => None,
        _ => Some("runs over `network: tcp` only"),
    };
    if let Some(why) = why {
        if !*skip {
            let message = format!("flow {} {why}; {who} skipped", name.trim());
            d.warn(at, &f.path("flow"), message);
        }
        *skip = true;
    }
    Some(flow)
}

/// `vmess`: the AEAD header only (`alterId: 0`), the body ciphers tpgate has.
fn vmess(f: &Fields<'_>, at: Pos, who: &str, skip: &mut bool, d: &mut Diags) -> Option<ProxyKind> {
    let uuid = f.required(d, at, "uuid", |n| {
        value::string(n)?.parse::<Uuid>().map_err(|e| e.to_string())
    })?;
    if let Some(node) = f.node("alterId") {
        if f.get(d, "alterId", |n| value::uint(n, u16::MAX.into()))? != 0 {
            if !*skip {
                let message = format!(
                    "alterId other than 0 (the legacy header) is not supported by tpgate; {who} skipped"
                );
                d.warn(node.pos, &f.path("alterId"), message);
            }
            *skip = true;
        }
    }
    let cipher = match f.get(d, "cipher", value::string) {
        None => Some(VmessCipher::Aes128Gcm),
        Some(c) => match c.trim().to_ascii_lowercase().as_str() {
            "" | "auto" | "aes-128-gcm" => Some(VmessCipher::Aes128Gcm),
            "chacha20-poly1305" => Some(VmessCipher::Chacha20Poly1305),
            "none" => Some(VmessCipher::None),
            other => {
                if !*skip {
                    let node = f.node("cipher")?;
                    let message = format!(
                        "cipher {other} is not supported by tpgate for vmess (supported: auto, \
                         aes-128-gcm, chacha20-poly1305, none); {who} skipped"
                    );
                    d.warn(node.pos, &f.path("cipher"), message);
                }
                *skip = true;
                None
            }
        },
    };
    let tls = optional_tls(f, d);
    reality_needs_tls(f, tls.is_some(), who, skip, d);
    let network = network(f, "vmess", who, skip, d)?;
    Some(ProxyKind::Vmess {
        uuid,
        cipher: cipher?,
        tls,
        network,
    })
}

/// `reality-opts` without `tls: true` skips the proxy (as mihomo refuses it): its server
/// answers only a REALITY handshake.
fn reality_needs_tls(f: &Fields<'_>, tls: bool, who: &str, skip: &mut bool, d: &mut Diags) {
    let Some(e) = f.entries.iter().find(|e| e.key == "reality-opts") else {
        return;
    };
    if !tls && !*skip && !matches!(e.value.value, Value::Null) {
        let message = format!("REALITY needs `tls: true`; {who} skipped");
        d.warn(e.key_pos, &f.path("reality-opts"), message);
        *skip = true;
    }
}

/// `tls: true` and its fields, or a warning for each TLS field written without it.
fn optional_tls(f: &Fields<'_>, d: &mut Diags) -> Option<Tls> {
    let tls = f
        .get(d, "tls", value::boolean)
        .unwrap_or(false)
        .then(|| stream_tls(f, d));
    if tls.is_none() {
        for key in [
            "sni",
            "servername",
            "skip-cert-verify",
            "alpn",
            "fingerprint",
        ] {
            if let Some(e) = f.entries.iter().find(|e| e.key == key) {
                d.warn(
                    e.key_pos,
                    &f.path(key),
                    "only used with `tls: true`; ignored",
                );
            }
        }
    }
    tls
}
