//! `rule-providers` and `RULE-SET` rules.

use super::*;
use crate::config::ProviderSource;
use crate::net::{Network, Origin};
use crate::rules::{Behavior, FlowMeta, Verdict};

#[test]
fn providers_load_and_bind_to_rules() {
    let l = ok(r#"
rule-providers:
  ads:
    type: inline
    behavior: domain
    payload: ['+.ads.example', tracker.example]
  lan:
    type: file
    behavior: ipcidr
    format: text
    path: ./lan.txt
  remote:
    type: http
    behavior: classical
    url: https://rules.example/list.yaml
    path: ./cache/remote.yaml
    interval: 86400
rules:
  - RULE-SET,ads,REJECT
  - AND,((RULE-SET,lan),(NETWORK,udp)),REJECT-DROP
  - RULE-SET,remote,DIRECT
  - MATCH,DIRECT
"#);
    let c = &l.config;
    assert_eq!(c.rule_providers.len(), 3);
    assert_eq!(
        c.rule_providers[1].source,
        ProviderSource::File {
            path: "./lan.txt".into()
        }
    );
    assert_eq!(c.rule_providers[2].behavior, Behavior::Classical);
    assert_eq!(
        c.rule_providers[2].interval,
        Some(std::time::Duration::from_secs(86400))
    );
    // The inline set is loaded and shared with the rule.
    let engine = c.rule_engine();
    let flow = FlowMeta {
        network: Network::Tcp,
        src: "198.51.100.2:1000".parse().unwrap(),
        dst: "203.0.113.9:443".parse().unwrap(),
        origin: Origin::Forwarded,
        host: Some("x.ads.example"),
        process: None,
        geo: None,
    };
    assert_eq!(engine.decide(&flow).rule, Some(0));
    // A file provider's set arrives later, through the handle.
    let (set, _) = crate::rules::RuleSet::parse(
        Behavior::IpCidr,
        crate::rules::Format::Text,
        "203.0.113.0/24",
    )
    .unwrap();
    assert_eq!(
        engine
            .decide(&FlowMeta {
                network: Network::Udp,
                host: None,
                ..flow
            })
            .rule,
        Some(3)
    );
    c.rule_providers[1].handle.replace(set);
    assert_eq!(
        engine
            .decide(&FlowMeta {
                network: Network::Udp,
                host: None,
                ..flow
            })
            .rule,
        Some(1)
    );
}

#[test]
fn provider_errors_have_positions() {
    let e = errors(
        "rule-providers:\n  a: {type: file, behavior: domain}\n  b: {type: ftp, behavior: domain, path: x}\n  c: {type: inline, behavior: ipcidr, payload: [192.0.2.0/24, nonsense]}\n  d: {type: inline, behavior: domain, payload: [], format: mrs}\nrules:\n  - RULE-SET,nope,DIRECT\n  - RULE-SET,d,DIRECT\n",
    );
    let at = |line: usize| {
        e.iter()
            .filter(|d| d.line == line)
            .map(|d| d.message.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    assert!(at(2).contains("needs `path`"), "{e:?}");
    assert!(at(3).contains("ftp"), "{e:?}");
    assert!(at(4).contains("nonsense"), "{e:?}");
    assert!(at(5).contains("mrs"), "{e:?}");
    assert!(at(7).contains("unknown rule provider `nope`"), "{e:?}");
    // A rule naming a provider that had an error gets no second error.
    assert_eq!(at(8), "", "{e:?}");
    // mrs files of domain and ipcidr sets are read (rules::mrs).
    let l = ok("rule-providers:\n  d: {type: file, behavior: domain, path: x.mrs, format: mrs}\nrules:\n  - RULE-SET,d,DIRECT\n");
    assert_eq!(l.config.rule_providers[0].format, crate::rules::Format::Mrs);
}

#[test]
fn sub_rules_descend_and_fall_through() {
    let l = ok(r#"
sub-rules:
  web:
    - DOMAIN-SUFFIX,blocked.example,REJECT
    - SUB-RULE,(DST-PORT,443),tls
  tls:
    - DOMAIN,drop.example,REJECT-DROP
rules:
  - SUB-RULE,(NETWORK,tcp),web
  - DOMAIN-SUFFIX,example,DIRECT
  - MATCH,REJECT
"#);
    let engine = l.config.rule_engine();
    let flow = |host: &'static str, port: u16, network| FlowMeta {
        network,
        src: "198.51.100.2:1000".parse().unwrap(),
        dst: std::net::SocketAddr::new("203.0.113.9".parse().unwrap(), port),
        origin: Origin::Forwarded,
        host: Some(host),
        process: None,
        geo: None,
    };
    let d = engine.decide(&flow("a.blocked.example", 80, Network::Tcp));
    assert_eq!(
        (d.verdict, d.rule, d.inner),
        (Verdict::Reject, Some(0), Some((0, 0)))
    );
    let r = engine.sub_rule(0, 0).unwrap();
    assert_eq!(r.text, "DOMAIN-SUFFIX,blocked.example,REJECT");
    // Nested: web -> tls.
    let d = engine.decide(&flow("drop.example", 443, Network::Tcp));
    assert_eq!((d.verdict, d.inner), (Verdict::RejectDrop, Some((1, 0))));
    // The condition holds but no rule of the list matches: the main list goes on.
    let d = engine.decide(&flow("ok.example", 80, Network::Tcp));
    assert_eq!(
        (d.verdict, d.rule, d.inner),
        (Verdict::Direct, Some(1), None)
    );
    // The condition does not hold.
    let d = engine.decide(&flow("a.blocked.example", 80, Network::Udp));
    assert_eq!((d.verdict, d.rule), (Verdict::Direct, Some(1)));
}

#[test]
fn sub_rule_errors() {
    let e = errors(
        "sub-rules:\n  a:\n    - SUB-RULE,(NETWORK,tcp),b\n  b:\n    - SUB-RULE,(NETWORK,udp),a\nrules:\n  - SUB-RULE,(NETWORK,tcp),nope\n  - SUB-RULE,NETWORK,a\n",
    );
    let msgs: Vec<String> = e
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("2:3") && m.contains("a -> b -> a")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("7:5") && m.contains("unknown sub-rules list `nope`")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("8:5") && m.contains("parentheses")),
        "{msgs:?}"
    );
}
