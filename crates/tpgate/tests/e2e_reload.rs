//! End-to-end: hot reload (`tpgate reload`, SIGHUP). New flows follow the new rules while a
//! TCP connection and a UDP flow opened before keep going; a bad config is refused with its
//! FILE:LINE:COL and changes nothing; the kernel-offloaded ranges follow the rules.

mod lab;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use lab::{
    tcp_connect, tcp_echo, tpgate_oneshot, Backend, Family, Lab, TcpEchoServer, Tpgate,
    UdpEchoServer,
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
        let (n, from) = udp.recv_from(&mut buf).expect("udp reply");
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
