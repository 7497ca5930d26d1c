//! The decider, table-driven and by properties: every combination of name needed or not,
//! sniff timeout, fake-ip with and without `no-resolve`, process rules, SUB-RULE and logic
//! rules, upstream vs DIRECT; and how many rule-engine passes each flow costs.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config;

/// Counts [`Rules::evaluate`] calls: one call is one pass over the rules.
struct Counting {
    engine: RuleEngine,
    passes: Cell<u32>,
}

impl Rules for Counting {
    fn evaluate(&self, flow: &FlowMeta<'_>, ask: Ask) -> Evaluation {
        self.passes.set(self.passes.get() + 1);
        self.engine.evaluate(flow, ask)
    }
    fn needs_process(&self) -> bool {
        self.engine.needs_process()
    }
    fn needs_geoip(&self) -> bool {
        self.engine.needs_geoip()
    }
    fn describe(&self, d: &Decision) -> String {
        Rules::describe(&self.engine, d)
    }
}

/// The test's tables: this host is 198.51.100.1 (and loopback); 198.18.0.0/16 is the fake
/// range with the names in `fake`; `mapped` is the DNS mapping.
#[derive(Default)]
struct Lab {
    fake: HashMap<IpAddr, String>,
    mapped: HashMap<IpAddr, String>,
    countries: HashMap<IpAddr, String>,
}

impl Tables for Lab {
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || ip == ip_("198.51.100.1")
    }
    fn fake_ip(&self, ip: IpAddr) -> FakeIp {
        match ip {
            IpAddr::V4(v4) if v4.octets()[..2] == [198, 18] => self
                .fake
                .get(&ip)
                .map_or(FakeIp::Unknown, |n| FakeIp::Name(n.clone())),
            _ => FakeIp::NotFake,
        }
    }
    fn mapped_name(&self, ip: IpAddr) -> Option<String> {
        self.mapped.get(&ip).cloned()
    }
    fn geo_codes(&self, ip: IpAddr) -> Vec<String> {
        self.countries.get(&ip).cloned().into_iter().collect()
    }
}

fn ip_(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const LAN_CLIENT: &str = "198.51.100.2:40000";
const LOCAL_CLIENT: &str = "198.51.100.1:40000";

/// A config with one upstream `up`, a select group `pick` (DIRECT first), the given
/// rules and `sub-rules`.
fn rules(rules: &[&str], subs: &str) -> Counting {
    let mut yaml = String::from(
        "proxies:\n  - {name: up, type: socks5, server: 203.0.113.9, port: 1080}\n\
         proxy-groups:\n  - {name: pick, type: select, proxies: [DIRECT, up]}\n",
    );
    yaml.push_str(subs);
    yaml.push_str("rules:\n");
    for r in rules {
        yaml.push_str(&format!("  - \"{r}\"\n"));
    }
    let loaded = config::load(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e:?}"));
    Counting {
        engine: loaded.config.rule_engine(),
        passes: Cell::new(0),
    }
}

fn settings(override_destination: bool) -> Settings {
    let mut sniffer = Sniffer {
        enable: true,
        override_destination,
        timeout: Duration::from_millis(300),
        ..Sniffer::default()
    };
    sniffer.tls_ports = vec![crate::rules::PortRange {
        start: 443,
        end: 443,
    }];
    sniffer.quic_ports = sniffer.tls_ports.clone();
    sniffer.http_ports = vec![crate::rules::PortRange { start: 80, end: 80 }];
    sniffer.skip_domain = vec![config::DomainPattern::parse("+.skip.test").unwrap()];
    Settings {
        tproxy_port: 7893,
        sniffer,
    }
}

/// What the I/O half would answer, scripted.
#[derive(Clone, Default)]
struct Answers {
    process: Option<ProcessInfo>,
    /// `None`: the sniffing wait ends without a name.
    sniffed: Option<String>,
    real: Option<IpAddr>,
}

/// Drives a decider to its end with scripted answers; returns the needs it asked for in
/// order and the outcome.
fn drive(
    network: Network,
    client: &str,
    dst: &str,
    r: &Counting,
    tables: &Lab,
    s: &Settings,
    a: &Answers,
) -> (Vec<Need>, Step) {
    let mut d = Decider::new(FlowStart {
        network,
        client: ClientAddr(sa(client)),
        dst: OrigDst(sa(dst)),
    });
    let mut needs = Vec::new();
    loop {
        match d.poll(r, tables, s) {
            Step::Need(n) => {
                match &n {
                    Need::Process => d.on_process(a.process.clone()),
                    Need::FirstBytes { .. } => d.on_sniffed(a.sniffed.clone(), s),
                    Need::RealAddr { .. } => d.on_real_addr(a.real),
                }
                needs.push(n);
                assert!(
                    needs.len() <= 3,
                    "a decider asked more than 3 times: {needs:?}"
                );
            }
            out => return (needs, out),
        }
    }
}

/// A LAN host's TCP flow to `dst`, driven to its decision.
fn tcp(dst: &str, r: &Counting, lab: &Lab, s: &Settings, a: &Answers) -> Decided {
    decided(drive(Network::Tcp, LAN_CLIENT, dst, r, lab, s, a).1)
}

fn decided(step: Step) -> Decided {
    match step {
        Step::Decided(d) => d,
        other => panic!("not decided: {other:?}"),
    }
}

fn fake_lab() -> Lab {
    let mut lab = Lab::default();
    lab.fake.insert(ip_("198.18.0.5"), "video.test".into());
    lab
}

fn wait() -> Need {
    Need::FirstBytes {
        timeout: Duration::from_millis(300),
    }
}

struct Case {
    what: &'static str,
    rules: &'static [&'static str],
    subs: &'static str,
    network: Network,
    client: &'static str,
    dst: &'static str,
    answers: Answers,
    override_destination: bool,
    needs: Vec<Need>,
    verdict: &'static str,
    rule: &'static str,
    host: Option<&'static str>,
    passes: u32,
    sniff_while_connecting: bool,
}

