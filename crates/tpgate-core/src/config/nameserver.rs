//! Upstream nameservers as mihomo writes them (`1.1.1.1`, `tls://dns.google`,
//! `https://dns.google/dns-query`, `system`, ...): text -> [`Nameserver`]. Kinds tpgate does
//! not speak are [`Unusable::Skip`] (a warning), malformed entries [`Unusable::Invalid`].

use std::net::IpAddr;

/// How a nameserver is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// DNS over TLS (RFC 7858).
    Tls,
    /// DNS over HTTPS (RFC 8484).
    Https,
    /// The servers of /etc/resolv.conf, over UDP (`system`, and `dhcp://` for now).
    System,
}

/// One upstream nameserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nameserver {
    pub transport: Transport,
    /// An IP literal or a name (resolved with `default-nameserver`); empty for `System`.
    pub host: String,
    pub port: u16,
    /// The URL path of a DoH server (`/dns-query`).
    pub path: String,
    /// The name checked in the server's certificate (DoT/DoH); defaults to `host`.
    pub sni: Option<String>,
    /// `#skip-cert-verify=true`: accept any certificate (DoT/DoH).
    pub skip_cert_verify: bool,
    /// As written, for logs.
    pub text: String,
}

/// Why a nameserver entry cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Unusable {
    /// A kind tpgate does not speak: dropped with a warning.
    Skip(String),
    /// Malformed: an error.
    Invalid(String),
}

