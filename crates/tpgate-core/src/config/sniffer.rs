//! The `sniffer` section (mihomo's): which connections tpgate reads the first bytes of to
//! learn the name the client asked for (TLS SNI, HTTP Host, QUIC SNI), and which names it
//! does not trust. Without the section tpgate sniffs the usual ports, because a transparent
//! proxy only ever sees addresses and domain rules would otherwise never match.

use std::time::Duration;

use super::decode::{check, entries, is_section, unknown_key};
use super::yaml::{Node, Value};
use super::{value, Diags};
use crate::rules::{parse_ports_text, PortRange, RuleSetHandle, Wildcard};

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &text[prefix.len()..])
}

/// Sniffing settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffer {
    pub enable: bool,
    /// TCP destination ports whose first bytes are read as a TLS ClientHello.
    pub tls_ports: Vec<PortRange>,
    /// TCP destination ports whose first bytes are read as an HTTP/1 request.
    pub http_ports: Vec<PortRange>,
    /// UDP destination ports whose first datagrams are read as QUIC Initial packets.
    pub quic_ports: Vec<PortRange>,
    /// Connect DIRECT traffic to the sniffed name instead of the original address
    /// (`override-destination`); upstream proxies always get the name.
    pub override_destination: bool,
    /// Names never taken from sniffing (the flow keeps its address): `skip-domain`.
    pub skip_domain: Vec<DomainPattern>,
    /// `force-domain`: accepted for mihomo compatibility; it matters once names also come
    /// from DNS (fake-ip), where it forces sniffing for these names.
    pub force_domain: Vec<DomainPattern>,
    /// Sniff flows whose destination is a bare address (`parse-pure-ip`); in a transparent
    /// proxy without fake-ip that is every flow, so it defaults to true.
    pub parse_pure_ip: bool,
    /// The longest wait for a client's first bytes before going on with the address
    /// (`timeout`, milliseconds; tpgate's own key). Server-first protocols (SSH, SMTP) pay
    /// it once per connection on sniffed ports only.
    pub timeout: Duration,
}

impl Default for Sniffer {
    fn default() -> Self {
        let p = |start, end| PortRange { start, end };
        Self {
            enable: true,
            tls_ports: vec![p(443, 443), p(8443, 8443)],
            http_ports: vec![p(80, 80), p(8080, 8880)],
            quic_ports: vec![p(443, 443), p(8443, 8443)],
            override_destination: false,
            skip_domain: Vec::new(),
            force_domain: Vec::new(),
            parse_pure_ip: true,
            timeout: Duration::from_millis(200),
        }
    }
}

impl Sniffer {
    /// Whether a sniffed `name` may be used (not in `skip-domain`).
    pub fn accepts(&self, name: &str) -> bool {
        !self.skip_domain.iter().any(|p| p.matches(name))
    }
}

/// A mihomo domain pattern: `+.example.com` (the name and every name below it),
/// `*.example.com` / `exa?ple.com` (globs), or a plain name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Suffix(String),
    Glob(Wildcard),
    /// Text that is not a domain name (`Mijia Cloud` in mihomo's own example), compared
    /// case-insensitively as a whole: sniffed names are matched as plain strings.
    Literal(String),
    /// `geosite:NAME` or `rule-set:NAME` (DNS settings): the names of a GeoSite list or a
    /// rule provider, bound when the config is loaded (geosite lists by the daemon).
    Set {
        geosite: bool,
        handle: RuleSetHandle,
    },
    /// Every name (`MATCH` in `fake-ip-filter-mode: rule`).
    Any,
}

impl DomainPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().strip_prefix("+.") {
            Some(rest) => Ok(Self::Suffix(
                crate::rules::normalise_domain(rest)?
                    .trim_start_matches('.')
                    .to_owned(),
            )),
            None => Wildcard::new(text).map(Self::Glob),
        }
    }

    /// Like [`Self::parse`], but text that is no domain pattern becomes a
    /// [`Self::Literal`], as mihomo's sniffer reads `skip-domain` and `force-domain`.
    pub fn lenient(text: &str) -> Self {
        Self::parse(text).unwrap_or_else(|_| Self::Literal(text.trim().to_lowercase()))
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Suffix(s) => crate::rules::domain_suffix_matches(name, s),
            Self::Glob(w) => w.matches(name),
            Self::Literal(s) => name.eq_ignore_ascii_case(s),
            Self::Set { handle, .. } => handle.current().matches_host(name),
            Self::Any => true,
        }
    }

    /// `geosite:a,b`, `rule-set:x`, or `+.a.example,b.example`: the patterns of one entry of
    /// a DNS list (mihomo allows comma lists there).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let text = text.trim();
        let set = |geosite: bool, names: &str| -> Result<Vec<Self>, String> {
            names
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    Ok(Self::Set {
                        geosite,
                        handle: RuleSetHandle::new(n),
                    })
                })
                .collect()
        };
        if let Some(rest) = strip_prefix_ci(text, "geosite:") {
            return set(true, rest);
        }
        if let Some(rest) = strip_prefix_ci(text, "rule-set:") {
            return set(false, rest);
        }
        text.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(Self::parse)
            .collect()
    }
}

const KEYS: &[&str] = &[
    "enable",
    "sniff",
    "override-destination",
    "skip-domain",
    "force-domain",
    "skip-src-address",
    "skip-dst-address",
    "parse-pure-ip",
    "force-dns-mapping",
    "timeout",
    "sniffing",
    "port-whitelist",
];

