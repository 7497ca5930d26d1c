//! Which keys a config may hold: tpgate's own, and the mihomo/Clash keys it accepts but
//! ignores for now (so an existing mihomo config loads with warnings instead of failing).
//! Also the "did you mean" suggestion for unknown keys.

/// Top-level keys tpgate reads.
pub(super) const TOP: &[&str] = &[
    "tproxy-port",
    "routing-mark",
    "ipv6",
    "mode",
    "log-level",
    "rules",
    "intercept",
];

/// Keys of the `intercept` section.
pub(super) const INTERCEPT: &[&str] = &[
    "backend",
    "lan-interfaces",
    "local",
    "udp",
    "fwmark",
    "route-table",
    "rule-priority",
    "bypass",
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
    "external-controller",
    "external-controller-tls",
    "external-controller-unix",
    "external-controller-pipe",
    "external-controller-cors",
    "external-ui",
    "external-ui-name",
    "external-ui-url",
    "external-doh-server",
    "secret",
    "interface-name",
    "keep-alive-interval",
    "keep-alive-idle",
    "disable-keep-alive",
    "proxies",
    "proxy-groups",
    "proxy-providers",
    "rule-providers",
    "sub-rules",
    "script",
    "dns",
    "hosts",
    "use-hosts",
    "use-system-hosts",
    "sniffer",
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
    "geodata-mode",
    "geodata-loader",
    "geosite-matcher",
    "geo-auto-update",
    "geo-update-interval",
    "geox-url",
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

/// The candidate closest to `key` by edit distance, when it is close enough to be a typo.
/// Case and `_` versus `-` do not count as differences.
pub(super) fn suggest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let key: Vec<char> = key
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let limit = match key.len() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    candidates
        .iter()
        .map(|c| (distance(&key, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, one row at a time.
fn distance(a: &[char], b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
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
    }

    #[test]
    fn lists_do_not_overlap() {
        for key in TOP {
            assert!(!MIHOMO_IGNORED.contains(key), "{key}");
        }
    }

    #[test]
    fn distances() {
        let d = |a: &str, b| distance(&a.chars().collect::<Vec<_>>(), b);
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("abc", ""), 3);
        assert_eq!(d("same", "same"), 0);
    }
}
