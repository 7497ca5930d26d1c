//! Unit tests of every doctor check, on small hand-written snapshots. The nftables fixtures
//! are real `nft -j list ruleset` output of the rulesets written at the top of each file's
//! tests; the iptables and `ip -j` texts are what those tools print.

mod host;
mod routing;
mod rules;

use super::*;

pub(super) const HEALTHY: &str = include_str!("fixtures/healthy.json");
pub(super) const NOGUARD: &str = include_str!("fixtures/noguard.json");
pub(super) const OUTONLY: &str = include_str!("fixtures/outonly.json");
pub(super) const NEIGHBOURS: &str = include_str!("fixtures/neighbours.json");

/// `ip rule` with tpgate's rules, IPv4 and IPv6.
pub(super) const RULES_V4: &str = r#"[{"priority":0,"src":"all","table":"local"},{"priority":9000,"src":"all","fwmark":"0x1","table":"100"},{"priority":32766,"src":"all","table":"main"},{"priority":32767,"src":"all","table":"default"}]"#;
pub(super) const RULES_V6: &str = r#"[{"priority":0,"src":"all","table":"local"},{"priority":9000,"src":"all","fwmark":"0x1","table":"100"},{"priority":32766,"src":"all","table":"main"}]"#;
pub(super) const ROUTES_V4: &str = r#"[{"type":"local","dst":"default","dev":"lo","table":"100","scope":"host","flags":[]},{"dst":"default","gateway":"203.0.113.254","dev":"eth0","flags":[]},{"dst":"203.0.113.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"203.0.113.1","flags":[]}]"#;
pub(super) const ROUTES_V6: &str = r#"[{"type":"local","dst":"default","dev":"lo","table":"100","metric":1024,"flags":[],"pref":"medium"},{"dst":"default","gateway":"2001:db8::fe","dev":"eth0","metric":1024,"flags":[],"pref":"medium"}]"#;

/// A machine where everything is right (tpgate's table, rules, routes, listener).
pub(super) fn healthy() -> Snapshot {
    let mut rules = parse_ip_rules(Family::V4, RULES_V4).unwrap();
    rules.extend(parse_ip_rules(Family::V6, RULES_V6).unwrap());
    let mut routes = parse_ip_routes(Family::V4, ROUTES_V4).unwrap();
    routes.extend(parse_ip_routes(Family::V6, ROUTES_V6).unwrap());
    let sysctls = [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.br-lan.rp_filter", "2"),
        ("net.ipv4.conf.all.src_valid_mark", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let listener = |tcp, v6| Listener {
        tcp,
        v6,
        port: 7893,
        transparent: Some(true),
    };
    Snapshot {
        root: true,
        kernel_release: Some("6.1.0-18-amd64".into()),
        modules: Some(Modules {
            loaded: ["nft_tproxy", "nft_socket", "nf_tproxy_ipv4"]
                .map(String::from)
                .to_vec(),
            builtin: Some(vec![]),
            available: Some(["xt_TPROXY", "xt_socket"].map(String::from).to_vec()),
        }),
        ipv6: true,
        nft_json: Some(HEALTHY.to_owned()),
        iptables: vec![],
        rules: Some(rules),
        routes,
        sysctls,
        listeners: Some(vec![listener(true, true), listener(false, true)]),
        neighbours: Neighbours::default(),
        expect: Some(expect()),
        notes: vec![],
    }
}

/// tpgate's defaults with a LAN on br-lan.
pub(super) fn expect() -> Expect {
    Expect {
        tproxy_port: 7893,
        routing_mark: 0xff,
        fwmark: Mark::exact(1),
        table: TableId(100),
        lan_interfaces: vec!["br-lan".into()],
        ipv6: true,
        local: true,
        udp: true,
        offload: false,
    }
}

/// Findings with this id.
pub(super) fn with_id<'a>(fs: &'a [Finding], id: &str) -> Vec<&'a Finding> {
    fs.iter().filter(|f| f.id == id).collect()
}

/// The worst severity among findings with this id; panics when there is none.
pub(super) fn worst(fs: &[Finding], id: &str) -> Severity {
    with_id(fs, id)
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or_else(|| panic!("no finding {id} in {fs:#?}"))
}

#[test]
fn healthy_machine_has_no_problems() {
    let fs = diagnose(&healthy());
    let bad: Vec<_> = fs.iter().filter(|f| f.severity >= Severity::Warn).collect();
    assert!(bad.is_empty(), "{bad:#?}");
    for id in [
        "halves",
        "loop-guard",
        "reply-direction",
        "fwmark-rule",
        "route-local",
        "mark-collision",
        "listener",
        "ip-forward",
        "rp-filter",
        "tproxy-hook",
    ] {
        assert_eq!(worst(&fs, id), Severity::Ok, "{id}");
    }
    assert!(!has_problems(&fs));
}

#[test]
fn without_root_says_partial() {
    let snap = Snapshot {
        notes: vec!["nft: Operation not permitted".into()],
        ..Snapshot::default()
    };
    let fs = diagnose(&snap);
    assert!(with_id(&fs, "collect").len() >= 2, "{fs:#?}");
    assert!(fs.iter().any(|f| f.fix == "sudo tpgate doctor"));
    // An unreadable ruleset is not "no interception".
    assert!(with_id(&fs, "halves")[0]
        .title
        .starts_with("ruleset unreadable"));
    let fs = diagnose(&Snapshot {
        expect: Some(expect()),
        ..Snapshot::default()
    });
    assert_eq!(worst(&fs, "halves"), Severity::Info);
}