pub(super) fn sniffer(node: &Node, d: &mut Diags) -> Sniffer {
    let mut out = Sniffer::default();
    if !is_section(node, "sniffer", d) {
        return out;
    }
    // mihomo: a present section without `enable: true` sniffs nothing.
    out.enable = false;
    for e in entries(node, "sniffer", d) {
        let path = format!("sniffer.{}", e.key);
        let n = e.value;
        match e.key {
            "enable" => {
                if let Some(b) = check(d, n, &path, value::boolean(n)) {
                    out.enable = b;
                }
            }
            "override-destination" => {
                if let Some(b) = check(d, n, &path, value::boolean(n)) {
                    out.override_destination = b;
                }
            }
            "parse-pure-ip" => {
                if let Some(b) = check(d, n, &path, value::boolean(n)) {
                    out.parse_pure_ip = b;
                }
            }
            "timeout" => {
                if let Some(ms) = check(d, n, &path, value::uint(n, 10_000)) {
                    out.timeout = Duration::from_millis(ms);
                }
            }
            "skip-domain" => out.skip_domain = patterns(n, &path, d),
            "force-domain" => out.force_domain = patterns(n, &path, d),
            "sniff" => sniff(n, &path, d, &mut out),
            "force-dns-mapping" | "skip-src-address" | "skip-dst-address" | "sniffing"
            | "port-whitelist" => {
                d.warn(e.key_pos, &path, "not used by tpgate yet; ignored");
            }
            _ => {
                debug_assert!(!KEYS.contains(&e.key));
                unknown_key(d, &e, "sniffer", KEYS);
            }
        }
    }
    out
}

/// `sniff: {TLS: {ports: [...]}, HTTP: {ports: [...], override-destination: bool}, QUIC: ...}`:
/// a protocol listed without ports keeps its default ports; one not listed is not sniffed.
fn sniff(node: &Node, path: &str, d: &mut Diags, out: &mut Sniffer) {
    let Value::Map(_) = &node.value else {
        let found = node.value.describe();
        d.error(node.pos, path, format!("expected a mapping, found {found}"));
        return;
    };
    let defaults = Sniffer::default();
    out.tls_ports.clear();
    out.http_ports.clear();
    out.quic_ports.clear();
    for e in entries(node, path, d) {
        let proto = e.key.to_ascii_uppercase();
        let p = format!("{path}.{}", e.key);
        let (ports, default) = match proto.as_str() {
            "TLS" => (&mut out.tls_ports, &defaults.tls_ports),
            "HTTP" => (&mut out.http_ports, &defaults.http_ports),
            "QUIC" => (&mut out.quic_ports, &defaults.quic_ports),
            _ => {
                d.unknown(
                    e.key_pos,
                    &p,
                    format!(
                        "unknown protocol `{}`; expected TLS, HTTP or QUIC; ignored",
                        e.key
                    ),
                );
                continue;
            }
        };
        *ports = default.clone();
        if let Value::Null = e.value.value {
            continue;
        }
        for f in entries(e.value, &p, d) {
            let fp = format!("{p}.{}", f.key);
            match f.key {
                "ports" => {
                    let list = port_list(f.value, &fp, d);
                    if !list.is_empty() {
                        *ports = list;
                    }
                }
                "override-destination" => {
                    if let Some(b) = check(d, f.value, &fp, value::boolean(f.value)) {
                        out.override_destination |= b;
                    }
                }
                _ => unknown_key(d, &f, &p, &["ports", "override-destination"]),
            }
        }
    }
}

/// Ports as mihomo writes them: integers, `"8080-8880"` strings, or one string of either.
fn port_list(node: &Node, path: &str, d: &mut Diags) -> Vec<PortRange> {
    let one = |n: &Node| -> Result<Vec<PortRange>, String> {
        match &n.value {
            Value::Int(_) => value::uint(n, u16::MAX.into()).and_then(|p| {
                let p = u16::try_from(p).map_err(|e| e.to_string())?;
                if p == 0 {
                    return Err("port 0 is not a port".to_owned());
                }
                Ok(vec![PortRange { start: p, end: p }])
            }),
            Value::Str(s) => parse_ports_text(s),
            other => Err(format!(
                "expected a port or a range like 8080-8880, found {}",
                other.describe()
            )),
        }
    };
    match &node.value {
        Value::Seq(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, n)| check(d, n, &format!("{path}[{i}]"), one(n)))
            .flatten()
            .collect(),
        _ => check(d, node, path, one(node)).unwrap_or_default(),
    }
}

fn patterns(node: &Node, path: &str, d: &mut Diags) -> Vec<DomainPattern> {
    super::decode::items(node, path, d, |n| {
        value::string(n).map(DomainPattern::lenient)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_mihomo() {
        let p = DomainPattern::parse("+.apple.com").unwrap();
        assert!(p.matches("apple.com") && p.matches("a.b.apple.com"));
        assert!(!p.matches("pineapple.com"));
        let p = DomainPattern::parse("*.lan").unwrap();
        assert!(p.matches("nas.lan") && !p.matches("lan"));
        let p = DomainPattern::parse("Exact.Example.com").unwrap();
        assert!(p.matches("exact.example.com") && !p.matches("www.exact.example.com"));
        let p = DomainPattern::lenient("Mijia Cloud");
        assert_eq!(p, DomainPattern::Literal("mijia cloud".into()));
        assert!(p.matches("mijia cloud") && !p.matches("cloud"));
    }
}
