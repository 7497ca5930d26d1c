//! `proxy-groups:`: members (declared later, skipped, unknown), ids, health checks, cycles.

use std::time::Duration;

use super::*;

const PROXIES: &str = "proxies:
  - {name: a, type: socks5, server: 192.0.2.1, port: 1080}
  - {name: b, type: trojan, server: 192.0.2.2, port: 443, password: x}
  - {name: v, type: snell, server: 192.0.2.3, port: 443}
";

/// PROXIES (ids a=0, b=1; v skipped) followed by `rest`, which starts on line 5.
pub(super) fn with(rest: &str) -> String {
    format!("{PROXIES}{rest}")
}

fn t(id: u32) -> Member {
    Member::Target(TargetId(id))
}

fn health(url: &str, interval: u64, lazy: bool, timeout: u64) -> Option<HealthCheck> {
    Some(HealthCheck {
        expected_status: None,
        url: url.to_owned(),
        interval: Duration::from_secs(interval),
        lazy,
        timeout: Duration::from_millis(timeout),
    })
}

#[test]
fn every_kind_with_defaults_and_forward_references() {
    let l = ok(&with(
        "proxy-groups:
  - {name: Sel, type: select, proxies: [Auto, a, DIRECT, REJECT-DROP]}
  - {name: Auto, type: url-test, proxies: [a, b]}
  - {name: Fb, type: fallback, proxies: [b, a], url: 'http://192.0.2.9/ok', interval: 0, lazy: false, timeout: 800}
  - {name: Lb, type: load-balance, proxies: [a, b], strategy: round-robin}
  - {name: Lb2, type: Load-Balance, proxies: [a, b], tolerance: 10}
  - {name: Chain, type: relay, proxies: [a, Lb, b]}
  - {name: Checked, type: select, proxies: [Sel], url: 'https://example.com/204', interval: 60}
  - {name: Tol, type: url-test, proxies: [b], tolerance: 20}
",
    ));
    let c = &l.config;
    let kinds: Vec<_> = c.groups.iter().map(|g| (g.name.as_str(), g.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("Sel", GroupKind::Select),
            (
                "Auto",
                GroupKind::UrlTest {
                    tolerance: Duration::from_millis(150)
                }
            ),
            ("Fb", GroupKind::Fallback),
            ("Lb", GroupKind::LoadBalance(LbStrategy::RoundRobin)),
            ("Lb2", GroupKind::LoadBalance(LbStrategy::ConsistentHashing)),
            ("Chain", GroupKind::Relay),
            ("Checked", GroupKind::Select),
            (
                "Tol",
                GroupKind::UrlTest {
                    tolerance: Duration::from_millis(20)
                }
            ),
        ]
    );
    // Proxies are 0 and 1, groups 2.. in file order.
    let members: Vec<_> = c.groups.iter().map(|g| g.members.clone()).collect();
    assert_eq!(
        members,
        [
            vec![t(3), t(0), Member::Direct, Member::Reject],
            vec![t(0), t(1)],
            vec![t(1), t(0)],
            vec![t(0), t(1)],
            vec![t(0), t(1)],
            vec![t(0), t(5), t(1)],
            vec![t(2)],
            vec![t(1)],
        ]
    );
    let default = health(DEFAULT_HEALTH_URL, 300, true, 5000);
    let checks: Vec<_> = c.groups.iter().map(|g| g.health.clone()).collect();
    assert_eq!(
        checks,
        [
            None,
            default.clone(),
            health("http://192.0.2.9/ok", 0, false, 800),
            default.clone(),
            default.clone(),
            None,
            health("https://example.com/204", 60, true, 5000),
            default,
        ]
    );
    assert_eq!(c.target_name(TargetId(2)), Some("Sel"));
    assert!(matches!(c.target(TargetId(9)), Some(Target::Group(g)) if g.name == "Tol"));
    assert_eq!(c.target(TargetId(10)), None);
    assert_eq!(
        warnings(&l),
        [
            "4:21: proxies[2].type: type snell is not supported by tpgate; proxy `v` skipped",
            "10:54: proxy-groups[4].tolerance: only used by url-test groups; ignored"
        ]
    );
    assert_eq!(c.global_target, None);
    assert_eq!(c.global_action(), Verdict::Proxy(TargetId(0)));
}

