//! Every kind of error, each with its exact line, column and path.

use super::*;
#[test]
fn wrong_types_point_at_the_value() {
    assert!(error_at("tproxy-port: abc\n", 1, 14, "tproxy-port").contains("found `abc`"));
    assert!(error_at("intercept: [1]\n", 1, 12, "intercept")
        .contains("expected a mapping, found a list"));
    assert!(error_at("ipv6: 'yes'\n", 1, 7, "ipv6").contains("true or false"));
    assert!(error_at("mode: [rule]\n", 1, 7, "mode").contains("found a list"));
    assert!(error_at("mode: fast\n", 1, 7, "mode").contains("rule, global, direct"));
    assert!(error_at("log-level: loud\n", 1, 12, "log-level")
        .contains("silent, error, warning, info, debug"));
    assert!(error_at("rules: DST-PORT,25,REJECT\n", 1, 8, "rules").contains("expected a list"));
    assert!(error_at("tproxy-port:\n", 1, 12, "tproxy-port").contains("missing value"));
    assert!(error_at("tproxy-port: 1.5\n", 1, 14, "tproxy-port").contains("found `1.5`"));
    assert!(
        error_at("intercept:\n  local: 1\n", 2, 10, "intercept.local").contains("true or false")
    );
    assert!(error_at(
        "intercept:\n  bypass: 10.0.0.0/8\n",
        2,
        11,
        "intercept.bypass"
    )
    .contains("expected a list"));
    assert!(error_at(
        "intercept:\n  lan-interfaces: [1]\n",
        2,
        20,
        "intercept.lan-interfaces[0]"
    )
    .contains("expected a string"));
    assert!(error_at("- tproxy-port: 1\n", 1, 1, "").contains("a config is a mapping"));
    assert!(error_at("1: x\n", 1, 1, "").contains("keys are strings"));
}

#[test]
fn ranges_and_reserved_values() {
    assert!(error_at("tproxy-port: 0\n", 1, 14, "tproxy-port").contains("nonzero"));
    assert!(error_at("tproxy-port: 70000\n", 1, 14, "tproxy-port").contains("out of range"));
    assert!(error_at("routing-mark: 0\n", 1, 15, "routing-mark").contains("nonzero"));
    assert!(
        error_at("routing-mark: 0x100000000\n", 1, 15, "routing-mark").contains("out of range")
    );
    assert!(error_at("routing-mark: -1\n", 1, 15, "routing-mark").contains("negative"));
    for (table, name) in [
        (0, "unspec"),
        (253, "default"),
        (254, "main"),
        (255, "local"),
    ] {
        let text = format!("intercept:\n  route-table: {table}\n");
        assert!(error_at(&text, 2, 16, "intercept.route-table").contains(name));
    }
    assert!(error_at(
        "intercept: {rule-priority: 32766}",
        1,
        28,
        "intercept.rule-priority"
    )
    .contains("32766"));
    assert!(error_at(
        "intercept: {rule-priority: 0}",
        1,
        28,
        "intercept.rule-priority"
    )
    .contains("local"));
    assert_eq!(
        ok("intercept: {rule-priority: 32765}")
            .config
            .intercept
            .rule_priority,
        32765
    );
}

#[test]
fn marks() {
    assert!(error_at("intercept:\n  fwmark: 0\n", 2, 11, "intercept.fwmark").contains("nonzero"));
    assert!(error_at(
        "intercept:\n  fwmark: '0x3/0x1'\n",
        2,
        11,
        "intercept.fwmark"
    )
    .contains("outside the mask"));
    assert!(
        error_at("intercept:\n  fwmark: 'one'\n", 2, 11, "intercept.fwmark").contains("0x1/0xff")
    );
}