fn base(what: &'static str, rules: &'static [&'static str]) -> Case {
    Case {
        what,
        rules,
        subs: "",
        network: Network::Tcp,
        client: LAN_CLIENT,
        dst: "203.0.113.2:443",
        answers: Answers::default(),
        override_destination: false,
        needs: vec![],
        verdict: "DIRECT",
        rule: "(none)",
        host: None,
        passes: 1,
        sniff_while_connecting: false,
    }
}

fn named(name: &str) -> Answers {
    Answers {
        sniffed: Some(name.into()),
        ..Answers::default()
    }
}

fn verdict_name(v: Verdict) -> String {
    match v {
        Verdict::Proxy(_) => "PROXY".into(),
        other => other.to_string(),
    }
}

#[test]
fn table_of_flows() {
    let proc_curl = ProcessInfo {
        uid: Some(1000),
        name: Some("curl".into()),
        path: Some("/usr/bin/curl".into()),
    };
    let cases = vec![
        Case {
            needs: vec![wait()],
            answers: named("www.example.test"),
            verdict: "PROXY",
            rule: "DOMAIN-SUFFIX,example.test,up",
            host: Some("www.example.test"),
            passes: 2,
            ..base(
                "name matters: waits, decides again with the name",
                &["DOMAIN-SUFFIX,example.test,up", "MATCH,DIRECT"],
            )
        },
        Case {
            needs: vec![wait()],
            rule: "MATCH,DIRECT",
            passes: 1,
            ..base(
                "name matters, sniff timed out: the first pass stands",
                &["DOMAIN-SUFFIX,example.test,up", "MATCH,DIRECT"],
            )
        },
        Case {
            needs: vec![wait()],
            answers: named("cdn.skip.test"),
            rule: "MATCH,DIRECT",
            passes: 1,
            ..base(
                "a skip-domain name is dropped like no name",
                &["DOMAIN-SUFFIX,skip.test,up", "MATCH,DIRECT"],
            )
        },
        Case {
            needs: vec![],
            rule: "IP-CIDR,203.0.113.0/24,DIRECT",
            sniff_while_connecting: true,
            ..base(
                "name cannot matter, DIRECT: connect at once, read for the log",
                &[
                    "IP-CIDR,203.0.113.0/24,DIRECT",
                    "DOMAIN,x.test,up",
                    "MATCH,DIRECT",
                ],
            )
        },
        Case {
            rule: "IP-CIDR,203.0.113.0/24,REJECT",
            verdict: "REJECT",
            ..base(
                "rejected by address: no sniffing at all",
                &["IP-CIDR,203.0.113.0/24,REJECT", "DOMAIN,x.test,up"],
            )
        },
        Case {
            needs: vec![wait()],
            answers: named("a.test"),
            verdict: "PROXY",
            rule: "MATCH,up",
            host: Some("a.test"),
            ..base(
                "upstream by address: waits for the name to give it, one pass",
                &["MATCH,up"],
            )
        },
        Case {
            needs: vec![wait()],
            answers: named("a.test"),
            override_destination: true,
            rule: "MATCH,DIRECT",
            host: Some("a.test"),
            ..base(
                "override-destination: DIRECT waits for the name, one pass",
                &["MATCH,DIRECT"],
            )
        },
        Case {
            dst: "203.0.113.2:22",
            rule: "MATCH,DIRECT",
            ..base(
                "port not sniffed: one pass, no wait",
                &["DOMAIN,x.test,up", "MATCH,DIRECT"],
            )
        },
        Case {
            dst: "198.18.0.5:443",
            verdict: "PROXY",
            rule: "DOMAIN,video.test,up",
            host: Some("video.test"),
            ..base(
                "fake-ip: the name is known, never sniffed",
                &["DOMAIN,video.test,up", "MATCH,DIRECT"],
            )
        },
        Case {
            dst: "198.18.0.5:443",
            needs: vec![Need::RealAddr {
                name: "video.test".into(),
            }],
            answers: Answers {
                real: Some(ip_("192.0.2.7")),
                ..Answers::default()
            },
            verdict: "REJECT",
            rule: "IP-CIDR,192.0.2.0/24,REJECT",
            host: Some("video.test"),
            passes: 2,
            ..base(
                "fake-ip before an address rule: resolved, decided with the real address",
                &["IP-CIDR,192.0.2.0/24,REJECT", "MATCH,DIRECT"],
            )
        },
        Case {
            dst: "198.18.0.5:443",
            needs: vec![Need::RealAddr {
                name: "video.test".into(),
            }],
            rule: "MATCH,DIRECT",
            host: Some("video.test"),
            passes: 1,
            ..base(
                "fake-ip, name not resolved: the fake address's pass stands",
                &["IP-CIDR,192.0.2.0/24,REJECT", "MATCH,DIRECT"],
            )
        },
        Case {
            dst: "198.18.0.5:443",
            rule: "MATCH,DIRECT",
            host: Some("video.test"),
            ..base(
                "fake-ip with no-resolve: never resolved",
                &["IP-CIDR,192.0.2.0/24,REJECT,no-resolve", "MATCH,DIRECT"],
            )
        },
        Case {
            dst: "198.18.0.5:443",
            rule: "MATCH,DIRECT",
            host: Some("video.test"),
            ..base(
                "fake-ip, logic entry with its own no-resolve: never resolved",
                &[
                    "AND,((IP-CIDR,192.0.2.0/24,no-resolve),(NETWORK,tcp)),REJECT",
                    "MATCH,DIRECT",
                ],
            )
        },
        Case {
            client: LOCAL_CLIENT,
            needs: vec![Need::Process],
            answers: Answers {
                process: Some(proc_curl.clone()),
                ..Answers::default()
            },
            dst: "203.0.113.2:25",
            verdict: "PROXY",
            rule: "PROCESS-NAME,curl,up",
            ..base(
                "process rule, this host's flow: asks for the process first",
                &["PROCESS-NAME,curl,up", "MATCH,DIRECT"],
            )
        },
        Case {
            dst: "203.0.113.2:25",
            rule: "MATCH,DIRECT",
            ..base(
                "process rule, a LAN host's flow: no process lookup",
                &["PROCESS-NAME,curl,up", "MATCH,DIRECT"],
            )
        },
        Case {
            client: LOCAL_CLIENT,
            needs: vec![Need::Process, wait()],
            answers: Answers {
                process: Some(proc_curl.clone()),
                sniffed: Some("www.example.test".into()),
                ..Answers::default()
            },
            verdict: "PROXY",
            rule: "AND,((PROCESS-NAME,curl),(DOMAIN-SUFFIX,example.test)),up",
            host: Some("www.example.test"),
            passes: 2,
            ..base(
                "process and name in a logic rule: both asked, in order",
                &[
                    "AND,((PROCESS-NAME,curl),(DOMAIN-SUFFIX,example.test)),up",
                    "MATCH,DIRECT",
                ],
            )
        },
        Case {
            subs: "sub-rules:\n  web:\n    - DOMAIN-SUFFIX,example.test,up\n",
            needs: vec![wait()],
            answers: named("www.example.test"),
            verdict: "PROXY",
            rule: "SUB-RULE,(NETWORK,tcp),web > DOMAIN-SUFFIX,example.test,up",
            host: Some("www.example.test"),
            passes: 2,
            ..base(
                "SUB-RULE whose list looks at the name",
                &["SUB-RULE,(NETWORK,tcp),web", "MATCH,DIRECT"],
            )
        },
        Case {
            subs: "sub-rules:\n  web:\n    - DOMAIN-SUFFIX,example.test,up\n",
            network: Network::Udp,
            rule: "MATCH,DIRECT",
            needs: vec![wait()],
            ..base(
                "UDP: a SUB-RULE for TCP only does not make the name matter; DIRECT UDP still \
                 reads its first datagram for the log",
                &["SUB-RULE,(NETWORK,tcp),web", "MATCH,DIRECT"],
            )
        },
        Case {
            network: Network::Udp,
            needs: vec![wait()],
            answers: named("quic.example.test"),
            verdict: "PROXY",
            rule: "DOMAIN-SUFFIX,example.test,up",
            host: Some("quic.example.test"),
            passes: 2,
            ..base(
                "UDP QUIC name matters",
                &["DOMAIN-SUFFIX,example.test,up", "MATCH,DIRECT"],
            )
        },
        Case {
            verdict: "PROXY",
            rule: "MATCH,pick",
            needs: vec![wait()],
            answers: named("g.test"),
            host: Some("g.test"),
            ..base(
                "a group target: waits for the name like an upstream",
                &["MATCH,pick"],
            )
        },
    ];
    for c in cases {
        let r = rules(c.rules, c.subs);
        let lab = fake_lab();
        let s = settings(c.override_destination);
        let (needs, out) = drive(c.network, c.client, c.dst, &r, &lab, &s, &c.answers);
        let d = decided(out);
        assert_eq!(needs, c.needs, "{}: needs", c.what);
        assert_eq!(verdict_name(d.verdict), c.verdict, "{}: verdict", c.what);
        assert_eq!(d.rule, c.rule, "{}: rule", c.what);
        assert_eq!(d.host.as_deref(), c.host, "{}: host", c.what);
        assert_eq!(r.passes.get(), c.passes, "{}: rule-engine passes", c.what);
        assert_eq!(
            d.sniff_while_connecting, c.sniff_while_connecting,
            "{}: sniff while connecting",
            c.what
        );
    }
}

#[test]
fn refusals_come_before_any_rule() {
    let r = rules(&["MATCH,up"], "");
    let (lab, s) = (fake_lab(), settings(false));
    let a = Answers::default();
    let (_, out) = drive(
        Network::Tcp,
        LAN_CLIENT,
        "198.51.100.1:7893",
        &r,
        &lab,
        &s,
        &a,
    );
    assert_eq!(out, Step::Refused(Refusal::OwnListener));
    let (_, out) = drive(Network::Udp, LAN_CLIENT, "198.18.9.9:53", &r, &lab, &s, &a);
    assert_eq!(out, Step::Refused(Refusal::UnknownFakeIp));
    assert_eq!(r.passes.get(), 0);
    // Another port on this host is an ordinary (local-destination) flow.
    let (_, out) = drive(
        Network::Tcp,
        LAN_CLIENT,
        "198.51.100.1:22",
        &r,
        &lab,
        &s,
        &a,
    );
    assert!(matches!(out, Step::Decided(_)));
}

#[test]
fn direct_targets() {
    let r = rules(&["MATCH,DIRECT"], "");
    let lab = fake_lab();
    let a = named("www.example.test");
    // A fake-ip flow resolves its name through the DNS server.
    let d = tcp("198.18.0.5:443", &r, &lab, &settings(false), &a);
    assert_eq!(d.direct_to(), DirectTo::FakeName("video.test".into(), 443));
    assert!(d.fake());
    // override-destination: the sniffed name.
    let d = tcp("203.0.113.2:443", &r, &lab, &settings(true), &a);
    assert_eq!(
        d.direct_to(),
        DirectTo::Name("www.example.test".into(), 443)
    );
    assert_eq!(
        d.destination(),
        Destination::Domain("www.example.test".into(), 443)
    );
    // Otherwise the address, even with a name known.
    let d = tcp("203.0.113.2:22", &r, &lab, &settings(true), &a);
    assert_eq!(d.direct_to(), DirectTo::Addr(sa("203.0.113.2:22")));
    assert_eq!(d.destination(), Destination::Addr(sa("203.0.113.2:22")));
}

#[test]
fn dns_mapping_names_a_real_address() {
    let r = rules(&["DOMAIN,mapped.test,REJECT", "MATCH,DIRECT"], "");
    let mut lab = Lab::default();
    lab.mapped.insert(ip_("203.0.113.2"), "mapped.test".into());
    let s = settings(false);
    // Not a sniffed port: the mapping's name decides in one pass.
    let d = tcp("203.0.113.2:22", &r, &lab, &s, &Answers::default());
    assert_eq!(
        (d.verdict, d.host_from),
        (Verdict::Reject, Some(HostFrom::DnsMapping))
    );
    assert_eq!(r.passes.get(), 1);
    // A sniffed port: a sniffed name wins over the mapping.
    let d = tcp("203.0.113.2:443", &r, &lab, &s, &named("other.test"));
    assert_eq!(
        (d.verdict, d.host_from),
        (Verdict::Direct, Some(HostFrom::Sniffed))
    );
}

#[test]
fn countries_are_looked_up_once_and_follow_the_real_address() {
    let r = rules(&["GEOIP,ZZ,REJECT", "MATCH,DIRECT"], "");
    let mut lab = fake_lab();
    lab.countries.insert(ip_("192.0.2.7"), "ZZ".into());
    let a = Answers {
        real: Some(ip_("192.0.2.7")),
        ..Answers::default()
    };
    let d = tcp("198.18.0.5:80", &r, &lab, &settings(false), &a);
    assert_eq!(d.verdict, Verdict::Reject);
    assert_eq!(d.rules_dst, sa("192.0.2.7:80"));
}

#[test]
fn a_decided_flow_polls_the_same_outcome_without_another_pass() {
    let r = rules(&["MATCH,DIRECT"], "");
    let (lab, s) = (Lab::default(), settings(false));
    let mut d = Decider::new(FlowStart {
        network: Network::Tcp,
        client: ClientAddr(sa(LAN_CLIENT)),
        dst: OrigDst(sa("203.0.113.2:22")),
    });
    let first = d.poll(&r, &lab, &s);
    assert_eq!(d.poll(&r, &lab, &s), first);
    assert_eq!(r.passes.get(), 1);
}

/// The rule lists the properties draw from: name, address, process, port and logic rules
/// in any order, with upstream, DIRECT and REJECT targets.
const POOL: &[&str] = &[
    "DOMAIN-SUFFIX,example.test,up",
    "DOMAIN,video.test,REJECT",
    "DOMAIN-KEYWORD,ads,REJECT",
    "IP-CIDR,203.0.113.0/25,DIRECT",
    "IP-CIDR,192.0.2.0/24,up",
    "IP-CIDR,192.0.2.0/24,REJECT,no-resolve",
    "DST-PORT,22,DIRECT",
    "NETWORK,udp,up",
    "PROCESS-NAME,curl,up",
    "AND,((DST-PORT,443),(DOMAIN-SUFFIX,example.test)),DIRECT",
    "OR,((DOMAIN,a.test),(IP-CIDR,203.0.113.128/25)),REJECT",
    "NOT,((DOMAIN-SUFFIX,example.test)),pick",
    "SUB-RULE,(DST-PORT,443),web",
];

const NAMES: &[&str] = &[
    "www.example.test",
    "video.test",
    "ads.test",
    "a.test",
    "b.test",
];
const DSTS: &[&str] = &[
    "203.0.113.2:443",
    "203.0.113.200:443",
    "203.0.113.2:22",
    "192.0.2.7:443",
    "198.18.0.5:443",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the rules and answers: the decider's verdict is the engine's verdict for
    /// everything the decider learned (so waiting or not never changes where a flow goes),
    /// it asks at most once per kind of answer, and it costs at most two passes, the second
    /// only when a name or real address arrived.
    #[test]
    fn same_verdict_as_one_full_decision(
        picks in proptest::collection::vec(0..POOL.len(), 1..6),
        udp in any::<bool>(),
        local in any::<bool>(),
        dst in 0..DSTS.len(),
        sniffed in proptest::option::of(0..NAMES.len()),
        resolved in any::<bool>(),
        override_destination in any::<bool>(),
    ) {
        let list: Vec<&str> = picks.iter().map(|&i| POOL[i]).collect();
        let r = rules(&list, "sub-rules:\n  web:\n    - DOMAIN-SUFFIX,example.test,REJECT\n");
        let lab = fake_lab();
        let s = settings(override_destination);
        let network = if udp { Network::Udp } else { Network::Tcp };
        let client = if local { LOCAL_CLIENT } else { LAN_CLIENT };
        let a = Answers {
            process: Some(ProcessInfo { uid: Some(0), name: Some("curl".into()), path: None }),
            sniffed: sniffed.map(|i| NAMES[i].to_owned()),
            real: resolved.then(|| ip_("192.0.2.7")),
        };
        let (needs, out) = drive(network, client, DSTS[dst], &r, &lab, &s, &a);
        let d = decided(out);
        let passes = r.passes.get();
        let mut kinds: Vec<_> = needs.iter().map(std::mem::discriminant).collect();
        kinds.dedup();
        prop_assert_eq!(kinds.len(), needs.len());
        let learned = needs.iter().any(|n| !matches!(n, Need::Process));
        prop_assert!(passes == 1 || (passes == 2 && learned), "{} passes for {:?}", passes, needs);

        // The engine's own verdict with everything known at the end.
        let process = needs.contains(&Need::Process).then(|| a.process.clone().unwrap());
        let reference = r.engine.decide(&FlowMeta {
            network,
            src: sa(client),
            dst: d.rules_dst,
            origin: d.origin,
            host: d.host.as_deref(),
            process: process.as_ref(),
            geo: None,
        });
        if !d.sniff_while_connecting {
            prop_assert_eq!(d.verdict, reference.verdict, "{:?} {:?}", list, d);
        }
        // Never sniffs a fake-ip flow; only resolves fake-ip flows.
        let fake = DSTS[dst].starts_with("198.18.");
        let sniffs = needs.iter().any(|n| matches!(n, Need::FirstBytes { .. }));
        prop_assert!(!(fake && sniffs));
        let resolves = needs.iter().any(|n| matches!(n, Need::RealAddr { .. }));
        prop_assert!(fake || !resolves);
        // A name-independent DIRECT verdict is final: the name read for the log changes
        // nothing.
        if d.sniff_while_connecting {
            prop_assert_eq!(d.verdict, Verdict::Direct);
            for name in NAMES {
                let with_name = r.engine.decide(&FlowMeta {
                    network, src: sa(client), dst: d.rules_dst, origin: d.origin,
                    host: Some(name), process: process.as_ref(), geo: None,
                });
                prop_assert_eq!(with_name.verdict, Verdict::Direct);
            }
        }
    }
}