#[test]
fn member_errors_point_at_the_member() {
    let m = error_at(
        &with("proxy-groups:\n  - {name: G, type: select, proxies: [a, Autp]}\n  - {name: Auto, type: select, proxies: [b]}\n"),
        6,
        42,
        "proxy-groups[0].proxies[1]",
    );
    assert!(
        m.ends_with("unknown proxy or group `Autp`; did you mean `Auto`?"),
        "{m}"
    );
    let m = error_at(
        &with(
            "proxy-groups:\n  - name: G\n    type: select\n    proxies:\n      - a\n      - zzzz\n",
        ),
        10,
        9,
        "proxy-groups[0].proxies[1]",
    );
    assert!(m.ends_with("unknown proxy or group `zzzz`"), "{m}");
    let m = error_at(
        &with("proxy-groups:\n  - {name: R, type: relay, proxies: [a, DIRECT]}\n"),
        6,
        41,
        "proxy-groups[0].proxies[1]",
    );
    assert!(m.contains("cannot be a hop of a relay"), "{m}");
    let m = error_at(
        &with("proxy-groups:\n  - {name: G, type: select, proxies: [[a]]}\n"),
        6,
        39,
        "proxy-groups[0].proxies[0]",
    );
    assert!(m.contains("expected a string"), "{m}");
}

#[test]
fn group_field_errors() {
    let at = |group: &str, col: usize, path: &str| {
        error_at(
            &with(&format!("proxy-groups:\n  - {group}\n")),
            6,
            col,
            path,
        )
    };
    let m = at(
        "{name: G, type: select, proxies: []}",
        38,
        "proxy-groups[0].proxies",
    );
    assert!(m.contains("needs at least one member"), "{m}");
    let m = at("{name: G, type: relay}", 5, "proxy-groups[0].proxies");
    assert!(m.contains("a relay group needs at least one member"), "{m}");
    let m = at(
        "{name: G, type: url-test, proxies: [a], interval: soon}",
        55,
        "proxy-groups[0].interval",
    );
    assert!(m.contains("found `soon`"), "{m}");
    let m = at(
        "{name: G, type: url-test, proxies: [a], timeout: 0}",
        54,
        "proxy-groups[0].timeout",
    );
    assert!(m.contains("fail every check"), "{m}");
    let m = at(
        "{name: G, type: url-test, proxies: [a], url: 'ftp://x/'}",
        50,
        "proxy-groups[0].url",
    );
    assert!(m.contains("http:// or https://"), "{m}");
    let m = at(
        "{name: G, type: url-test, proxies: [a], url: 'http:///x'}",
        50,
        "proxy-groups[0].url",
    );
    assert!(m.contains("no host"), "{m}");
    let m = at(
        "{name: G, type: url-test, proxies: [a], lazy: 1}",
        51,
        "proxy-groups[0].lazy",
    );
    assert!(m.contains("true or false"), "{m}");
    let m = at(
        "{name: G, type: load-balance, proxies: [a], strategy: random}",
        59,
        "proxy-groups[0].strategy",
    );
    assert!(m.contains("consistent-hashing, round-robin"), "{m}");
    let m = at("{type: select, proxies: [a]}", 5, "proxy-groups[0]");
    assert!(m.ends_with("missing `name`"), "{m}");
    let m = at("{name: G, proxies: [a]}", 5, "proxy-groups[0]");
    assert!(m.ends_with("missing `type`"), "{m}");
    let m = at(
        "{name: REJECT, type: select, proxies: [a]}",
        12,
        "proxy-groups[0].name",
    );
    assert!(m.contains("built-in"), "{m}");
    let m = at("G", 5, "proxy-groups[0]");
    assert!(m.contains("a proxy group is a mapping"), "{m}");
    let m = error_at(&with("proxy-groups: {}\n"), 5, 15, "proxy-groups");
    assert!(m.contains("expected a list"), "{m}");
}