#[test]
fn routing_mark_must_not_match_fwmark() {
    let m = error_at("routing-mark: 1\n", 1, 15, "routing-mark");
    assert!(
        m.contains("0x1 matches intercept.fwmark 0x1") && m.contains("loop"),
        "{m}"
    );
    // The mask matters: 0xff & 0x1 == 0x1.
    let m = error_at(
        "routing-mark: 0xff\nintercept:\n  fwmark: 0x1/0x1\n",
        1,
        15,
        "routing-mark",
    );
    assert!(m.contains("0x1/0x1"), "{m}");
    // With the default routing-mark, the fwmark that collides is blamed.
    let m = error_at("intercept:\n  fwmark: 0xff\n", 2, 11, "intercept.fwmark");
    assert!(m.contains("default routing-mark 0xff"), "{m}");
    ok("routing-mark: 0x100\nintercept:\n  fwmark: 0x1/0xff\n");
    // An invalid fwmark is reported once, not again as a collision.
    assert_eq!(errors("routing-mark: 1\nintercept: {fwmark: 0}\n").len(), 1);
}

#[test]
fn interfaces_and_bypass() {
    assert!(error_at(
        "intercept: {lan-interfaces: [toolonginterface0]}",
        1,
        30,
        "intercept.lan-interfaces[0]"
    )
    .contains("1 to 15"));
    assert!(error_at(
        "intercept: {lan-interfaces: ['a/b']}",
        1,
        30,
        "intercept.lan-interfaces[0]"
    )
    .contains("'/'"));
    assert!(error_at(
        "intercept: {lan-interfaces: ['eth 0']}",
        1,
        30,
        "intercept.lan-interfaces[0]"
    )
    .contains("' '"));
    assert!(error_at(
        "intercept: {lan-interfaces: [eth0, eth0]}",
        1,
        36,
        "intercept.lan-interfaces[1]"
    )
    .contains("twice"));
    assert!(error_at(
        "intercept:\n  bypass:\n    - 10.0.0.0/8\n    - 10.0.0.0/33\n",
        4,
        7,
        "intercept.bypass[1]"
    )
    .contains("not a CIDR"));
    // ipv6: false with IPv6 entries is fine.
    let c =
        ok("ipv6: false\nintercept: {bypass: ['fd00::/8']}\nrules: ['IP-CIDR6,fd00::/8,REJECT']")
            .config;
    assert_eq!(c.intercept.bypass, [net("fd00::/8")]);
}

#[test]
fn backends() {
    let backend = |text: &str| ok(text).config.intercept.backend;
    assert_eq!(backend("intercept: {backend: NFTables}"), Backend::Nftables);
    assert_eq!(
        backend("intercept:\n  backend: iptables\n"),
        Backend::Iptables
    );
    assert_eq!(backend("intercept: {backend: auto}"), Backend::Auto);
    assert!(
        error_at("intercept: {backend: pf}", 1, 22, "intercept.backend")
            .contains("unknown backend `pf`; expected nftables, iptables or auto")
    );
    assert!(error_at(
        "intercept: {backend: [nftables]}",
        1,
        22,
        "intercept.backend"
    )
    .contains("expected"));
}

#[test]
fn iptables_variants() {
    let variant = |text: &str| ok(text).config.intercept.iptables_variant;
    assert_eq!(variant("intercept: {}"), IptablesVariant::Auto);
    assert_eq!(
        variant("intercept: {backend: iptables, iptables-variant: nft}"),
        IptablesVariant::Nft
    );
    assert_eq!(
        variant("intercept: {iptables-variant: Legacy}"),
        IptablesVariant::Legacy
    );
    assert_eq!(
        variant("intercept: {iptables-variant: iptables-legacy}"),
        IptablesVariant::Legacy
    );
    let m = error_at(
        "intercept:\n  backend: iptables\n  iptables-variant: xtables\n",
        3,
        21,
        "intercept.iptables-variant",
    );
    assert!(
        m.contains("unknown iptables variant `xtables`; expected auto, nft or legacy"),
        "{m}"
    );
    let m = strict_error_at(
        "intercept: {iptables_varient: nft}",
        1,
        13,
        "intercept.iptables_varient",
    );
    assert!(m.contains("iptables-variant"), "{m}");
}

