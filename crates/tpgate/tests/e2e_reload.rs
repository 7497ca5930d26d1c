//! End-to-end: hot reload (`tpgate reload`, SIGHUP). New flows follow the new rules while a
//! TCP connection and a UDP flow opened before keep going; a bad config is refused with its
//! FILE:LINE:COL and changes nothing; the kernel-offloaded ranges follow the rules.

mod lab;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use lab::{
    tcp_connect, tcp_echo, tpgate_oneshot, Backend, Family, Lab, PatientRecv, TcpEchoServer,
    Tpgate, UdpEchoServer,
};

fn reload(lab: &Lab, tp: &Tpgate<'_>, times: usize) {
    let out = tpgate_oneshot(&lab.gw, &["reload"]);
    assert!(out.success(), "tpgate reload: {}", out.stderr);
    let done = |log: &str| {
        log.matches("config reloaded").count() + log.matches("reload refused").count() >= times
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done(&tp.log_text()) {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload #{times} in the log:\n{}",
            tp.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_swaps_rules_for_new_flows_and_keeps_established_ones() {
    let Some(mut lab) = Lab::new("reload") else {
        return;
    };
    lab.backend = Backend::Nftables;
    let a = Family::V4.addrs();
    let config = lab.write_file(
        "tpgate.yaml",
        &lab.proxy_config_text(&[], &[], &["MATCH,DIRECT"]),
    );
    let tp = Tpgate::start(&lab, &config);
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let udp_server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));

    // Established before the reload: a TCP connection and a UDP flow.
    let mut long = tcp_connect(&lab.client, server.addr).expect("connect");
    long.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let echo = |s: &mut std::net::TcpStream, msg: &[u8]| {
        s.write_all(msg).expect("write");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg);
    };
    echo(&mut long, b"before");
    let udp = lab
        .client
        .enter(|| UdpSocket::bind(SocketAddr::new(a.client, 0)))
        .expect("udp bind");
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let udp_round = |msg: &[u8]| {
        udp.send_to(msg, udp_server.addr).expect("udp send");
        let mut buf = [0u8; 64];
        let (n, from) = udp.recv_from_patiently(&mut buf).expect("udp reply");
        assert_eq!((&buf[..n], from), (msg, udp_server.addr));
    };
    udp_round(b"udp before");

    // New rules: port 80 and UDP 7000 are rejected for new flows.
    let text = lab.proxy_config_text(
        &[],
        &[],
        &["DST-PORT,80,REJECT", "DST-PORT,7000,REJECT", "MATCH,DIRECT"],
    );
    std::fs::write(&config, text).unwrap();
    reload(&lab, &tp, 1);
    assert!(
        tp.log_text().contains("config reloaded"),
        "{}",
        tp.log_text()
    );
    let rejected = tcp_echo(&lab.client, server.addr, b"after");
    assert!(
        rejected.is_err() || rejected.as_ref().is_ok_and(|x| x.echoed.is_empty()),
        "a new flow follows the new rules: {rejected:?}"
    );
    echo(&mut long, b"established TCP keeps going");
    udp_round(b"established UDP keeps going");

    // A bad config is refused with its position; nothing changes.
    std::fs::write(&config, "rules:\n  - NOT-A-RULE,x,DIRECT\n").unwrap();
    reload(&lab, &tp, 2);
    let log = tp.log_text();
    assert!(log.contains("reload refused"), "{log}");
    let pos = format!("{}:2:", config.display());
    assert!(log.contains(&pos), "the refusal names {pos}:\n{log}");
    let still = tcp_echo(&lab.client, server.addr, b"x");
    assert!(
        still.is_err() || still.as_ref().is_ok_and(|x| x.echoed.is_empty()),
        "the previous rules stay: {still:?}"
    );
    echo(&mut long, b"still");

    // The offloaded ranges follow the rules.
    let text = lab.proxy_config_text(
        &[],
        &[],
        &[&format!("IP-CIDR,{}/32,DIRECT", a.server), "MATCH,DIRECT"],
    );
    std::fs::write(&config, text).unwrap();
    reload(&lab, &tp, 3);
    let set = lab
        .gw
        .sh("nft", &["list", "set", "inet", "tpgate", "direct4"]);
    assert!(
        set.contains(&a.server.to_string()),
        "offloaded after the reload:\n{set}"
    );
    let routed = tcp_echo(&lab.client, server.addr, b"routed").expect("offloaded flow");
    assert_eq!(routed.echoed, b"routed");
    let peers = server.wait_peers(2);
    assert_eq!(
        peers.last().copied(),
        Some(routed.local),
        "routed by the kernel now"
    );
}