#[test]
fn cycles_are_errors_at_the_group_name() {
    let text = with(
        "proxy-groups:
  - {name: A, type: select, proxies: [a, B]}
  - {name: B, type: fallback, proxies: [C]}
  - {name: C, type: select, proxies: [A, b]}
  - {name: S, type: select, proxies: [S]}
  - {name: Ok, type: select, proxies: [A, C]}
",
    );
    assert_eq!(
        error_lines(&text),
        [
            "6:12: proxy-groups[0].name: group `A` contains itself: A -> B -> C -> A",
            "9:12: proxy-groups[3].name: group `S` contains itself: S -> S",
        ]
    );
}

#[test]
fn skipped_members_and_groups() {
    let l = ok(&with(
        "proxy-groups:
  - {name: Sel, type: select, proxies: [v, a, Smart, a, PASS]}
  - {name: OnlyV, type: url-test, proxies: [v]}
  - {name: Smart, type: smart, proxies: [a]}
  - {name: Chain, type: relay, proxies: [a, v, b]}
  - name: Prov
    type: select
    use: [sub]
    filter: HK
    icon: x.png
    hidden: true
    lazzy: false
  - {name: Sticky, type: load-balance, proxies: [a], strategy: sticky-sessions}
  - {name: Sel2, type: select, proxies: [a], interval: 60}
proxy-providers:
  sub:
    type: inline
    payload:
      - {name: HK 1, type: socks5, server: 192.0.2.9, port: 1080}
      - {name: US 1, type: socks5, server: 192.0.2.10, port: 1080}
",
    ));
    assert_eq!(
        warnings(&l),
        [
            "4:21: proxies[2].type: type snell is not supported by tpgate; proxy `v` skipped",
            "6:54: proxy-groups[0].proxies[3]: `a` is listed twice; ignored",
            "6:57: proxy-groups[0].proxies[4]: PASS cannot be a group member; dropped",
            "7:12: proxy-groups[1].name: group `OnlyV` has no member tpgate can use (every \
             member was skipped); it rejects all traffic",
            "8:25: proxy-groups[2].type: type smart is not supported by tpgate; group `Smart` \
             skipped",
            "9:12: proxy-groups[3].name: relay `Chain` lost a hop that tpgate skipped, so the \
             chain cannot be built; the group rejects all traffic",
            "16:5: proxy-groups[4].lazzy: unknown field (did you mean `lazy`?); ignored",
            "17:64: proxy-groups[5].strategy: sticky-sessions is not supported yet; \
             consistent-hashing is used",
            "18:46: proxy-groups[6].interval: a group `Sel2` without `url` is not \
             health-checked; ignored",
        ]
    );
    let c = &l.config;
    let prov = c.groups.iter().find(|g| g.name == "Prov").expect("Prov");
    assert_eq!((prov.hidden, prov.icon.as_deref()), (true, Some("x.png")));
    let groups: Vec<_> = c
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.members.clone()))
        .collect();
    // a=0, b=1; Sel=2, OnlyV=3, Chain=4, Prov=5, Sticky=6, Sel2=7 (Smart skipped).
    assert_eq!(
        groups,
        [
            ("Sel", vec![t(0)]),
            ("OnlyV", vec![Member::Reject]),
            ("Chain", vec![Member::Reject]),
            ("Prov", vec![]),
            ("Sticky", vec![t(0)]),
            ("Sel2", vec![t(0)]),
        ]
    );
    assert_eq!(
        c.groups[4].kind,
        GroupKind::LoadBalance(LbStrategy::ConsistentHashing)
    );
    // `use` with `filter`: the provider's HK proxy only; `icon` and `hidden` are kept.
    let prov = &c.groups[3];
    assert_eq!(
        c.expand_group(prov, &c.provided()),
        [Slot::Provided {
            provider: 0,
            index: 0
        }]
    );
    assert!(prov.hidden && prov.icon.as_deref() == Some("x.png"));
}

