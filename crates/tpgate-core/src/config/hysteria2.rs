//! `type: hysteria2` (alias `hy2`): mihomo's keys -> [`Hysteria2Opts`]. Rates are read as
//! mihomo reads them (`"100 Mbps"`, `"10 MBps"`, a bare number in Mbit/s); `ports` is a
//! list of ports and ranges for port hopping.

use std::time::Duration;

use super::proxies::{tls_with_alpn, Fields};
use super::yaml::{Node, Pos};
use super::{value, Diags, Hysteria2Opts, ProxyKind};

/// mihomo's default and floor for `hop-interval`, in seconds.
const DEFAULT_HOP: u64 = 30;
const MIN_HOP: u64 = 5;
/// More ports than this in `ports` is surely a mistake (mihomo has no limit; a subscription
/// writes ranges of a few thousand).
const MAX_PORTS: usize = 65_535;

pub(super) fn hysteria2(f: &Fields<'_>, at: Pos, d: &mut Diags) -> Option<ProxyKind> {
    let password = f.required(d, at, "password", value::text)?;
    let mut tls = tls_with_alpn(f, d);
    if tls.alpn.is_empty() {
        tls.alpn = vec!["h3".to_owned()];
    }
    let obfs = match f.get(d, "obfs", value::string).map(str::trim) {
        None | Some("") => None,
        Some(o) if o.eq_ignore_ascii_case("salamander") => {
            let pw = f.get(d, "obfs-password", value::text).unwrap_or_default();
            if pw.is_empty() {
                let node = f.node("obfs")?;
                d.error(
                    node.pos,
                    &f.path("obfs"),
                    "obfs salamander needs an `obfs-password`",
                );
            }
            Some(pw)
        }
        Some(other) => {
            let node = f.node("obfs")?;
            let message = format!("unknown obfs `{other}` (Hysteria 2 has `salamander`)");
            d.error(node.pos, &f.path("obfs"), message);
            None
        }
    };
    let up = f.get(d, "up", rate).unwrap_or(0);
    let down = f.get(d, "down", rate).unwrap_or(0);
    let ports = f.get(d, "ports", ports).unwrap_or_default();
    let hop = f
        .get(d, "hop-interval", |n| value::uint(n, 86_400))
        .filter(|s| *s != 0)
        .unwrap_or(DEFAULT_HOP)
        .max(MIN_HOP);
    Some(ProxyKind::Hysteria2(Hysteria2Opts {
        password,
        tls,
        obfs,
        up,
        down,
        ports,
        hop_interval: Duration::from_secs(hop),
    }))
}

/// The port of a hysteria2 proxy that writes only `ports` (mihomo allows that): the first.
/// Bad `ports` are reported once, by [`hysteria2`], which reads them too.
pub(super) fn first_port(f: &Fields<'_>) -> Option<u16> {
    let node = f.node("ports")?;
    Some(
        ports(node)
            .ok()
            .and_then(|p| p.first().copied())
            .unwrap_or(1),
    )
}

/// A rate as mihomo's `StringToBps` reads it, in bytes per second: `N` (Mbit/s), or `N`
/// with a unit `bps`, `Kbps`, `Mbps`, `Gbps`, `Tbps` (bits) or `Bps`, `KBps`... (bytes);
/// K, M, G, T are powers of 1024.
pub(super) fn rate(node: &Node) -> Result<u64, String> {
    let text = value::text(node)?;
    let t = text.trim();
    if let Ok(mbit) = t.parse::<u64>() {
        return Ok(mbit.saturating_mul(1 << 20) / 8);
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let (n, unit) = t.split_at(digits);
    let bad = || {
        format!("expected a rate such as `100 Mbps`, `20 MBps` or a number of Mbit/s, found `{t}`")
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit = unit.trim_start();
    let (scale, rest) = match unit.chars().next() {
        Some('K') => (1u64 << 10, &unit[1..]),
        Some('M') => (1 << 20, &unit[1..]),
        Some('G') => (1 << 30, &unit[1..]),
        Some('T') => (1 << 40, &unit[1..]),
        _ => (1, unit),
    };
    let bits = match rest {
        "bps" => true,
        "Bps" => false,
        _ => return Err(bad()),
    };
    let bytes = n.saturating_mul(scale);
    Ok(if bits { bytes / 8 } else { bytes })
}

/// `ports`: `443`, `20000-30000`, or several separated by commas (or `/`, as some links
/// write), expanded in order without repeats.
pub(super) fn ports(node: &Node) -> Result<Vec<u16>, String> {
    let text = value::text(node)?;
    let mut out: Vec<u16> = Vec::new();
    for part in text
        .split([',', '/'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let one = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("`{s}` in `{part}` is not a port (1-65535)")),
                Ok(p) => Ok(p),
            }
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (one(a)?, one(b)?),
            None => (one(part)?, one(part)?),
        };
        if lo > hi {
            return Err(format!("the range `{part}` runs backwards"));
        }
        for p in lo..=hi {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if out.len() > MAX_PORTS {
            return Err("too many ports".to_owned());
        }
    }
    if out.is_empty() {
        return Err("expected ports such as `443,20000-30000`".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::Value;

    fn node(v: Value) -> Node {
        Node {
            value: v,
            pos: Pos { line: 1, col: 1 },
        }
    }

    fn s(t: &str) -> Node {
        node(Value::Str(t.to_owned()))
    }

    #[test]
    fn rates_read_as_mihomo_reads_them() {
        assert_eq!(rate(&s("100 Mbps")), Ok(100 << 17));
        assert_eq!(rate(&s("100Mbps")), Ok(100 << 17));
        assert_eq!(rate(&node(Value::Int(100))), Ok(100 << 17));
        assert_eq!(rate(&s("20 MBps")), Ok(20 << 20));
        assert_eq!(rate(&s("1 Gbps")), Ok(1 << 27));
        assert_eq!(rate(&s("800 bps")), Ok(100));
        assert!(rate(&s("fast")).is_err());
        assert!(rate(&s("100 Mb")).is_err());
    }

    #[test]
    fn port_lists_and_ranges() {
        assert_eq!(ports(&s("443")), Ok(vec![443]));
        assert_eq!(
            ports(&s("443, 1000-1002,443")),
            Ok(vec![443, 1000, 1001, 1002])
        );
        assert_eq!(ports(&s("5/7")), Ok(vec![5, 7]));
        assert!(ports(&s("9-3")).is_err());
        assert!(ports(&s("0")).is_err());
        assert!(ports(&s("")).is_err());
    }
}
