//! Routing checks: fwmark rules, `local default dev lo`, mark collisions.

use super::rules::{iptables_only, CLASH_GUIDE};
use super::*;

fn with_rules(mut s: Snapshot, v4: &str) -> Snapshot {
    let mut rules = parse_ip_rules(Family::V4, v4).unwrap();
    rules.extend(parse_ip_rules(Family::V6, RULES_V6).unwrap());
    s.rules = Some(rules);
    s
}

#[test]
fn table_routes_via_wan_instead_of_local() {
    let mut s = healthy();
    s.routes
        .retain(|r| !(r.family == Family::V4 && r.table == "100"));
    s.routes.extend(parse_ip_routes(Family::V4, r#"[{"dst":"default","gateway":"203.0.113.254","dev":"eth0","table":"100","flags":[]}]"#).unwrap());
    let fs = diagnose(&s);
    let f: Vec<_> = with_id(&fs, "route-local")
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert_eq!(f.len(), 1, "only IPv4 is broken: {fs:#?}");
    assert!(
        f[0].title.contains("default via 203.0.113.254 dev eth0"),
        "{}",
        f[0].title
    );
    assert!(f[0].title.contains("IPv4"));
    assert_eq!(
        f[0].fix,
        "ip -4 route replace local default dev lo table 100"
    );
}

#[test]
fn unicast_on_lo_is_not_local_v6() {
    let mut s = healthy();
    s.routes
        .retain(|r| !(r.family == Family::V6 && r.table == "100"));
    s.routes.extend(parse_ip_routes(Family::V6, r#"[{"dst":"default","dev":"lo","table":"100","metric":1024,"flags":[],"pref":"medium"}]"#).unwrap());
    let fs = diagnose(&s);
    let f: Vec<_> = with_id(&fs, "route-local")
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert_eq!(f.len(), 1);
    assert!(
        f[0].title.contains("`default dev lo`") && f[0].title.contains("IPv6"),
        "{}",
        f[0].title
    );
    assert_eq!(
        f[0].fix,
        "ip -6 route replace local default dev lo table 100"
    );
}

#[test]
fn empty_table() {
    let mut s = healthy();
    s.routes.retain(|r| r.table != "100");
    let fs = diagnose(&s);
    assert!(with_id(&fs, "route-local")
        .iter()
        .any(|f| f.title.contains("is empty")));
}

#[test]
fn output_mark_without_ip_rule() {
    let s = with_rules(
        iptables_only(CLASH_GUIDE),
        r#"[{"priority":0,"src":"all","table":"local"},{"priority":32766,"src":"all","table":"main"}]"#,
    );
    let fs = diagnose(&s);
    let f = with_id(&fs, "fwmark-rule");
    assert_eq!(f[0].severity, Severity::Error, "{fs:#?}");
    assert!(f[0].title.contains("mark 0x1"), "{}", f[0].title);
    assert_eq!(f[0].fix, "ip -4 rule add fwmark 0x1 lookup 100 pref 9000 && ip -4 route replace local default dev lo table 100");
}

#[test]
fn fwmark_rule_after_main() {
    let s = with_rules(
        healthy(),
        r#"[{"priority":0,"src":"all","table":"local"},{"priority":32766,"src":"all","table":"main"},{"priority":32767,"src":"all","fwmark":"0x1","table":"100"}]"#,
    );
    let fs = diagnose(&s);
    assert!(
        with_id(&fs, "fwmark-rule")
            .iter()
            .any(|f| f.severity == Severity::Error && f.title.contains("after the main table")),
        "{fs:#?}"
    );
}

#[test]
fn wireguard_rule_taking_our_mark_first() {
    let s = with_rules(
        healthy(),
        r#"[{"priority":0,"src":"all","table":"local"},{"priority":8000,"src":"all","fwmark":"0x1","table":"51820"},{"priority":9000,"src":"all","fwmark":"0x1","table":"100"},{"priority":32766,"src":"all","table":"main"}]"#,
    );
    let fs = diagnose(&s);
    let f: Vec<_> = with_id(&fs, "mark-collision")
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert_eq!(f.len(), 1, "{fs:#?}");
    assert!(f[0].title.contains("WireGuard"), "{}", f[0].title);
    assert!(f[0].fix.contains("fwmark: 0x2"), "{}", f[0].fix);
}

#[test]
fn wg_quick_not_fwmark_after_ours_is_fine() {
    // wg-quick: `not fwmark 0xca6c lookup 51820` at 32765 comes after tpgate's 9000.
    let s = with_rules(
        healthy(),
        r#"[{"priority":0,"src":"all","table":"local"},{"priority":9000,"src":"all","fwmark":"0x1","table":"100"},{"priority":32764,"src":"all","table":"main","suppress_prefixlength":0},{"priority":32765,"not":null,"src":"all","fwmark":"0xca6c","table":"51820"},{"priority":32766,"src":"all","table":"main"}]"#,
    );
    assert_eq!(worst(&diagnose(&s), "mark-collision"), Severity::Ok);
}

#[test]
fn tailscale_and_mwan3_marks() {
    // Tailscale's 0x80000/0xff0000 does not overlap 0x1; mwan3's 0x100/0x3f00 does overlap
    // a fwmark of 0x100.
    let s = with_rules(
        healthy(),
        r#"[{"priority":5270,"src":"all","table":"52"},{"priority":5210,"src":"all","fwmark":"0x80000","fwmask":"0xff0000","table":"main"},{"priority":9000,"src":"all","fwmark":"0x1","table":"100"},{"priority":32766,"src":"all","table":"main"}]"#,
    );
    assert_eq!(worst(&diagnose(&s), "mark-collision"), Severity::Ok);
    let mut s = with_rules(
        healthy(),
        r#"[{"priority":2001,"src":"all","fwmark":"0x100","fwmask":"0x3f00","table":"1"},{"priority":9000,"src":"all","fwmark":"0x100","table":"100"},{"priority":32766,"src":"all","table":"main"}]"#,
    );
    s.nft_json = Some(
        HEALTHY
            .replace("\"value\": 1}", "\"value\": 256}")
            .replace("\"right\": 1}", "\"right\": 256}"),
    );
    let fs = diagnose(&s);
    assert!(
        with_id(&fs, "mark-collision")
            .iter()
            .any(|f| f.severity == Severity::Error && f.title.contains("mwan3")),
        "{fs:#?}"
    );
}

#[test]
fn routing_mark_taken_by_someone() {
    let s = with_rules(
        healthy(),
        r#"[{"priority":100,"src":"all","fwmark":"0xff","table":"200"},{"priority":9000,"src":"all","fwmark":"0x1","table":"100"},{"priority":32766,"src":"all","table":"main"}]"#,
    );
    let fs = diagnose(&s);
    assert!(
        with_id(&fs, "mark-collision")
            .iter()
            .any(|f| f.severity == Severity::Warn && f.title.contains("routing-mark 0xff")),
        "{fs:#?}"
    );
}

#[test]
fn tproxy_ip_only_needs_no_ipv6_rule() {
    // `tproxy ip to 127.0.0.1:7893` in an inet table acts on IPv4 only, and the OUTPUT mark
    // there is reached only after `meta l4proto` (both families): IPv6 needs a rule for the
    // OUTPUT mark alone. Remove IPv6 policy routing: the only IPv6 error is for OUTPUT.
    let mut s = healthy();
    s.nft_json = Some(NOGUARD.to_owned());
    s.rules = Some(parse_ip_rules(Family::V4, RULES_V4).unwrap());
    let fs = diagnose(&s);
    let errs: Vec<_> = with_id(&fs, "fwmark-rule")
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].title.contains("OUTPUT mark") && errs[0].title.contains("IPv6"));
}

#[test]
fn another_ruleset_setting_an_overlapping_mark() {
    // An mwan3-like iptables chain (known by name) whose masked mark includes bit 0x1, and
    // a foreign nft table setting 0x1 outright.
    let mut s = healthy();
    s.iptables = vec![IptablesDump {
        family: Family::V4,
        variant: IptVariant::Nft,
        text: "*mangle\n:PREROUTING ACCEPT [0:0]\n:mwan3_hook - [0:0]\n-A PREROUTING -j mwan3_hook\n-A mwan3_hook -j MARK --set-xmark 0x1/0x3f01\nCOMMIT\n".into(),
    }];
    let mut json: serde_json::Value = serde_json::from_str(HEALTHY).unwrap();
    let items = json["nftables"].as_array_mut().unwrap();
    items.push(serde_json::json!({"chain": {"family": "ip", "table": "vpn", "name": "pre", "handle": 1, "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}}));
    items.push(serde_json::json!({"rule": {"family": "ip", "table": "vpn", "chain": "pre", "handle": 2, "expr": [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1}}]}}));
    s.nft_json = Some(json.to_string());
    let fs = diagnose(&s);
    let warns: Vec<_> = with_id(&fs, "mark-collision")
        .into_iter()
        .filter(|f| f.severity == Severity::Warn)
        .collect();
    assert_eq!(warns.len(), 2, "{warns:#?}");
    assert!(warns
        .iter()
        .any(|f| f.title.starts_with("mwan3 sets mark 0x1/0x3f01")));
    assert!(warns.iter().any(|f| f
        .title
        .starts_with("another ruleset sets mark 0x1 (nft ip vpn chain pre")));
    // tpgate's own table (same origin as its TPROXY rule) is never reported.
    assert!(diagnose(&healthy())
        .iter()
        .all(|f| f.severity != Severity::Warn));
}
