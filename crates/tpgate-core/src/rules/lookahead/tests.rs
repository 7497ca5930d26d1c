//! `needs_real_dst` and `name_matters`: hand-picked cases, and properties that tie them to
//! what [`RuleEngine::decide`] does (a "no" must never hide a different verdict).

use proptest::prelude::*;

use crate::net::{Network, Origin};
use crate::rules::{
    parse_rule, Behavior, FlowMeta, Format, Matcher, Mode, Rule, RuleEngine, RuleSet,
    RuleSetHandle, Verdict,
};

fn flow(dst: &str, host: Option<&'static str>) -> FlowMeta<'static> {
    FlowMeta {
        network: Network::Tcp,
        src: "198.51.100.2:40000".parse().unwrap(),
        dst: dst.parse().unwrap(),
        origin: Origin::Forwarded,
        host,
        process: None,
        geo: None,
    }
}

fn udp(f: FlowMeta<'static>) -> FlowMeta<'static> {
    FlowMeta {
        network: Network::Udp,
        ..f
    }
}

/// `lists`: the `sub-rules` lists, named `l0`, `l1`, ... in order. `sets`: providers
/// `RULE-SET` rules name.
fn engine_with(
    rules: &[&str],
    lists: &[&[&str]],
    sets: &[(&str, Behavior, &str)],
    mode: Mode,
) -> RuleEngine {
    let handles: Vec<RuleSetHandle> = sets
        .iter()
        .map(|(name, behavior, text)| {
            let h = RuleSetHandle::new(name);
            h.replace(RuleSet::parse(*behavior, Format::Text, text).unwrap().0);
            h
        })
        .collect();
    let parse = |texts: &[&str]| -> Vec<Rule> {
        texts
            .iter()
            .map(|t| {
                let mut r = parse_rule(t).unwrap_or_else(|e| panic!("{t}: {e}"));
                for h in r.matcher.rule_sets_mut() {
                    if let Some(set) = handles.iter().find(|s| s.name() == h.name()) {
                        *h = set.clone();
                    }
                }
                for (name, list) in r.matcher.sub_rules_mut() {
                    *list = name.trim_start_matches('l').parse().unwrap();
                }
                r
            })
            .collect()
    };
    RuleEngine::new(parse(rules), mode, Verdict::Direct)
        .with_sub_rules(lists.iter().map(|l| parse(l)).collect())
}

fn engine(rules: &[&str]) -> RuleEngine {
    engine_with(rules, &[], &[], Mode::Rule)
}

const FAKE: &str = "198.18.0.5:443";

#[test]
fn logic_entries_with_no_resolve_do_not_force_a_resolution() {
    let fake = flow(FAKE, Some("x.example"));
    let cases = [
        (
            "AND,((IP-CIDR,203.0.113.0/24,no-resolve),(NETWORK,udp)),REJECT",
            false,
        ),
        ("AND,((IP-CIDR,203.0.113.0/24),(NETWORK,udp)),REJECT", true),
        (
            "OR,((IP-CIDR,203.0.113.0/24,No-Resolve),(GEOIP,CN)),REJECT",
            true,
        ),
        (
            "OR,((IP-CIDR,203.0.113.0/24,no-resolve),(GEOIP,CN,no-resolve)),REJECT",
            false,
        ),
        ("NOT,((IP-CIDR,203.0.113.0/24,no-resolve)),REJECT", false),
        ("NOT,((AND,((GEOIP,LAN),(DST-PORT,22)))),REJECT", true),
        // tpgate also reads `no-resolve` after a logic rule's target: it covers every entry.
        (
            "AND,((IP-CIDR,203.0.113.0/24),(NETWORK,udp)),REJECT,no-resolve",
            false,
        ),
        // An option on an entry that never looks at the address changes nothing.
        (
            "AND,((DOMAIN,y.example,no-resolve),(NETWORK,udp)),REJECT",
            false,
        ),
    ];
    for (rule, want) in cases {
        let e = engine(&[rule, "MATCH,DIRECT"]);
        assert_eq!(e.needs_real_dst(&fake), want, "{rule}");
    }
}

#[test]
fn a_no_resolve_entry_still_matches_the_address_it_is_given() {
    let e = engine(&["AND,((IP-CIDR,203.0.113.0/24,no-resolve),(NETWORK,udp)),REJECT"]);
    assert_eq!(e.decide(&udp(flow("203.0.113.9:53", None))).rule, Some(0));
    assert_eq!(e.decide(&flow("203.0.113.9:53", None)).rule, None);
    assert_eq!(e.decide(&udp(flow("192.0.2.9:53", None))).rule, None);
}

#[test]
fn sub_rules_count_by_condition_and_by_their_list() {
    let lists: &[&[&str]] = &[
        &[
            "DOMAIN-SUFFIX,a.example,REJECT",
            "IP-CIDR,10.0.0.0/8,DIRECT",
        ],
        &["IP-CIDR,10.0.0.0/8,DIRECT,no-resolve"],
    ];
    let e = engine_with(
        &["SUB-RULE,(NETWORK,tcp),l0", "MATCH,REJECT"],
        lists,
        &[],
        Mode::Rule,
    );
    assert!(
        e.needs_real_dst(&flow(FAKE, Some("b.example"))),
        "list reaches the IP rule"
    );
    assert!(
        !e.needs_real_dst(&flow(FAKE, Some("x.a.example"))),
        "the list decides before its IP rule"
    );
    assert!(
        !e.needs_real_dst(&udp(flow(FAKE, Some("b.example")))),
        "condition does not hold: the list is never entered"
    );
    let e = engine_with(
        &["SUB-RULE,(IP-CIDR,10.0.0.0/8),l1", "MATCH,REJECT"],
        lists,
        &[],
        Mode::Rule,
    );
    assert!(
        e.needs_real_dst(&flow(FAKE, Some("b.example"))),
        "the condition"
    );
    let e = engine_with(
        &[
            "SUB-RULE,(IP-CIDR,198.18.0.0/16,no-resolve),l1",
            "MATCH,REJECT",
        ],
        lists,
        &[],
        Mode::Rule,
    );
    assert!(
        !e.needs_real_dst(&flow(FAKE, Some("b.example"))),
        "no-resolve both"
    );
}

#[test]
fn rule_sets_count_by_what_they_hold_now() {
    let sets = [
        ("names", Behavior::Domain, "+.a.example\n"),
        ("nets", Behavior::IpCidr, "10.0.0.0/8\n"),
        (
            "mixed",
            Behavior::Classical,
            "DST-PORT,22\nDOMAIN-KEYWORD,tube\n",
        ),
    ];
    let e = |rule: &str| engine_with(&[rule, "MATCH,REJECT"], &[], &sets, Mode::Rule);
    let fake = flow(FAKE, Some("b.example"));
    assert!(!e("RULE-SET,names,DIRECT").needs_real_dst(&fake));
    assert!(!e("AND,((RULE-SET,names),(NETWORK,tcp)),DIRECT").needs_real_dst(&fake));
    assert!(e("AND,((RULE-SET,nets),(NETWORK,tcp)),DIRECT").needs_real_dst(&fake));
    assert!(!e("RULE-SET,nets,DIRECT,no-resolve").needs_real_dst(&fake));

    let bare = flow("192.0.2.9:443", None);
    assert!(e("RULE-SET,names,DIRECT").name_matters(&bare));
    assert!(!e("RULE-SET,nets,DIRECT").name_matters(&bare));
    assert!(e("RULE-SET,mixed,DIRECT").name_matters(&bare));
    assert!(e("OR,((RULE-SET,nets),(RULE-SET,names)),DIRECT").name_matters(&bare));
    // A refresh that drops the domains is seen at once.
    let engine = e("RULE-SET,names,DIRECT");
    let Matcher::RuleSet(h) = &engine.rule(0).unwrap().matcher else {
        unreachable!()
    };
    h.replace(
        RuleSet::parse(Behavior::Domain, Format::Text, "")
            .unwrap()
            .0,
    );
    assert!(!engine.name_matters(&bare));
}

#[test]
fn the_name_matters_only_before_the_deciding_rule() {
    let e = engine(&[
        "DST-PORT,22,DIRECT",
        "DOMAIN-SUFFIX,a.example,REJECT",
        "NETWORK,udp,DIRECT",
        "MATCH,REJECT",
    ]);
    let ssh = flow("192.0.2.9:22", None);
    assert!(
        !e.name_matters(&ssh),
        "decided by the port before any domain rule"
    );
    assert!(e.name_matters(&flow("192.0.2.9:443", None)));
    // The host given is ignored: the question is about a flow without one.
    assert!(e.name_matters(&flow("192.0.2.9:443", Some("x.a.example"))));
    assert!(!e.name_matters(&flow("192.0.2.9:22", Some("x.a.example"))));
    let e = engine(&["IP-CIDR,192.0.2.0/24,DIRECT", "MATCH,REJECT"]);
    assert!(
        !e.name_matters(&flow("192.0.2.9:443", None)),
        "no name rule at all"
    );
    assert!(!e.name_matters(&flow("203.0.113.9:443", None)));
}

#[test]
fn every_kind_of_name_rule_counts() {
    let bare = flow("192.0.2.9:443", None);
    for rule in [
        "DOMAIN,a.example,REJECT",
        "DOMAIN-SUFFIX,a.example,REJECT",
        "DOMAIN-KEYWORD,tube,REJECT",
        "DOMAIN-WILDCARD,*.a.example,REJECT",
        r"DOMAIN-REGEX,^ad\d+\.,REJECT",
        "AND,((NETWORK,tcp),(DOMAIN,a.example)),REJECT",
        "NOT,((DOMAIN,a.example)),REJECT",
        "OR,((DST-PORT,1),(NOT,((DOMAIN-KEYWORD,x)))),REJECT",
    ] {
        assert!(
            engine(&[rule, "MATCH,DIRECT"]).name_matters(&bare),
            "{rule}"
        );
    }
    for rule in [
        "DST-PORT,80,REJECT",
        "IP-CIDR,10.0.0.0/8,REJECT",
        "AND,((NETWORK,tcp),(SRC-PORT,1)),REJECT",
    ] {
        assert!(
            !engine(&[rule, "MATCH,DIRECT"]).name_matters(&bare),
            "{rule}"
        );
    }
}

#[test]
fn geosite_counts_by_its_list() {
    let mut rule = parse_rule("GEOSITE,ads,REJECT").unwrap();
    let mut set = RuleSet::default();
    set.add_suffix("ads.example");
    let h = RuleSetHandle::new("ads");
    h.replace(set);
    *rule.matcher.geosites_mut()[0] = h;
    let e = RuleEngine::new(vec![rule], Mode::Rule, Verdict::Direct);
    assert!(e.name_matters(&flow("192.0.2.9:443", None)));
}

#[test]
fn sub_rule_name_rules_count_by_condition_and_list() {
    let lists: &[&[&str]] = &[
        &["DST-PORT,22,DIRECT", "DOMAIN-SUFFIX,a.example,REJECT"],
        &["DST-PORT,22,DIRECT"],
    ];
    let e = |rules: &[&str]| engine_with(rules, lists, &[], Mode::Rule);
    let https = flow("192.0.2.9:443", None);
    let ssh = flow("192.0.2.9:22", None);
    let main = e(&["SUB-RULE,(NETWORK,tcp),l0", "MATCH,REJECT"]);
    assert!(
        main.name_matters(&https),
        "the list has a domain rule before its verdict"
    );
    assert!(
        !main.name_matters(&ssh),
        "the list decides before its domain rule"
    );
    assert!(
        !main.name_matters(&udp(https)),
        "condition false: the list is never entered"
    );
    let main = e(&["SUB-RULE,(DOMAIN-SUFFIX,a.example),l1", "MATCH,REJECT"]);
    assert!(main.name_matters(&ssh), "the condition looks at the name");
    let main = e(&["SUB-RULE,(NETWORK,tcp),l1", "MATCH,REJECT"]);
    assert!(!main.name_matters(&https), "no name rule anywhere");
}

#[test]
fn other_modes_never_ask() {
    for mode in [Mode::Global, Mode::Direct] {
        let e = engine_with(
            &["DOMAIN,a.example,REJECT", "IP-CIDR,0.0.0.0/0,REJECT"],
            &[],
            &[],
            mode,
        );
        assert!(!e.name_matters(&flow("192.0.2.9:443", None)));
        assert!(!e.needs_real_dst(&flow(FAKE, Some("a.example"))));
    }
}

/// Rules from a small alphabet, so that names, ports and addresses collide often.
fn rule_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "(a|b)(\\.c)?".prop_map(|n| format!("DOMAIN-SUFFIX,{n}")),
        "(a|b)".prop_map(|n| format!("DOMAIN-KEYWORD,{n}")),
        (1u16..4).prop_map(|p| format!("DST-PORT,{p}")),
        Just("NETWORK,udp".to_owned()),
        (0u8..2, any::<bool>()).prop_map(|(x, nr)| {
            let nr = if nr { ",no-resolve" } else { "" };
            format!("IP-CIDR,10.0.{x}.0/24{nr}")
        }),
        Just("IP-CIDR,198.18.0.0/16,no-resolve".to_owned()),
    ];
    let logic = (leaf.clone(), leaf.clone(), 0u8..3).prop_map(|(a, b, k)| match k {
        0 => format!("AND,(({a}),({b}))"),
        1 => format!("OR,(({a}),({b}))"),
        _ => format!("NOT,(({a}))"),
    });
    let target = prop_oneof![Just("DIRECT"), Just("REJECT"), Just("REJECT-DROP")];
    (prop_oneof![leaf, logic.clone(), logic], target).prop_map(|(m, t)| {
        // A top-level no-resolve goes after the target.
        match m.strip_suffix(",no-resolve") {
            Some(m) if !m.contains('(') => format!("{m},{t},no-resolve"),
            _ => format!("{m},{t}"),
        }
    })
}

