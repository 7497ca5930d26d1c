//! What names resolve to outside groups: rule targets (proxies, groups, skipped ones),
//! the `GLOBAL` group, and the API and state settings beside them.

use super::groups::with;
use super::*;

#[test]
fn rules_target_proxies_and_groups() {
    let l = ok(&with(
        "proxy-groups:
  - {name: G, type: select, proxies: [b, a]}
  - {name: S, type: smart, proxies: [a]}
rules:
  - DST-PORT,22,a
  - NETWORK,udp,G,no-resolve
  - IP-CIDR,192.0.2.0/24,v
  - SRC-PORT,1000,S
  - IN-PORT,7890,nobody
  - DST-PORT,23,PASS
  - MATCH,b
",
    ));
    let actions: Vec<_> = l
        .config
        .rules
        .iter()
        .map(|r| (r.text.as_str(), r.verdict))
        .collect();
    assert_eq!(
        actions,
        [
            ("DST-PORT,22,a", Verdict::Proxy(TargetId(0))),
            ("NETWORK,udp,G,no-resolve", Verdict::Proxy(TargetId(2))),
            ("MATCH,b", Verdict::Proxy(TargetId(1))),
        ]
    );
    assert_eq!(
        warnings(&l)[2..],
        [
            "11:5: rules[2]: target `v` was skipped (see its warning); rule skipped, so its \
             traffic falls through to the rules below",
            "12:5: rules[3]: target `S` was skipped (see its warning); rule skipped, so its \
             traffic falls through to the rules below",
            "13:5: rules[4]: IN-PORT rules are not supported yet; rule skipped",
            "14:5: rules[5]: PASS is not supported yet; rule skipped",
        ]
    );
    let m = error_at(&with("rules:\n  - MATCH,A\n"), 6, 5, "rules[0]");
    assert!(m.ends_with("proxy-groups); did you mean `a`?"), "{m}");
    let m = error_at(&with("rules:\n  - 'MATCH, G '\n"), 6, 5, "rules[0]");
    assert!(m.contains("unknown target `G`"), "{m}");
    // A target whose declaration has an error is not reported again.
    assert_eq!(
        error_lines("proxies:\n  - {name: p, type: ss}\nrules:\n  - MATCH,p\n").len(),
        3
    );
}

#[test]
fn global_group_and_mode() {
    let c = ok(&with(
        "mode: global
proxy-groups:
  - {name: P, type: select, proxies: [a]}
  - {name: GLOBAL, type: select, proxies: [P, b, DIRECT]}
",
    ))
    .config;
    assert_eq!(c.global_target, Some(TargetId(3)));
    assert_eq!(c.global_action(), Verdict::Proxy(TargetId(3)));
    let engine = c.rule_engine();
    assert_eq!(engine.global(), Verdict::Proxy(TargetId(3)));
    assert_eq!(Config::default().global_action(), Verdict::Direct);
}

#[test]
fn api_and_state_settings() {
    let l = ok("external-controller: ':9090'\nsecret: 1234\nstate-file: /run/tpgate.json\n");
    let c = &l.config;
    assert_eq!(
        c.external_controller,
        Some("127.0.0.1:9090".parse().unwrap())
    );
    assert_eq!(c.secret.as_deref(), Some("1234"));
    assert_eq!(c.state_file, "/run/tpgate.json");
    assert_eq!(
        warnings(&l),
        [
            "1:22: external-controller: `:9090` means every address in mihomo; tpgate listens on \
          127.0.0.1:9090 only (write 0.0.0.0:9090 to listen on every address)"
        ]
    );
    let m = error_at(
        "external-controller: 0.0.0.0:9090\nsecret: ''\n",
        1,
        22,
        "external-controller",
    );
    assert!(m.contains("set `secret: "), "{m}");
    let l = ok("external-controller: ''\n");
    assert_eq!(l.config.external_controller, None);
    let m = error_at("external-controller: 9090\n", 1, 22, "external-controller");
    assert!(m.contains("127.0.0.1:9090"), "{m}");
    let m = error_at("state-file: state.json\n", 1, 13, "state-file");
    assert!(m.contains("absolute"), "{m}");
}
