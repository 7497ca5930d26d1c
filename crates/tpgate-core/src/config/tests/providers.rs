//! `rule-providers` and `RULE-SET` rules.

use super::*;
use crate::config::ProviderSource;
use crate::net::{Network, Origin};
use crate::rules::{Behavior, FlowMeta, RuleEngine};

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
    let engine = RuleEngine::from_config(c);
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
        "rule-providers:\n  a: {type: file, behavior: domain}\n  b: {type: ftp, behavior: domain, path: x}\n  c: {type: inline, behavior: ipcidr, payload: [192.0.2.0/24, nonsense]}\n  d: {type: file, behavior: domain, path: x, format: mrs}\nrules:\n  - RULE-SET,nope,DIRECT\n",
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
}
