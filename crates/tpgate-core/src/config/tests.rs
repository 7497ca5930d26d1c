//! `load` end to end: defaults, every key, every error with its exact position, and the
//! warnings a mihomo config earns.

use ipnet::IpNet;

use super::*;
use crate::net::{Mark, Network, TableId};
use crate::rules::{Action, Matcher, PortRange};

fn ok(text: &str) -> Loaded {
    load(text).unwrap_or_else(|e| panic!("{text:?} failed: {e:#?}"))
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match load(text) {
        Ok(l) => panic!("{text:?} loaded: {:#?}", l.config),
        Err(e) => e,
    }
}

/// The single error of `text`, checked for position and path; returns its message.
#[track_caller]
fn error_at(text: &str, line: usize, col: usize, path: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    let e = &e[0];
    assert_eq!(
        (e.line, e.col, e.path.as_str()),
        (line, col, path),
        "{e:#?}"
    );
    if !path.is_empty() {
        assert!(e.message.starts_with(&format!("{path}: ")), "{e:#?}");
    }
    e.message.clone()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn empty_documents_are_all_defaults() {
    for text in [
        "",
        "\n\n",
        "# only a comment\n",
        "---\n",
        "{}",
        "~\n",
        "intercept:\nrules:\n",
    ] {
        let l = ok(text);
        assert_eq!(l.config, Config::default(), "{text:?}");
        assert!(l.warnings.is_empty(), "{text:?}");
    }
    let c = Config::default();
    assert_eq!(c.tproxy_port, 7893);
    assert_eq!(c.routing_mark, 0xff);
    assert!(c.ipv6);
    assert_eq!(c.mode, Mode::Rule);
    assert_eq!(c.log_level, LogLevel::Info);
    assert!(c.rules.is_empty());
    let i = &c.intercept;
    assert_eq!(i.backend, Backend::Nftables);
    assert!(i.lan_interfaces.is_empty());
    assert!(i.local && i.udp);
    assert_eq!(i.fwmark, Mark::exact(1));
    assert_eq!(i.route_table, TableId(100));
    assert_eq!(i.rule_priority, 9000);
    assert!(i.bypass.is_empty());
}

#[test]
fn every_key() {
    let l = ok("
tproxy-port: 0x3000
routing-mark: '0x200'
ipv6: false
mode: Global
log-level: DEBUG
intercept:
  backend: nftables
  lan-interfaces: [br-lan, eth1]
  local: false
  udp: false
  fwmark: 0x10/0xf0
  route-table: '0x64'
  rule-priority: 100
  bypass:
    - 192.0.2.0/24
    - 2001:db8::1
    - 198.51.100.7
rules:
  - DST-PORT,25,REJECT
  - ' IP-CIDR6 , 2001:db8::/32 , direct , no-resolve '
  - MATCH,REJECT-DROP
");
    assert!(l.warnings.is_empty(), "{:#?}", l.warnings);
    let c = l.config;
    assert_eq!(c.tproxy_port, 0x3000);
    assert_eq!(c.routing_mark, 0x200);
    assert!(!c.ipv6);
    assert_eq!(c.mode, Mode::Global);
    assert_eq!(c.log_level, LogLevel::Debug);
    let i = &c.intercept;
    assert_eq!(i.lan_interfaces, ["br-lan", "eth1"]);
    assert!(!i.local && !i.udp);
    assert_eq!(
        i.fwmark,
        Mark {
            value: 0x10,
            mask: 0xf0
        }
    );
    assert_eq!(i.route_table, TableId(100));
    assert_eq!(i.rule_priority, 100);
    assert_eq!(
        i.bypass,
        [
            net("192.0.2.0/24"),
            net("2001:db8::1/128"),
            net("198.51.100.7/32")
        ]
    );
    assert_eq!(c.rules.len(), 3);
    assert_eq!(
        c.rules[0].matcher,
        Matcher::DstPort(vec![PortRange { start: 25, end: 25 }])
    );
    assert_eq!(
        c.rules[1].text,
        "IP-CIDR6 , 2001:db8::/32 , direct , no-resolve"
    );
    assert!(c.rules[1].no_resolve);
    assert_eq!(c.rules[1].action, Action::Direct);
    assert_eq!(c.rules[2].action, Action::RejectDrop);
}

#[test]
fn integer_spellings() {
    for (text, port) in [
        ("1080", 1080),
        ("0x438", 0x438),
        ("'0x438'", 0x438),
        ("\"1080\"", 1080),
        ("0o2070", 1080),
    ] {
        assert_eq!(
            ok(&format!("tproxy-port: {text}")).config.tproxy_port,
            port,
            "{text}"
        );
    }
    assert_eq!(
        ok("intercept: {fwmark: '0x100/0x100'}")
            .config
            .intercept
            .fwmark,
        Mark {
            value: 0x100,
            mask: 0x100
        }
    );
    assert_eq!(
        ok("intercept: {fwmark: 7}").config.intercept.fwmark,
        Mark::exact(7)
    );
    assert_eq!(
        ok("routing-mark: 0xffffffff\n").config.routing_mark,
        u32::MAX
    );
}

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
    let m = error_at(
        "intercept:\n  backend: iptables\n",
        2,
        12,
        "intercept.backend",
    );
    assert!(m.contains("not available yet"), "{m}");
    assert!(
        error_at("intercept: {backend: auto}", 1, 22, "intercept.backend")
            .contains("not available yet")
    );
    assert!(
        error_at("intercept: {backend: pf}", 1, 22, "intercept.backend")
            .contains("unknown backend")
    );
    assert_eq!(
        ok("intercept: {backend: NFTables}")
            .config
            .intercept
            .backend,
        Backend::Nftables
    );
}

#[test]
fn unknown_keys_point_at_the_key_with_a_suggestion() {
    let m = error_at("mode: rule\ntproxy_port: 1\n", 2, 1, "tproxy_port");
    assert!(
        m.ends_with("unknown key `tproxy_port`; did you mean `tproxy-port`?"),
        "{m}"
    );
    let m = error_at(
        "intercept:\n  local: true\n  fwmrk: 1\n",
        3,
        3,
        "intercept.fwmrk",
    );
    assert!(m.ends_with("did you mean `fwmark`?"), "{m}");
    let m = error_at("colour: blue\n", 1, 1, "colour");
    assert!(m.ends_with("unknown key `colour`"), "{m}");
    let m = error_at("fwmark: 1\n", 1, 1, "fwmark");
    assert!(m.contains("belongs in the `intercept` section"), "{m}");
    let m = error_at(
        "intercept:\n  tproxy-port: 1\n",
        2,
        3,
        "intercept.tproxy-port",
    );
    assert!(m.contains("is a top-level key"), "{m}");
    let m = error_at("sock-port: 1\n", 1, 1, "sock-port");
    assert!(m.ends_with("did you mean `socks-port`?"), "{m}");
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
    assert!(error_at("rules:\n  - MATCH,DIRECT,x\n", 2, 5, "rules[0]").contains("unexpected field"));
    assert!(
        error_at("rules:\n  - [MATCH, DIRECT]\n", 2, 5, "rules[0]").contains("a rule is a string")
    );
    let m = error_at("rules:\n  - MATCH,Proxy\n", 2, 5, "rules[0]");
    assert!(m.contains("unknown target `Proxy`"), "{m}");

    let l = ok("rules:\n  - DOMAIN,example.com,DIRECT\n  - geoip,CN,DIRECT\n  - MATCH,DIRECT\n");
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
                "rules[0]: DOMAIN rules are not supported yet; rule skipped"
            ),
            (
                3,
                5,
                "rules[1]: GEOIP rules are not supported yet; rule skipped"
            ),
        ]
    );
    assert_eq!(l.config.rules.len(), 1);
    assert_eq!(l.config.rules[0].matcher, Matcher::Match);
}

