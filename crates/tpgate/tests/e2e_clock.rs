//! End-to-end: the wall clock jumping forward and back. tpgate runs under libfaketime
//! (Debian `faketime`) with only the wall clock faked (`DONT_FAKE_MONOTONIC=1`), its offset
//! read from a file the test rewrites: a day ahead, then a day behind. Its log timestamps
//! show each jump took effect; through both, health checks keep their pace and new TCP
//! connections and UDP flows are relayed: the timers run on monotonic time.
//!
//! Needs root and libfaketime (SKIPPED without it).

mod lab;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use lab::{
    health_addr, poll, tcp_echo, Family, Http204Server, Lab, PatientRecv, TcpEchoServer, Tpgate,
    UdpEchoServer,
};

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn timers_survive_wall_clock_jumps() {
    if !Path::new(FAKETIME_LIB).exists() {
        eprintln!(
            "SKIPPED timers_survive_wall_clock_jumps: no {FAKETIME_LIB} (apt-get install faketime)"
        );
        return;
    }
    let Some(lab) = Lab::new("clock") else {
        return;
    };
    let a = Family::V4.addrs();
    let offset = lab.write_file("faketime", "+0\n");
    let group = format!(
        "{{name: auto, type: url-test, proxies: [DIRECT], url: \"{}\", interval: 1, lazy: false}}",
        lab::health_url()
    );
    let config = lab.write_file(
        "tpgate.yaml",
        &lab.proxy_config_text(&[], &[group], &["DST-PORT,80,auto", "MATCH,DIRECT"]),
    );
    let health = Http204Server::start(&lab.server, health_addr());
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let udp_server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
    let wrapper: Vec<String> = [
        "env".to_owned(),
        format!("LD_PRELOAD={FAKETIME_LIB}"),
        format!("FAKETIME_TIMESTAMP_FILE={}", offset.display()),
        "FAKETIME_NO_CACHE=1".to_owned(),
        "DONT_FAKE_MONOTONIC=1".to_owned(),
    ]
    .into();
    let tp = Tpgate::start_wrapped(&lab, &config, &wrapper);

    // Health checks (every second), a new TCP connection and a new UDP flow, all working.
    let alive = |step: &str| {
        let before = health.peers().len();
        assert!(
            poll(Duration::from_secs(10), || Some(())
                .filter(|()| health.peers().len() >= before + 2))
            .is_some(),
            "{step}: health checks stopped ({} so far)",
            health.peers().len()
        );
        let x = tcp_echo(&lab.client, server.addr, step.as_bytes())
            .unwrap_or_else(|e| panic!("{step}: tcp: {e}"));
        assert_eq!(x.echoed, step.as_bytes(), "{step}");
        let u = lab
            .client
            .enter(|| UdpSocket::bind(SocketAddr::new(a.client, 0)))
            .expect("udp bind");
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u.send_to(step.as_bytes(), udp_server.addr)
            .expect("udp send");
        let mut buf = [0u8; 64];
        let (n, from) = u
            .recv_from_patiently(&mut buf)
            .unwrap_or_else(|e| panic!("{step}: udp: {e}"));
        assert_eq!(
            (&buf[..n], from),
            (step.as_bytes(), udp_server.addr),
            "{step}"
        );
    };
    // The date the log shows on the latest flow line to the echo server.
    let logged_day = |step: &str| -> String {
        let line = tp
            .wait_for_line(Duration::from_secs(5), |l| {
                l.contains(" -> ") && l.contains("tcp ")
            })
            .expect("a flow line");
        let _ = line;
        let log = tp.log_text();
        let last = log
            .lines()
            .rfind(|l| l.contains(&format!(" -> {}", server.addr)))
            .unwrap_or_else(|| panic!("{step}: no flow line:\n{log}"))
            .to_owned();
        // `2026-12-06T15:00:00.000000Z  INFO tcp ...`
        last.split_whitespace()
            .find(|t| t.len() > 10 && t.as_bytes()[10] == b'T')
            .and_then(|t| t.get(..10))
            .unwrap_or_else(|| panic!("{step}: no timestamp in {last}"))
            .to_owned()
    };
    alive("at the real time");
    let today = logged_day("at the real time");

    std::fs::write(&offset, "+1d\n").unwrap();
    alive("a day ahead");
    let ahead = logged_day("a day ahead");
    assert!(ahead > today, "the jump took effect: {today} -> {ahead}");

    std::fs::write(&offset, "-1d\n").unwrap();
    alive("a day behind");
    let behind = logged_day("a day behind");
    assert!(
        behind < today,
        "the jump back took effect: {today} -> {behind}"
    );
}