/// mihomo's member order: written `proxies` (plus every proxy, sorted by name, for
/// `include-all-proxies`, through `filter`), then each provider of `use` through `filter`
/// (regex by regex); `exclude-filter` and `exclude-type` over all; nothing left: REJECT.
#[test]
fn provider_and_include_all_members_in_mihomo_order() {
    let l = ok("proxies:
  - {name: zz HK, type: socks5, server: 192.0.2.1, port: 1}
  - {name: aa JP, type: http, server: 192.0.2.2, port: 1}
  - {name: mm HK, type: ss, server: 192.0.2.3, port: 1, cipher: aes-128-gcm, password: x}
proxy-providers:
  p1:
    type: inline
    payload:
      - {name: p1 JP, type: socks5, server: 192.0.2.11, port: 1}
      - {name: p1 HK, type: socks5, server: 192.0.2.12, port: 1}
  p0:
    type: inline
    filter: HK|JP
    exclude-type: http
    override: {additional-suffix: ' (p0)', udp: true}
    payload:
      - {name: p0 HK, type: socks5, server: 192.0.2.21, port: 1}
      - {name: p0 US, type: socks5, server: 192.0.2.22, port: 1}
      - {name: p0 JP, type: http, server: 192.0.2.23, port: 1}
proxy-groups:
  - {name: All, type: select, include-all-proxies: true}
  - {name: HKfirst, type: select, proxies: [DIRECT], include-all: true, filter: 'HK`JP'}
  - {name: NoHttp, type: select, include-all-proxies: true, exclude-type: Http|shadowsocks}
  - {name: Empty, type: select, use: [p1], filter: 'US'}
  - {name: Twice, type: select, use: [p1, p0], filter: 'JP`HK'}
");
    let c = &l.config;
    let t = |i| Slot::Member(Member::Target(TargetId(i)));
    let pv = |provider, index| Slot::Provided { provider, index };
    let exp = |name: &str| {
        let g = c.groups.iter().find(|g| g.name == name).unwrap();
        c.expand_group(g, &c.provided())
    };
    // Sorted by name: aa JP(1), mm HK(2), zz HK(0).
    assert_eq!(exp("All"), [t(1), t(2), t(0)]);
    // Providers sorted by name for include-all: p0 (index 1), then p1 (index 0).
    let p0: Vec<&str> = c.proxy_providers[1]
        .proxies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        p0,
        ["p0 HK (p0)"],
        "provider filter, exclude-type, override"
    );
    assert!(c.proxy_providers[1].proxies[0].udp);
    // Two providers (include-all) and two regexes: mihomo reorders everything by regex,
    // what matches none (DIRECT) at the end.
    assert_eq!(
        exp("HKfirst"),
        [
            t(2),
            t(0),
            pv(1, 0),
            pv(0, 1),
            t(1),
            pv(0, 0),
            Slot::Member(Member::Direct),
        ]
    );
    assert_eq!(exp("NoHttp"), [t(0)]);
    assert_eq!(exp("Empty"), [Slot::Member(Member::Reject)]);
    // Two providers and two regexes: everything reordered by regex (JP first).
    assert_eq!(exp("Twice"), [pv(0, 0), pv(0, 1), pv(1, 0)]);
    assert!(
        warnings(&l)
            .iter()
            .any(|w| w.contains("group `Empty` has no member tpgate can use")),
        "{:?}",
        warnings(&l)
    );
}

#[test]
fn group_provider_errors() {
    let m = error_at(
        "proxy-groups:\n  - {name: G, type: select, use: [nope]}\n",
        2,
        35,
        "proxy-groups[0].use[0]",
    );
    assert!(m.contains("unknown proxy provider `nope`"), "{m}");
    let m = error_at(
        "proxy-groups:\n  - {name: G, type: select, proxies: [DIRECT], filter: '('}\n",
        2,
        56,
        "proxy-groups[0].filter",
    );
    assert!(m.contains("not a valid regex"), "{m}");
    let m = error_at(
        "proxy-groups:\n  - {name: G, type: select}\n",
        2,
        5,
        "proxy-groups[0].proxies",
    );
    assert!(m.contains("needs at least one member"), "{m}");
}
