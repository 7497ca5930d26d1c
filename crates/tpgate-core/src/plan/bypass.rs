//! The destinations never intercepted: reserved and private ranges, plus the user's own.
//! The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)
//! are deliberately absent: they are ordinary global addresses to a router, and hosts with
//! global addresses must be intercepted like private ones.

use ipnet::IpNet;

/// IPv4 ranges that are never proxied. 198.18.0.0/15 is left out on purpose: it is the
/// fake-ip range of Clash-style DNS.
pub const DEFAULT_BYPASS_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// IPv6 ranges that are never proxied.
pub const DEFAULT_BYPASS_V6: &[&str] = &[
    "::/127",
    "::ffff:0:0/96",
    "64:ff9b:1::/48",
    "100::/64",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Built-in ranges plus `user`, split by family, merged (no overlaps: nft interval sets
/// reject overlapping elements) and sorted.
pub(super) fn merged(user: &[IpNet]) -> (Vec<IpNet>, Vec<IpNet>) {
    let builtin = DEFAULT_BYPASS_V4
        .iter()
        .chain(DEFAULT_BYPASS_V6)
        .filter_map(|s| s.parse::<IpNet>().ok());
    let all: Vec<IpNet> = builtin.chain(user.iter().map(IpNet::trunc)).collect();
    let all = IpNet::aggregate(&all);
    let (v4, v6) = all.into_iter().partition(|n| matches!(n, IpNet::V4(_)));
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_ranges_parse() {
        for s in DEFAULT_BYPASS_V4.iter().chain(DEFAULT_BYPASS_V6) {
            assert!(s.parse::<IpNet>().is_ok(), "{s}");
        }
    }

    #[test]
    fn user_ranges_are_merged_without_overlap() {
        let user =
            ["10.1.0.0/16", "192.0.2.7/24", "2001:db8::1/32"].map(|s| s.parse::<IpNet>().unwrap());
        let (v4, v6) = merged(&user);
        // 10.1/16 is inside 10/8 and disappears; 192.0.2.7/24 is truncated to its network.
        assert!(!v4.iter().any(|n| n.to_string() == "10.1.0.0/16"));
        assert!(v4.iter().any(|n| n.to_string() == "192.0.2.0/24"));
        assert!(v6.iter().any(|n| n.to_string() == "2001:db8::/32"));
        for w in v4.windows(2).chain(v6.windows(2)) {
            assert!(
                !w[0].contains(&w[1].network()),
                "{} overlaps {}",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn documentation_ranges_are_not_bypassed_by_default() {
        let (v4, v6) = merged(&[]);
        for addr in ["192.0.2.1", "198.51.100.2", "203.0.113.2", "2001:db8:1::2"] {
            let ip: std::net::IpAddr = addr.parse().unwrap();
            assert!(
                !v4.iter().chain(&v6).any(|n| n.contains(&ip)),
                "{addr} must be intercepted"
            );
        }
    }
}
