//! Which keys a config may hold: tpgate's own, and the mihomo/Clash keys it accepts but
//! ignores for now (so an existing mihomo config loads with warnings instead of failing);
//! the same for the fields of one proxy and one proxy group. Also the "did you mean"
//! suggestion for unknown keys and names.

/// Top-level keys tpgate reads.
pub(super) const TOP: &[&str] = &[
    "tproxy-port",
    "routing-mark",
    "ipv6",
    "mode",
    "log-level",
    "rules",
    "intercept",
    "proxies",
    "proxy-groups",
    "external-controller",
    "secret",
    "state-file",
    "external-controller-unix",
    "external-controller-cors",
    "external-ui",
    "external-ui-name",
    "external-ui-url",
    "sniffer",
    "rule-providers",
    "geoip-path",
    "geosite-path",
    "asn-path",
    "geox-url",
    "geodata-mode",
    "geo-auto-update",
    "geo-update-interval",
    "sub-rules",
    "dns",
    "hosts",
    "use-hosts",
    "limits",
];

/// Keys of the `intercept` section.
pub(super) const INTERCEPT: &[&str] = &[
    "backend",
    "iptables-variant",
    "lan-interfaces",
    "local",
    "udp",
    "fwmark",
    "route-table",
    "rule-priority",
    "bypass",
    "dns-hijack",
    "offload-direct",
];

/// Top-level keys of mihomo (Clash.Meta), Clash Premium and Clash for Windows that tpgate
/// does not use yet. Each one present earns a warning, not an error.
pub(super) const MIHOMO_IGNORED: &[&str] = &[
    "port",
    "socks-port",
    "mixed-port",
    "redir-port",
    "allow-lan",
    "bind-address",
    "lan-allowed-ips",
    "lan-disallowed-ips",
    "authentication",
    "skip-auth-prefixes",
    "external-controller-tls",
    "external-controller-pipe",
    "external-doh-server",
    "interface-name",
    "keep-alive-interval",
    "keep-alive-idle",
    "disable-keep-alive",
    "proxy-providers",
    "script",
    "use-system-hosts",
    "tun",
    "ebpf",
    "auto-redir",
    "iptables",
    "listeners",
    "tunnels",
    "tuic-server",
    "ss-config",
    "vmess-config",
    "inbound-tfo",
    "inbound-mptcp",
    "ntp",
    "tls",
    "profile",
    "experimental",
    "geodata-loader",
    "geosite-matcher",
    "find-process-mode",
    "unified-delay",
    "tcp-concurrent",
    "global-client-fingerprint",
    "global-ua",
    "etag-support",
    "clash-for-android",
    "cfw-bypass",
    "cfw-latency-timeout",
    "cfw-latency-url",
    "cfw-conn-break-strategy",
    "cfw-child-process",
];

/// Fields every proxy has, whatever its type.
pub(super) const PROXY_COMMON: &[&str] = &["name", "type", "server", "port", "dialer-proxy"];

/// The proxy types tpgate speaks.
pub(super) const PROXY_TYPES: &[&str] = &[
    "socks5",
    "http",
    "ss",
    "trojan",
    "vless",
    "vmess",
    "hysteria2",
    "tuic",
];

/// Proxy types of mihomo that tpgate does not speak: such a proxy is skipped.
pub(super) const PROXY_TYPES_UNSUPPORTED: &[&str] = &[
    "hysteria",
    "wireguard",
    "ssr",
    "snell",
    "mieru",
    "anytls",
    "ssh",
    "dns",
    "reject",
];

/// Fields tpgate reads, per proxy type, besides [`PROXY_COMMON`].
pub(super) fn proxy_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "socks5" => &[
            "username",
            "password",
            "tls",
            "sni",
            "skip-cert-verify",
            "fingerprint",
            "udp",
        ],
        "http" => &[
            "username",
            "password",
            "tls",
            "sni",
            "skip-cert-verify",
            "fingerprint",
        ],
        "ss" => &["cipher", "password", "udp", "plugin", "plugin-opts"],
        "trojan" => &[
            "password",
            "sni",
            "servername",
            "skip-cert-verify",
            "fingerprint",
            "reality-opts",
            "udp",
            "alpn",
            "network",
            "ws-opts",
            "grpc-opts",
            "h2-opts",
            "http-opts",
        ],
        "vmess" => &[
            "uuid",
            "alterId",
            "cipher",
            "tls",
            "sni",
            "servername",
            "skip-cert-verify",
            "fingerprint",
            "reality-opts",
            "udp",
            "alpn",
            "network",
            "ws-opts",
            "grpc-opts",
            "h2-opts",
            "http-opts",
        ],
        "vless" => &[
            "uuid",
            "flow",
            "tls",
            "sni",
            "servername",
            "skip-cert-verify",
            "fingerprint",
            "reality-opts",
            "udp",
            "alpn",
            "network",
            "ws-opts",
            "grpc-opts",
            "h2-opts",
            "http-opts",
        ],
        "hysteria2" => &[
            "password",
            "sni",
            "skip-cert-verify",
            "fingerprint",
            "alpn",
            "udp",
            "obfs",
            "obfs-password",
            "up",
            "down",
            "ports",
            "hop-interval",
        ],
        "tuic" => &[
            "uuid",
            "password",
            "token",
            "sni",
            "skip-cert-verify",
            "fingerprint",
            "alpn",
            "udp",
            "congestion-controller",
            "udp-relay-mode",
            "reduce-rtt",
            "disable-sni",
            "heartbeat-interval",
        ],
        _ => &[],
    }
}