/// The interception state as the gateway's kernel shows it: the nftables ruleset and every
/// iptables variant's rules.
fn interception_text(lab: &Lab) -> String {
    let mut text = lab.gw.exec("nft", &["list", "ruleset"]).stdout;
    for save in lab::IPTABLES_SAVES {
        text.push_str(&lab.gw.exec(save, &[]).stdout);
    }
    text
}

/// The gateway's tpgate policy-routing rules of one family (`fwmark` lines).
fn fwmark_rules(lab: &Lab, family: Family) -> Vec<String> {
    lab.gw
        .ip_rules(family)
        .lines()
        .filter(|l| l.contains("fwmark"))
        .map(str::to_owned)
        .collect()
}

/// Counts, in the server's namespace, packets that arrive with a LAN client's source
/// address: a packet that passed the gateway unintercepted (relayed ones come from the
/// gateway's WAN address).
struct LeakCounter<'a>(&'a Lab);

impl<'a> LeakCounter<'a> {
    fn install(lab: &'a Lab) -> Self {
        let v4 = Family::V4.addrs().client;
        let v6 = Family::V6.addrs().client;
        let script = format!(
            "table inet tpgleak {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  ip saddr {v4} counter\n  ip6 saddr {v6} counter\n }}\n}}\n"
        );
        let path = lab.write_file("leak.nft", &script);
        let out = lab.server.exec("nft", &["-f", &path.display().to_string()]);
        assert!(out.success(), "leak counter: {}", out.stderr);
        Self(lab)
    }