/// What a rule decides when each address leaf sees the real address, except those under
/// `no-resolve`, which see the fake one (mihomo's resolve-on-demand).
fn holds(m: &Matcher, fake: &FlowMeta<'_>, real: &FlowMeta<'_>) -> bool {
    match m {
        Matcher::IpCidr(_) | Matcher::GeoIp(_) => m.matches(real),
        Matcher::NoResolve(inner) => inner.matches(fake),
        Matcher::And(all) => all.iter().all(|m| holds(m, fake, real)),
        Matcher::Or(all) => all.iter().any(|m| holds(m, fake, real)),
        Matcher::Not(inner) => !holds(inner, fake, real),
        _ => m.matches(fake),
    }
}

proptest! {
    /// When `needs_real_dst` says no, resolving would not have changed the verdict.
    #[test]
    fn no_real_dst_needed_means_the_real_address_changes_nothing(
        texts in proptest::collection::vec(rule_text(), 0..10),
        real in 0u8..2, port in 1u16..5, is_udp in any::<bool>(),
        host in "(a|b|x)(\\.c)?",
    ) {
        let rules: Vec<Rule> = texts.iter().map(|t| parse_rule(t).unwrap()).collect();
        let network = if is_udp { Network::Udp } else { Network::Tcp };
        let fake = FlowMeta { network, host: Some(&host), ..flow(&format!("198.18.0.5:{port}"), None) };
        let real = FlowMeta { dst: format!("10.0.{real}.1:{port}").parse().unwrap(), ..fake };
        let resolved = rules.iter().position(|r| if r.no_resolve {
            r.matcher.matches(&fake)
        } else {
            holds(&r.matcher, &fake, &real)
        });
        let e = RuleEngine::new(rules, Mode::Rule, Verdict::Direct);
        if !e.needs_real_dst(&fake) {
            prop_assert_eq!(e.decide(&fake).rule, resolved);
        }
    }

    /// When `name_matters` says no, no name the flow could have changes the verdict.
    #[test]
    fn a_name_that_does_not_matter_changes_nothing(
        texts in proptest::collection::vec(rule_text(), 0..10),
        list in proptest::collection::vec(rule_text(), 0..4),
        sub_at in proptest::option::of(0usize..10),
        port in 1u16..5, is_udp in any::<bool>(), d in 0u8..4,
        host in "(a|b|x)(\\.c)?",
    ) {
        let mut texts = texts;
        if let Some(at) = sub_at {
            texts.insert(at.min(texts.len()), "SUB-RULE,(DST-PORT,1/2),l0".to_owned());
        }
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let list: Vec<&str> = list.iter().map(String::as_str).collect();
        let e = engine_with(&texts, &[&list], &[], Mode::Rule);
        let network = if is_udp { Network::Udp } else { Network::Tcp };
        let bare = FlowMeta { network, ..flow(&format!("10.0.{d}.1:{port}"), None) };
        let named = FlowMeta { host: Some(&host), ..bare };
        if !e.name_matters(&bare) {
            prop_assert_eq!(e.decide(&named), e.decide(&bare));
        }
    }
}