/// Parses one nameserver as mihomo writes it: `1.1.1.1`, `1.1.1.1:5353`, `udp://..`,
/// `tcp://..`, `tls://dns.google:853`, `https://dns.google/dns-query`, `system`,
/// `dhcp://eth0`. Of the `#...` options mihomo takes, `skip-cert-verify=true` is read, and
/// `sni=NAME` (tpgate's) sets the certificate name; the others are ignored with a warning.
pub fn parse_nameserver(text: &str) -> Result<(Nameserver, Option<String>), Unusable> {
    let text = text.trim();
    let mut warning = None;
    let (main, fragment) = match text.split_once('#') {
        Some((m, f)) => (m, Some(f)),
        None => (text, None),
    };
    let mut sni = None;
    let mut skip_cert_verify = false;
    if let Some(f) = fragment {
        for part in f.split('&').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("sni", v)) if !v.is_empty() => sni = Some(v.to_owned()),
                Some(("skip-cert-verify", v)) => skip_cert_verify = v == "true",
                _ => {
                    warning = Some(format!("`#{f}`: options after `#` are ignored by tpgate"));
                }
            }
        }
    }
    let system = |warning| {
        Ok((
            Nameserver {
                transport: Transport::System,
                host: String::new(),
                port: 53,
                path: String::new(),
                sni: None,
                skip_cert_verify: false,
                text: text.to_owned(),
            },
            warning,
        ))
    };
    if main == "system" || main.starts_with("system://") {
        return system(warning);
    }
    if main.starts_with("dhcp://") {
        return system(Some(format!(
            "`{main}`: DHCP nameservers are not supported yet; using /etc/resolv.conf"
        )));
    }
    let (scheme, rest) = match main.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("udp".to_owned(), main),
    };
    let (transport, default_port) = match scheme.as_str() {
        "udp" => (Transport::Udp, 53),
        "tcp" => (Transport::Tcp, 53),
        "tls" | "dot" => (Transport::Tls, 853),
        "https" | "doh" => (Transport::Https, 443),
        "quic" | "doq" | "h3" | "rcode" => {
            return Err(Unusable::Skip(format!(
                "`{text}`: {scheme} nameservers are not supported by tpgate; skipped"
            )));
        }
        _ => {
            return Err(Unusable::Invalid(format!(
                "`{text}`: unknown scheme `{scheme}`; expected udp, tcp, tls or https"
            )));
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = match (transport, path) {
        (Transport::Https, "") => "/dns-query".to_owned(),
        (Transport::Https, p) => p.to_owned(),
        (_, "") => String::new(),
        (_, p) => {
            return Err(Unusable::Invalid(format!(
                "`{text}`: a path `{p}` only makes sense for https:// servers"
            )))
        }
    };
    let (host, port) = split_host_port(authority, default_port)
        .map_err(|why| Unusable::Invalid(format!("`{text}`: {why}")))?;
    if host.is_empty() {
        return Err(Unusable::Invalid(format!("`{text}`: no server address")));
    }
    Ok((
        Nameserver {
            transport,
            host,
            port,
            path,
            sni,
            skip_cert_verify,
            text: text.to_owned(),
        },
        warning,
    ))
}

/// `host`, `host:port`, `v6addr`, `[v6addr]:port`.
fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    if authority.parse::<IpAddr>().is_ok() {
        return Ok((authority.to_owned(), default_port));
    }
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{p}` is not a port"))
    };
    if let Some(rest) = authority.strip_prefix('[') {
        let (ip, tail) = rest.split_once(']').ok_or("unclosed `[`")?;
        ip.parse::<IpAddr>()
            .map_err(|_| format!("`{ip}` is not an IPv6 address"))?;
        return match tail.strip_prefix(':') {
            Some(p) => Ok((ip.to_owned(), port(p)?)),
            None if tail.is_empty() => Ok((ip.to_owned(), default_port)),
            None => Err(format!("unexpected `{tail}`")),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_owned(), port(p)?)),
        None => Ok((authority.to_owned(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(text: &str) -> Nameserver {
        parse_nameserver(text).unwrap().0
    }

    #[test]
    fn nameserver_forms() {
        let n = ns("1.1.1.1");
        assert_eq!(
            (n.transport, n.host.as_str(), n.port),
            (Transport::Udp, "1.1.1.1", 53)
        );
        let n = ns("udp://192.0.2.1:5353");
        assert_eq!((n.transport, n.port), (Transport::Udp, 5353));
        let n = ns("tcp://1.1.1.1");
        assert_eq!((n.transport, n.port), (Transport::Tcp, 53));
        let n = ns("tls://dns.google:853");
        assert_eq!(
            (n.transport, n.host.as_str(), n.port),
            (Transport::Tls, "dns.google", 853)
        );
        let n = ns("tls://192.0.2.1#sni=dns.example&skip-cert-verify=true");
        assert_eq!(n.sni.as_deref(), Some("dns.example"));
        assert!(n.skip_cert_verify);
        let n = ns("https://dns.google/dns-query");
        assert_eq!(
            (n.transport, n.host.as_str(), n.port, n.path.as_str()),
            (Transport::Https, "dns.google", 443, "/dns-query")
        );
        let n = ns("https://[2001:db8::1]:8443");
        assert_eq!(
            (n.host.as_str(), n.port, n.path.as_str()),
            ("2001:db8::1", 8443, "/dns-query")
        );
        assert_eq!(ns("2001:db8::53").host, "2001:db8::53");
        assert_eq!(ns("system").transport, Transport::System);
        let (n, w) = parse_nameserver("dhcp://en0").unwrap();
        assert!(n.transport == Transport::System && w.is_some());
        let (_, w) = parse_nameserver("https://doh.pub/dns-query#PROXY&h3=true").unwrap();
        assert!(w.unwrap().contains("ignored"));
        assert!(matches!(
            parse_nameserver("quic://dns.adguard.com"),
            Err(Unusable::Skip(_))
        ));
        assert!(matches!(
            parse_nameserver("ftp://x"),
            Err(Unusable::Invalid(_))
        ));
        assert!(matches!(
            parse_nameserver("udp://1.1.1.1:0"),
            Err(Unusable::Invalid(_))
        ));
        assert!(matches!(
            parse_nameserver("tcp://1.1.1.1/x"),
            Err(Unusable::Invalid(_))
        ));
    }
}
