//! The daemon's own top-level settings: the REST API (`external-controller`, `secret`,
//! `external-controller-unix`, `external-controller-cors`, `external-ui*`, in mihomo's
//! spelling) and `state-file`. Only checked here; the daemon binds, serves and writes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::decode::{check, entries, Entry};
use super::yaml::{Node, Value};
use super::{value, Config, Diags};

/// The controller's settings besides its TCP address and `secret`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controller {
    pub cors: Cors,
    /// `external-controller-unix`: a unix socket serving the API without `secret`, as
    /// mihomo does (whoever may open the socket file is trusted).
    pub unix: Option<String>,
    /// `external-ui`: a directory of static files served at `/ui/` (a dashboard).
    pub ui: Option<String>,
    /// `external-ui-name`: the subdirectory of `external-ui` to serve.
    pub ui_name: Option<String>,
    /// `external-ui-url`: a zip of the dashboard, downloaded once into `external-ui` when
    /// that holds no `index.html`.
    pub ui_url: Option<String>,
}

/// `external-controller-cors`: which web pages may call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// `allow-origins`; `*` (mihomo's default) allows every origin.
    pub allow_origins: Vec<String>,
    /// `allow-private-network`: answer Chrome's Private Network Access preflight.
    pub allow_private_network: bool,
}

impl Default for Cors {
    /// mihomo's defaults.
    fn default() -> Self {
        Self {
            allow_origins: vec!["*".to_owned()],
            allow_private_network: true,
        }
    }
}

/// The top-level keys read by [`settings`].
pub(super) const KEYS: &[&str] = &[
    "external-controller",
    "secret",
    "state-file",
    "external-controller-unix",
    "external-controller-cors",
    "external-ui",
    "external-ui-name",
    "external-ui-url",
];

/// Reads `external-controller`, `secret` and `state-file` from the top-level entries.
pub(super) fn settings(entries: &[Entry<'_>], config: &mut Config, d: &mut Diags) {
    let field = |key: &str| entries.iter().find(|e| e.key == key).map(|e| e.value);
    if let Some(n) = field("state-file") {
        if let Some(path) = check(d, n, "state-file", state_file(n)) {
            config.state_file = path;
        }
    }
    if let Some(n) = field("secret") {
        config.secret = check(d, n, "secret", secret(n)).flatten();
    }
    let c = &mut config.controller;
    let path = |n: &Node, key: &str, d: &mut Diags| check(d, n, key, optional_text(n)).flatten();
    if let Some(n) = field("external-controller-unix") {
        c.unix = path(n, "external-controller-unix", d);
    }
    if let Some(n) = field("external-ui") {
        c.ui = path(n, "external-ui", d);
    }
    if let Some(n) = field("external-ui-name") {
        c.ui_name = path(n, "external-ui-name", d);
        if let Some(name) = &c.ui_name {
            if name.split('/').any(|p| p == "..") {
                d.error(
                    n.pos,
                    "external-ui-name",
                    "must stay inside external-ui (no `..`)",
                );
            }
        }
    }
    if let Some(n) = field("external-ui-url") {
        c.ui_url = path(n, "external-ui-url", d);
        if c.ui_url.is_some() && c.ui.is_none() {
            let message = "needs `external-ui`, the folder to unpack the dashboard into; ignored";
            d.warn(n.pos, "external-ui-url", message);
        }
    }
    if let Some(n) = field("external-controller-cors") {
        c.cors = cors(n, d);
    }
    let Some(n) = field("external-controller") else {
        return;
    };
    let Some(addr) = check(d, n, "external-controller", external_controller(n)) else {
        return;
    };
    config.external_controller = addr.map(|(addr, everywhere)| {
        if everywhere {
            let message = format!(
                "`:{0}` means every address in mihomo; tpgate listens on {addr} only (write \
                 0.0.0.0:{0} to listen on every address)",
                addr.port()
            );
            d.warn(n.pos, "external-controller", message);
        } else if !addr.ip().is_loopback() && config.secret.is_none() {
            let message = format!(
                "the API on {addr} would be reachable from other hosts without a password: \
                 set `secret: <a long random string>` (e.g. the output of `openssl rand -hex \
                 16`) and give it to the dashboard, or listen on 127.0.0.1:{}",
                addr.port()
            );
            d.error(n.pos, "external-controller", message);
        }
        addr
    });
}

/// `None` for an empty value (mihomo: no API). `true` with the address: written as
/// `:PORT`, which tpgate narrows to loopback.
fn external_controller(node: &Node) -> Result<Option<(SocketAddr, bool)>, String> {
    let expected = "expected an address like 127.0.0.1:9090, [::1]:9090 or :9090";
    let text = match &node.value {
        Value::Null => return Ok(None),
        Value::Str(s) => s.trim(),
        other => return Err(format!("{expected}, found {}", other.describe())),
    };
    if text.is_empty() {
        return Ok(None);
    }
    let (addr, everywhere) = if let Some(port) = text.strip_prefix(':') {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{expected}, found `{text}`"))?;
        (SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port), true)
    } else if let Ok(addr) = text.parse::<SocketAddr>() {
        (addr, false)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("{expected}, found `{text}`"))?;
                (
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                    false,
                )
            }
            _ => return Err(format!("{expected}, found `{text}`")),
        }
    };
    if addr.port() == 0 {
        return Err(format!("`{text}` has port 0; choose a port like 9090"));
    }
    Ok(Some((addr, everywhere)))
}

