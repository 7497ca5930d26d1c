//! The daemon's own top-level settings: the REST API (`external-controller`, `secret`, in
//! mihomo's spelling) and `state-file`. Only checked here; the daemon binds and writes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::decode::{check, Entry};
use super::yaml::{Node, Value};
use super::{value, Config, Diags};

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
                "the API on {addr} is reachable from other hosts and has no `secret`: anyone \
                 who can reach it can change the proxy in use"
            );
            d.warn(n.pos, "external-controller", message);
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
}