#[test]
fn unknown_keys_point_at_the_key_with_a_suggestion() {
    let m = strict_error_at("mode: rule\ntproxy_port: 1\n", 2, 1, "tproxy_port");
    assert!(
        m.ends_with("unknown key `tproxy_port`; did you mean `tproxy-port`?; ignored"),
        "{m}"
    );
    let m = strict_error_at(
        "intercept:\n  local: true\n  fwmrk: 1\n",
        3,
        3,
        "intercept.fwmrk",
    );
    assert!(m.ends_with("did you mean `fwmark`?; ignored"), "{m}");
    let m = strict_error_at("colour: blue\n", 1, 1, "colour");
    assert!(m.ends_with("unknown key `colour`; ignored"), "{m}");
    let m = strict_error_at("fwmark: 1\n", 1, 1, "fwmark");
    assert!(m.contains("belongs in the `intercept` section"), "{m}");
    let m = strict_error_at(
        "intercept:\n  tproxy-port: 1\n",
        2,
        3,
        "intercept.tproxy-port",
    );
    assert!(m.contains("is a top-level key"), "{m}");
    let m = strict_error_at("sock-port: 1\n", 1, 1, "sock-port");
    assert!(m.ends_with("did you mean `socks-port`?; ignored"), "{m}");
    // Keys that only hold anchors, `x-` keys and Clash for Windows leftovers are no typo.
    let l = ok("x-common: {a: 1}\nrule-anchor:\n  ip: &ip {type: http}\n  dom: &dom {type: file}\npr: &pr {type: select}\ncfw-latency-timeout: 1\ncfw-profiles-path: {}\n");
    assert_eq!(
        warnings(&l),
        [
            "6:1: cfw-latency-timeout: not used by tpgate yet; ignored",
            "7:1: cfw-profiles-path: a Clash for Windows setting; ignored"
        ]
    );
}

#[test]
fn duplicate_keys() {
    let m = error_at("mode: rule\nipv6: true\nmode: global\n", 3, 1, "mode");
    assert!(m.contains("duplicate key (first at 1:1)"), "{m}");
    let m = error_at(
        "intercept:\n  udp: true\n  udp: false\n",
        3,
        3,
        "intercept.udp",
    );
    assert!(m.contains("first at 2:3"), "{m}");
    // mihomo keys are checked too.
    error_at("dns: {}\ndns: {}\n", 2, 1, "dns");
}

#[test]
fn syntax_errors_carry_the_scanner_position() {
    let e = errors("mode: rule\nkey: 'unterminated\n");
    assert_eq!((e.len(), e[0].line, e[0].col), (1, 2, 6), "{e:#?}");
    assert!(e[0].message.starts_with("YAML syntax error"), "{e:#?}");
    let e = errors("a: b: c\n");
    assert_eq!((e[0].line, e[0].col), (1, 5), "{e:#?}");
    let e = errors("mode: rule\n---\nmode: global\n");
    assert_eq!((e[0].line, e[0].col), (2, 1), "{e:#?}");
}