/// `external-controller-cors: {allow-origins: [...], allow-private-network: bool}`.
fn cors(node: &Node, d: &mut Diags) -> Cors {
    let mut out = Cors::default();
    if !matches!(node.value, Value::Map(_) | Value::Null) {
        let found = node.value.describe();
        let message = format!("expected a mapping with allow-origins, found {found}");
        d.error(node.pos, "external-controller-cors", message);
        return out;
    }
    for e in entries(node, "external-controller-cors", d) {
        let path = format!("external-controller-cors.{}", e.key);
        match e.key {
            "allow-origins" => {
                let Some(list) = check(d, e.value, &path, value::list(e.value)) else {
                    continue;
                };
                out.allow_origins = list
                    .iter()
                    .filter_map(|n| check(d, n, &path, value::text(n)))
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect();
            }
            "allow-private-network" => {
                if let Some(b) = check(d, e.value, &path, value::boolean(e.value)) {
                    out.allow_private_network = b;
                }
            }
            other => d.error(e.key_pos, &path, format!("unknown key `{other}`")),
        }
    }
    out
}

/// A path or URL; `None` when empty.
fn optional_text(node: &Node) -> Result<Option<String>, String> {
    match &node.value {
        Value::Null => Ok(None),
        _ => value::text(node).map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
    }
}

/// `None` for an empty secret (mihomo: no authentication).
fn secret(node: &Node) -> Result<Option<String>, String> {
    match &node.value {
        Value::Null => Ok(None),
        _ => value::text(node).map(|s| Some(s).filter(|s| !s.is_empty())),
    }
}

fn state_file(node: &Node) -> Result<String, String> {
    let path = value::string(node)?;
    if !path.starts_with('/') {
        return Err(format!(
            "`{path}` is not an absolute path; the daemon's working directory is not fixed"
        ));
    }
    if path.ends_with('/') || path.contains('\0') {
        return Err(format!("`{path}` is not a file path"));
    }
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::Pos;

    fn node(value: Value) -> Node {
        Node {
            pos: Pos { line: 1, col: 1 },
            value,
        }
    }

    fn s(text: &str) -> Node {
        node(Value::Str(text.to_owned()))
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn controller_addresses() {
        let ok = |t: &str| external_controller(&s(t)).unwrap();
        assert_eq!(ok("127.0.0.1:9090"), Some((addr("127.0.0.1:9090"), false)));
        assert_eq!(ok(" [::1]:9090 "), Some((addr("[::1]:9090"), false)));
        assert_eq!(ok("0.0.0.0:9090"), Some((addr("0.0.0.0:9090"), false)));
        assert_eq!(ok(":9090"), Some((addr("127.0.0.1:9090"), true)));
        assert_eq!(ok("localhost:9090"), Some((addr("127.0.0.1:9090"), false)));
        assert_eq!(ok(""), None);
        assert_eq!(external_controller(&node(Value::Null)), Ok(None));
        for bad in [
            "9090",
            "example.com:9090",
            ":http",
            "127.0.0.1:0",
            "1.2.3.4:70000",
        ] {
            assert!(external_controller(&s(bad)).is_err(), "{bad}");
        }
        let e = external_controller(&node(Value::Int(9090))).unwrap_err();
        assert!(e.contains("found `9090`"), "{e}");
    }

    #[test]
    fn secrets_and_state_files() {
        assert_eq!(secret(&s("hunter2")), Ok(Some("hunter2".into())));
        assert_eq!(secret(&node(Value::Int(1234))), Ok(Some("1234".into())));
        assert_eq!(secret(&s("")), Ok(None));
        assert_eq!(secret(&node(Value::Null)), Ok(None));
        assert!(secret(&node(Value::Seq(vec![]))).is_err());
        assert_eq!(
            state_file(&s("/run/tpgate.json")),
            Ok("/run/tpgate.json".into())
        );
        assert!(state_file(&s("state.json"))
            .unwrap_err()
            .contains("absolute"));
        assert!(state_file(&s("/var/lib/")).is_err());
    }

    #[test]
    fn dashboard_settings() {
        let text = "external-controller: 0.0.0.0:9090\n\
                    secret: 'a+b/c='\n\
                    external-controller-unix: /run/tpgate.sock\n\
                    external-ui: ui\n\
                    external-ui-name: zashboard\n\
                    external-controller-cors:\n\
                    \x20 allow-origins: ['http://192.0.2.7:8080/']\n\
                    \x20 allow-private-network: false\n";
        let l = crate::config::load(text).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let c = &l.config.controller;
        assert_eq!(c.unix.as_deref(), Some("/run/tpgate.sock"));
        assert_eq!(
            (c.ui.as_deref(), c.ui_name.as_deref()),
            (Some("ui"), Some("zashboard"))
        );
        assert_eq!(c.cors.allow_origins, ["http://192.0.2.7:8080"]);
        assert!(!c.cors.allow_private_network);
        let l = crate::config::load("external-ui-url: https://example.com/ui.zip\n").unwrap();
        assert_eq!(l.warnings.len(), 1, "no folder to unpack into");
        assert_eq!(l.config.controller.cors, Cors::default());
        let text = "external-ui: ui\nexternal-ui-url: https://example.com/ui.zip\n";
        let l = crate::config::load(text).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(
            l.config.controller.ui_url.as_deref(),
            Some("https://example.com/ui.zip")
        );
        for bad in [
            "external-ui-name: ../etc\n",
            "external-controller-cors: [x]\n",
            "external-controller-cors: {allow-origin: [x]}\n",
            "external-controller: 192.0.2.1:9090\n",
        ] {
            assert!(crate::config::load(bad).is_err(), "{bad}");
        }
    }
}