#[test]
fn every_error_is_collected() {
    let e = errors(
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
    assert_eq!(e[1].to_string(), "2:1: bogus: unknown key `bogus`");
}

#[test]
fn mihomo_keys_warn_once_each() {
    let l = ok("port: 7890\nsocks-port: 7891\nallow-lan: true\nexternal-controller: 127.0.0.1:9090\nsecret: ''\ntproxy-port: 7893\n");
    let w: Vec<_> = l
        .warnings
        .iter()
        .map(|w| (w.line, w.col, w.path.as_str(), w.message.as_str()))
        .collect();
    assert_eq!(
        w,
        [
            (1, 1, "port", "port: not used by tpgate yet; ignored"),
            (
                2,
                1,
                "socks-port",
                "socks-port: not used by tpgate yet; ignored"
            ),
            (
                3,
                1,
                "allow-lan",
                "allow-lan: not used by tpgate yet; ignored"
            ),
            (
                4,
                1,
                "external-controller",
                "external-controller: not used by tpgate yet; ignored"
            ),
            (5, 1, "secret", "secret: not used by tpgate yet; ignored"),
        ]
    );
}

const MIHOMO: &str = r#"# A typical mihomo config with tpgate's section added.
mixed-port: 7890
tproxy-port: 7893
allow-lan: true
mode: rule
log-level: warning
ipv6: true
routing-mark: 6666
find-process-mode: off
geodata-mode: true
unified-delay: true
tcp-concurrent: true
global-client-fingerprint: chrome
external-controller: 127.0.0.1:9090
profile:
  store-selected: true
sniffer:
  enable: true
dns:
  enable: true
  enhanced-mode: fake-ip
  nameserver: [https://doh.pub/dns-query]
tun:
  enable: false
p: &common {udp: true, skip-cert-verify: false}
proxies:
  - {name: hk-1, type: ss, server: 192.0.2.10, port: 8388, cipher: aes-128-gcm, password: x}
  - name: "jp-1"
    type: trojan
    server: 198.51.100.3
    port: 443
    password: x
proxy-groups:
  - name: Proxy
    type: select
    proxies: [hk-1, jp-1, DIRECT]
  - {name: Auto, type: url-test, proxies: [hk-1, jp-1], url: 'https://www.gstatic.com/generate_204', interval: 300}
intercept:
  lan-interfaces: [br-lan]
  bypass: [203.0.113.0/24]
rules:
  - DOMAIN-SUFFIX,google.com,Proxy
  - DOMAIN-KEYWORD,ads,REJECT
  - GEOSITE,cn,DIRECT
  - IP-CIDR,192.168.0.0/16,DIRECT,no-resolve
  - IP-CIDR6,fe80::/10,DIRECT,no-resolve
  - DST-PORT,25,REJECT
  - NETWORK,udp,Auto
  - GEOIP,CN,DIRECT
  - MATCH,DIRECT
"#;

#[test]
fn realistic_mihomo_config_loads_with_warnings() {
    let l = load(MIHOMO).map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>());
    // `p` (an anchor holder) is not a mihomo key: it is rejected, like any unknown key.
    assert_eq!(l.unwrap_err(), ["25:1: p: unknown key `p`"]);

    let l = ok(&MIHOMO.replace("p: &common {udp: true, skip-cert-verify: false}\n", ""));
    let c = &l.config;
    assert_eq!(
        (c.tproxy_port, c.routing_mark, c.log_level),
        (7893, 6666, LogLevel::Warning)
    );
    assert_eq!(c.intercept.lan_interfaces, ["br-lan"]);
    let kept: Vec<_> = c.rules.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(
        kept,
        [
            "IP-CIDR,192.168.0.0/16,DIRECT,no-resolve",
            "IP-CIDR6,fe80::/10,DIRECT,no-resolve",
            "DST-PORT,25,REJECT",
            "MATCH,DIRECT"
        ]
    );
    let w: Vec<_> = l.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        [
            "2:1: mixed-port: not used by tpgate yet; ignored",
            "4:1: allow-lan: not used by tpgate yet; ignored",
            "9:1: find-process-mode: not used by tpgate yet; ignored",
            "10:1: geodata-mode: not used by tpgate yet; ignored",
            "11:1: unified-delay: not used by tpgate yet; ignored",
            "12:1: tcp-concurrent: not used by tpgate yet; ignored",
            "13:1: global-client-fingerprint: not used by tpgate yet; ignored",
            "14:1: external-controller: not used by tpgate yet; ignored",
            "15:1: profile: not used by tpgate yet; ignored",
            "17:1: sniffer: not used by tpgate yet; ignored",
            "19:1: dns: not used by tpgate yet; ignored",
            "23:1: tun: not used by tpgate yet; ignored",
            "25:1: proxies: not used by tpgate yet; ignored",
            "32:1: proxy-groups: not used by tpgate yet; ignored",
            "41:5: rules[0]: DOMAIN-SUFFIX rules are not supported yet; rule skipped",
            "42:5: rules[1]: DOMAIN-KEYWORD rules are not supported yet; rule skipped",
            "43:5: rules[2]: GEOSITE rules are not supported yet; rule skipped",
            "47:5: rules[6]: target `Auto` is a proxy or proxy group; proxy targets arrive with upstream support; rule skipped",
            "48:5: rules[7]: GEOIP rules are not supported yet; rule skipped",
        ]
    );
    assert!(c
        .rules
        .iter()
        .all(|r| r.matcher != Matcher::Network(Network::Udp)));
}