#[test]
fn rule_errors_and_warnings() {
    let m = error_at("rules:\n  - DST-PORT,0-99999,REJECT\n", 2, 5, "rules[0]");
    assert!(m.contains("out of range"), "{m}");
    assert!(
        error_at("rules:\n  - IP-CIDR,10.0.0.0/33,DIRECT\n", 2, 5, "rules[0]")
            .contains("not a CIDR")
    );
    assert!(
        error_at("rules:\n  - IP-CIDR,10.0.0.0/8\n", 2, 5, "rules[0]").contains("missing target")
    );
    // mihomo ignores options it does not know; tpgate says so.
    assert_eq!(
        warnings(&ok("rules:\n  - MATCH,DIRECT,x\n")),
        ["2:5: rules[0]: option `x` is not read (mihomo ignores it too); ignored"]
    );
    assert!(
        error_at("rules:\n  - [MATCH, DIRECT]\n", 2, 5, "rules[0]").contains("a rule is a string")
    );
    let m = error_at(
        "rules:\n  - DST-PORT,22,DIRECT\n  - AND,((IP-CIDR,10.0.0.0/8,src),(NETWORK,udp)),DIRECT\n",
        3,
        5,
        "rules[1]",
    );
    assert!(
        m.contains("unexpected `src` in `(IP-CIDR,10.0.0.0/8,src)`"),
        "{m}"
    );
    let m = error_at(
        "rules:\n  - SUB-RULE,(IP-CIDR,10.0.0.0/33,no-resolve),web\nsub-rules:\n  web: []\n",
        2,
        5,
        "rules[0]",
    );
    assert!(m.contains("not a CIDR"), "{m}");
    let m = error_at("rules:\n  - MATCH,Proxy\n", 2, 5, "rules[0]");
    assert!(m.contains("unknown target `Proxy`"), "{m}");

    let l = ok("rules:\n  - IN-PORT,7890,DIRECT\n  - in-type,HTTP,DIRECT\n  - MATCH,DIRECT\n");
    let w: Vec<_> = l
        .warnings
        .iter()
        .map(|w| (w.line, w.col, w.message.as_str()))
        .collect();
    assert_eq!(
        w,
        [
            (
                2,
                5,
                "rules[0]: IN-PORT rules are not supported yet; rule skipped"
            ),
            (
                3,
                5,
                "rules[1]: IN-TYPE rules are not supported yet; rule skipped"
            ),
        ]
    );
    assert_eq!(l.config.rules.len(), 1);
    assert_eq!(l.config.rules[0].matcher, Matcher::Match);
}

#[test]
fn every_error_is_collected() {
    let e = strict_errors(
        "tproxy-port: abc\nbogus: 1\nintercept:\n  fwmark: 0\n  route-table: 254\nrules:\n  - MATCH\n  - NETWORK,sctp,DIRECT\n",
    );
    let at: Vec<_> = e.iter().map(|e| (e.line, e.col, e.path.as_str())).collect();
    assert_eq!(
        at,
        [
            (1, 14, "tproxy-port"),
            (2, 1, "bogus"),
            (4, 11, "intercept.fwmark"),
            (5, 16, "intercept.route-table"),
            (7, 5, "rules[0]"),
            (8, 5, "rules[1]"),
        ]
    );
    assert_eq!(e[1].to_string(), "2:1: bogus: unknown key `bogus`; ignored");
}

#[test]
fn nothing_to_intercept_is_an_error_at_the_section() {
    let errs = load("tproxy-port: 7893\nintercept:\n  local: false\n").unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].col), (3, 3));
    assert!(
        errs[0].message.contains("nothing to intercept"),
        "{}",
        errs[0].message
    );
}

#[test]
fn limits_are_positive_integers_in_a_mapping() {
    let l = ok("limits:\n  max-connections: 2000\n  per-source: 500\n  udp-table-size: 0x400\n")
        .config
        .limits;
    assert_eq!(
        l,
        Limits {
            max_connections: Some(2000),
            per_source: Some(500),
            udp_table_size: Some(1024),
        }
    );
    assert_eq!(ok("limits:\n").config.limits, Limits::default());
    let m = error_at("limits:\n  per-source: 0\n", 2, 15, "limits.per-source");
    assert!(m.contains("at least 1"), "{m}");
    let m = error_at(
        "limits:\n  max-connections: -5\n",
        2,
        20,
        "limits.max-connections",
    );
    assert!(m.contains("negative"), "{m}");
    let m = error_at(
        "limits:\n  udp-table-size: many\n",
        2,
        19,
        "limits.udp-table-size",
    );
    assert!(m.contains("expected an integer"), "{m}");
    let m = error_at(
        "limits:\n  max-connections: 99999999\n",
        2,
        20,
        "limits.max-connections",
    );
    assert!(m.contains("out of range"), "{m}");
    let m = error_at("limits: 5\n", 1, 9, "limits");
    assert!(m.contains("expected a mapping"), "{m}");
    let m = strict_error_at("limits:\n  per-sources: 5\n", 2, 3, "limits.per-sources");
    assert!(m.contains("did you mean `per-source`?"), "{m}");
}