    fn packets(&self) -> u64 {
        let text = self
            .0
            .server
            .sh("nft", &["list", "chain", "inet", "tpgleak", "input"]);
        text.split("packets ")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

/// How long the UDP flow waits for each answer.
const UDP_WAIT: Duration = Duration::from_secs(3);

/// Ten reloads while a bulk TCP transfer and a UDP flow run: rules, the tproxy port, the LAN
/// interfaces, the bypass list and the marks change, one file is bad and one payload (via
/// `PUT /configs`) is bad. Nothing established breaks (the UDP flow may lose one datagram,
/// as UDP may, no more), every new connection in between is intercepted, and the server
/// never sees a packet from the client's own address. A port changed back within the
/// seconds its old listeners keep serving takes them back.
fn reloads_under_load(backend: Backend, tag: &str) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let Some(mut lab) = Lab::new(tag) else {
        return;
    };
    lab.backend = backend;
    let a = Family::V4.addrs();
    // A second LAN-side interface, added to and removed from `lan-interfaces`.
    let extra = "tpgx0";
    lab.gw.ip(&[
        "link", "add", extra, "type", "veth", "peer", "name", "tpgx1",
    ]);
    lab.gw.ip(&["link", "set", extra, "up"]);
    let base = lab.proxy_config_text(&[], &[], &["DST-PORT,9,REJECT", "MATCH,DIRECT"]);
    let port_line = format!("tproxy-port: {}", lab::TPROXY_PORT);
    let lan_line = format!("lan-interfaces: [{}]", lab.lan_if);
    let other_port = lab::TPROXY_PORT + 1;
    let with_port = |t: &str| t.replace(&port_line, &format!("tproxy-port: {other_port}"));
    let with_extra = |t: &str| {
        t.replace(
            &lan_line,
            &format!("lan-interfaces: [{}, {extra}]", lab.lan_if),
        )
    };
    let with_marks = |t: &str| {
        t.replace(
            "  local: true\n",
            "  local: true\n  fwmark: 0x77\n  route-table: 177\n",
        )
    };
    let with_bypass = |t: &str| t.replace("  bypass:\n", "  bypass:\n    - 203.0.113.200/32\n");
    let config = lab.write_file("tpgate.yaml", &base);
    let tp = Tpgate::start(&lab, &config);
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let udp_server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
    let leaks = LeakCounter::install(&lab);

    // The load: a bulk TCP echo and a UDP request/response flow, both opened before.
    let stop = Arc::new(AtomicBool::new(false));
    let bulk_bytes = Arc::new(AtomicU64::new(0));
    let bulk = {
        let mut s = tcp_connect(&lab.client, server.addr).expect("bulk connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (stop, bytes) = (stop.clone(), bulk_bytes.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let chunk = lab::pattern(64 * 1024, 7);
            let mut back = vec![0u8; chunk.len()];
            // Bounded: at most 100k rounds (about 6.5 GB), or until told to stop.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                s.write_all(&chunk)
                    .map_err(|e| format!("bulk write: {e}"))?;
                s.read_exact(&mut back)
                    .map_err(|e| format!("bulk read: {e}"))?;
                if back != chunk {
                    return Err("bulk: the echo differs".into());
                }
                bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    let udp_rounds = Arc::new(AtomicU64::new(0));
    let udp = {
        let sock = lab
            .client
            .enter(|| UdpSocket::bind(SocketAddr::new(a.client, 0)))
            .expect("udp bind");
        sock.set_read_timeout(Some(UDP_WAIT)).unwrap();
        let (stop, rounds, dst) = (stop.clone(), udp_rounds.clone(), udp_server.addr);
        let started = std::time::Instant::now();
        std::thread::spawn(move || -> Result<Vec<String>, String> {
            let mut buf = [0u8; 64];
            let mut lost = Vec::new();
            let mut missed_in_a_row = 0;
            for seq in 0u64..100_000 {
                if stop.load(Ordering::Relaxed) {
                    return Ok(lost);
                }
                let msg = seq.to_be_bytes();
                sock.send_to(&msg, dst)
                    .map_err(|e| format!("udp send: {e}"))?;
                // The answer to this datagram; a late one to an earlier (lost) one is
                // skipped.
                let answered = loop {
                    match sock.recv_from_patiently(&mut buf) {
                        Ok((n, from)) if from == dst && n == 8 => {
                            let got = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
                            if got == seq {
                                break true;
                            }
                            if got > seq {
                                return Err(format!("udp datagram {got} answered before sent"));
                            }
                        }
                        Ok((n, from)) => {
                            return Err(format!("udp datagram {seq}: {:?} from {from}", &buf[..n]))
                        }
                        Err(_) => break false,
                    }
                };
                if answered {
                    missed_in_a_row = 0;
                    rounds.fetch_add(1, Ordering::Relaxed);
                } else {
                    lost.push(format!("{seq} (sent at {:?})", started.elapsed()));
                    missed_in_a_row += 1;
                    if missed_in_a_row == 3 {
                        return Err(format!("the UDP flow broke: datagrams {lost:?} unanswered"));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(lost)
        })
    };
    let wait_progress = |what: &str, counter: &AtomicU64| {
        let start = counter.load(Ordering::Relaxed);
        // Generous: a loaded CI machine runs the debug build slowly; a broken flow never moves.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while counter.load(Ordering::Relaxed) <= start {
            assert!(std::time::Instant::now() < deadline, "{what} stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_progress("bulk TCP", &bulk_bytes);
    wait_progress("UDP flow", &udp_rounds);

    let api = lab::Api::new(&lab, None);
    let probe = |step: &str| {
        let x = tcp_echo(&lab.client, server.addr, step.as_bytes())
            .unwrap_or_else(|e| panic!("{step}: a new connection failed: {e}"));
        assert_eq!(x.echoed, step.as_bytes(), "{step}");
        let peer = server.peers().last().copied().expect("a peer");
        assert_eq!(
            peer.ip(),
            a.gw_wan,
            "{step}: the new connection was intercepted"
        );
    };
    // (config text, what the kernel must show afterwards)
    let steps: Vec<(&str, String)> = vec![
        ("rules", base.replace("DST-PORT,9,", "DST-PORT,10,")),
        ("tproxy-port", with_port(&base)),
        ("lan-interfaces", with_extra(&with_port(&base))),
        ("bad file", "rules:\n  - NOT-A-RULE,x,DIRECT\n".to_owned()),
        ("bypass", with_bypass(&with_extra(&with_port(&base)))),
        (
            "marks",
            with_marks(&with_bypass(&with_extra(&with_port(&base)))),
        ),
        ("port back", with_marks(&with_bypass(&with_extra(&base)))),
        ("lan back", with_marks(&with_bypass(&base))),
        ("marks back", with_bypass(&base)),
        ("bypass back", base.clone()),
    ];
    // UDP sockets listening on the tproxy port: the port changes back within the seconds
    // its old listeners keep serving, and they are taken back rather than joined by new ones
    // (whose SO_REUSEPORT group would lose what the kernel handed the old ones as they close).
    let udp_listeners = |port: u16| {
        lab.gw
            .sh("ss", &["-Huln", &format!("sport = :{port}")])
            .lines()
            .count()
    };
    let listeners_at_start = udp_listeners(lab::TPROXY_PORT);
    assert!(
        listeners_at_start >= 2,
        "UDP listeners: {listeners_at_start}"
    );
    let mut refused = 0;
    for (i, (step, text)) in steps.iter().enumerate() {
        std::fs::write(&config, text).unwrap();
        reload(&lab, &tp, i + 1);
        if *step == "bad file" {
            refused += 1;
        }
        let log = tp.log_text();
        assert_eq!(
            log.matches("reload refused").count(),
            refused,
            "{step}:\n{log}"
        );
        let kernel = interception_text(&lab);
        let port_now = if text.contains(&format!("tproxy-port: {other_port}")) {
            other_port
        } else {
            lab::TPROXY_PORT
        };
        let (port_then, port_not) = if *step == "bad file" {
            (other_port, lab::TPROXY_PORT)
        } else {
            (
                port_now,
                if port_now == other_port {
                    lab::TPROXY_PORT
                } else {
                    other_port
                },
            )
        };
        assert!(
            kernel.contains(&port_then.to_string()),
            "{step}: port {port_then}:\n{kernel}"
        );
        assert!(
            !kernel.contains(&port_not.to_string()),
            "{step}: port {port_not} gone:\n{kernel}"
        );
        let extra_wanted = text.contains(extra) || *step == "bad file";
        assert_eq!(
            kernel.contains(extra),
            extra_wanted,
            "{step}: {extra}:\n{kernel}"
        );
        let marks_wanted = text.contains("route-table: 177");
        for family in [Family::V4, Family::V6] {
            let rules = fwmark_rules(&lab, family);
            assert_eq!(
                rules.len(),
                1,
                "{step}: one tpgate rule per family: {rules:?}"
            );
            assert_eq!(rules[0].contains("177"), marks_wanted, "{step}: {rules:?}");
        }
        if *step == "port back" {
            assert_eq!(
                udp_listeners(lab::TPROXY_PORT),
                listeners_at_start,
                "UDP listeners on {} after the port changed back",
                lab::TPROXY_PORT
            );
        }
        probe(step);
        wait_progress(&format!("{step}: bulk TCP"), &bulk_bytes);
        wait_progress(&format!("{step}: UDP flow"), &udp_rounds);
    }

    // Through the controller: a bad payload is refused with its position, a good one
    // applied.
    let put = |text: &str| {
        let body = serde_json::json!({ "payload": text }).to_string();
        api.request("PUT", "/configs?force=true", Some(&body))
    };
    let bad = put("rules:\n  - NOT-A-RULE,x,DIRECT\n");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("payload:2:"),
        "{}",
        bad.body
    );
    let good = put(&with_port(&base));
    assert_eq!(good.status, 204, "{}", good.body);
    assert!(interception_text(&lab).contains(&other_port.to_string()));
    assert_eq!(
        api.request("GET", "/configs", None).json()["tproxy-port"],
        other_port
    );
    probe("payload");
    let outside = api.request("PUT", "/configs", Some(r#"{"path": "/etc/passwd"}"#));
    assert_eq!(outside.status, 400, "{}", outside.body);
    // A restart is a reload of the file (the last step wrote `base`: the port goes back).
    let restart = api.request("POST", "/restart", None);
    assert_eq!(
        (restart.status, restart.json()["status"].as_str()),
        (200, Some("ok"))
    );
    assert!(!interception_text(&lab).contains(&other_port.to_string()));
    probe("restart");

    // The metrics saw all of it: eleven reloads applied, three refused (a file, a payload, a
    // path), the live UDP flow in the NAT table, and the probes counted by action and rule.
    let scrape = api.request("GET", "/metrics", None);
    assert_eq!(scrape.status, 200);
    let parsed = prometheus_parse::Scrape::parse(scrape.body.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = parsed
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {labels:?} in\n{}", scrape.body));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        value("tpgate_reloads_total", &[("result", "applied")]),
        11.0
    );
    assert_eq!(value("tpgate_reloads_total", &[("result", "refused")]), 3.0);
    assert!(value("tpgate_udp_nat_flows", &[]) >= 1.0);
    // The parser splits label values at commas: the rule is read from the line itself.
    let line = r#"tpgate_flows_total{network="tcp",origin="forwarded",action="DIRECT",rule="MATCH,DIRECT"} "#;
    let probes: f64 = scrape
        .body
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MATCH,DIRECT flows in\n{}", scrape.body));
    assert!(
        probes >= 13.0,
        "the bulk connection and twelve probes: {probes}"
    );

    stop.store(true, Ordering::Relaxed);
    bulk.join()
        .expect("bulk thread")
        .expect("the bulk transfer kept going");
    let lost = udp
        .join()
        .expect("udp thread")
        .expect("the UDP flow kept going");
    // UDP may lose a datagram, and the flow must go on after it; more than one lost in a
    // run is a fault. (One was lost in about one run in fifteen while a port changed back
    // before its old listeners closed: they are taken back now, checked above.)
    if !lost.is_empty() {
        eprintln!("{tag}: UDP datagrams lost: {lost:?}\n{}", tp.log_text());
    }
    assert!(lost.len() <= 1, "UDP datagrams lost: {lost:?}");
    assert_eq!(
        leaks.packets(),
        0,
        "no packet reached the server unintercepted"
    );
    eprintln!(
        "{tag}: {} MB echoed, {} UDP rounds across the reloads",
        bulk_bytes.load(Ordering::Relaxed) >> 20,
        udp_rounds.load(Ordering::Relaxed)
    );
}

#[test]
fn reloads_under_load_nftables() {
    reloads_under_load(Backend::Nftables, "reloadnft");
}

#[test]
fn reloads_under_load_iptables() {
    reloads_under_load(Backend::IptablesLegacy, "reloadipt");
}

/// A select group's choice made in the controller survives a reload, and new flows follow
/// it (proved at the server).
#[test]
fn select_choices_survive_a_reload() {
    let Some(mut lab) = Lab::new("reloadsel") else {
        return;
    };
    lab.backend = Backend::Nftables;
    let a = Family::V4.addrs();
    let groups = ["{name: G, type: select, proxies: [REJECT, DIRECT]}".to_owned()];
    let text = |extra: &str| {
        lab.proxy_config_text(&[], &groups, &[extra, "DST-PORT,80,G", "MATCH,DIRECT"])
    };
    let config = lab.write_file("tpgate.yaml", &text("DST-PORT,9,REJECT"));
    let tp = Tpgate::start(&lab, &config);
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let api = lab::Api::new(&lab, None);
    let refused = tcp_echo(&lab.client, server.addr, b"x");
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|x| x.echoed.is_empty()),
        "G starts on REJECT: {refused:?}"
    );
    assert_eq!(api.select("G", "DIRECT").status, 204);
    std::fs::write(&config, text("DST-PORT,10,REJECT")).unwrap();
    reload(&lab, &tp, 1);
    assert!(
        tp.log_text().contains("config reloaded"),
        "{}",
        tp.log_text()
    );
    assert_eq!(api.now("G"), "DIRECT", "the choice survived the reload");
    let through = tcp_echo(&lab.client, server.addr, b"after").expect("G is DIRECT now");
    assert_eq!(through.echoed, b"after");
    assert_eq!(server.wait_peers(1)[0].ip(), a.gw_wan, "relayed by tpgate");
}