/// Proxy fields that change what goes on the wire. A proxy that turns one on is skipped:
/// talking to its server without it would fail or, worse, leak.
/// (`network` and its options are read by vmess, vless and trojan: `network`.)
pub(super) const PROXY_TRANSPORT: &[&str] = &[
    "shadow-tls",
    "smux",
    "udp-over-tcp",
    "flow",
    "obfs",
    "obfs-opts",
    "ss-opts",
];

/// Proxy fields of mihomo that tune how it dials; tpgate dials its own way and ignores them.
pub(super) const PROXY_IGNORED: &[&str] = &[
    "tfo",
    "mptcp",
    "ip-version",
    "interface-name",
    "routing-mark",
    "client-fingerprint",
    "headers",
    "benchmark-url",
    "benchmark-timeout",
    "udp-over-tcp-version",
    "ech-opts",
    "certificate",
    "private-key",
    // hysteria2: a custom CA (tpgate trusts the system's roots, or `skip-cert-verify`), the
    // initial congestion window and the datagram size (tpgate asks QUIC for it).
    "ca",
    "ca-str",
    "cwnd",
    "udp-mtu",
    // tuic: QUIC tuning tpgate leaves to quinn, and an address to dial instead of `server`.
    "ip",
    "request-timeout",
    "max-udp-relay-packet-size",
    "fast-open",
    "max-open-streams",
    "recv-window-conn",
    "recv-window",
    "disable-mtu-discovery",
    "max-datagram-frame-size",
    "udp-over-stream",
    "udp-over-stream-version",
    // tpgate frames VLESS UDP the plain way, which servers speaking xudp accept too (with a
    // Vision flow, XUDP: what Vision servers take).
    "packet-encoding",
];

/// Fields of a proxy group that tpgate reads.
pub(super) const GROUP_FIELDS: &[&str] = &[
    "name",
    "type",
    "proxies",
    "url",
    "interval",
    "tolerance",
    "lazy",
    "timeout",
    "strategy",
    "use",
    "include-all",
    "include-all-proxies",
    "include-all-providers",
    "filter",
    "exclude-filter",
    "exclude-type",
    "expected-status",
    "hidden",
    "icon",
    "disable-udp",
];

/// The group types tpgate implements.
pub(super) const GROUP_TYPES: &[&str] =
    &["select", "url-test", "fallback", "load-balance", "relay"];

/// Group fields that only matter to mihomo's dialer.
pub(super) const GROUP_IGNORED: &[&str] = &["interface-name", "routing-mark", "max-failed-times"];

/// The candidate closest to `key` by edit distance, when it is close enough to be a typo.
/// Case and `_` versus `-` do not count as differences.
pub(super) fn suggest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let key = normalize(key);
    let limit = match key.len() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    candidates
        .iter()
        .map(|c| (distance(&key, &normalize(c)), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn normalize(text: &str) -> Vec<char> {
    text.chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Levenshtein distance, one row at a time.
fn distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("tproxy_port", TOP), Some("tproxy-port"));
        assert_eq!(suggest("Routing-Mark", TOP), Some("routing-mark"));
        assert_eq!(suggest("mod", TOP), Some("mode"));
        assert_eq!(suggest("fwmrk", INTERCEPT), Some("fwmark"));
        assert_eq!(suggest("lan-interface", INTERCEPT), Some("lan-interfaces"));
        assert_eq!(suggest("colour", TOP), None);
        assert_eq!(suggest("", TOP), None);
        assert_eq!(suggest("proxy", &["Proxy", "Auto"]), Some("Proxy"));
    }

    #[test]
    fn lists_do_not_overlap() {
        for key in TOP {
            assert!(!MIHOMO_IGNORED.contains(key), "{key}");
        }
    }

    #[test]
    fn proxy_field_lists_do_not_overlap() {
        for kind in PROXY_TYPES {
            for field in proxy_fields(kind) {
                assert!(!PROXY_COMMON.contains(field), "{field}");
                assert!(!PROXY_IGNORED.contains(field), "{field}");
            }
        }
        // A transport field skips a proxy only of a type that does not read it (a type's own
        // fields are looked up first: vless reads `flow`, hysteria2 its `obfs`), so each
        // must be one some type leaves unread.
        for field in PROXY_TRANSPORT {
            assert!(!PROXY_IGNORED.contains(field), "{field}");
            assert!(
                PROXY_TYPES
                    .iter()
                    .any(|kind| !proxy_fields(kind).contains(field)),
                "{field} is read by every type: not a skip reason"
            );
        }
        for field in GROUP_FIELDS {
            assert!(!GROUP_IGNORED.contains(field));
        }
    }

    #[test]
    fn distances() {
        let d = |a: &str, b: &str| distance(&normalize(a), &normalize(b));
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("abc", ""), 3);
        assert_eq!(d("same", "same"), 0);
    }
}
