//! Sanity check of the lab's upstream proxies themselves, without tpgate: from the gateway
//! namespace, minimal clients (SOCKS5, HTTP CONNECT, shadowsocks-rust's client, a Trojan
//! client) reach the server through each upstream over IPv4 and IPv6, the server sees the
//! upstream's own address, and UDP comes back from the address asked. When this fails, the
//! upstream e2e failures say nothing about tpgate.

mod lab;
#[path = "lab/ss_server.rs"]
mod ss_server;
#[path = "lab/trojan_server.rs"]
mod trojan_server;

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use lab::{
    echo_exact, http_connect, pattern, socks5_connect, socks5_udp_exchange, Family, Lab, ProcKind,
    ProcUpstream, TcpEchoServer, UdpEchoServer,
};
use ss_server::{
    ss_tcp_echo, ss_udp_exchange, SsServer, SS2022_METHOD, SS2022_PASSWORD, SS_AEAD_METHOD,
    SS_AEAD_PASSWORD,
};
use trojan_server::{
    trojan_tcp_echo, trojan_udp_exchange, TrojanRequest, TrojanServer, TROJAN_PASSWORD,
};

const WAIT: Duration = Duration::from_secs(5);
const USER: &str = "labuser";
const PASS: &str = "labpass";

/// Echoes `data` over an already-tunnelled stream and checks it comes back byte-exact.
fn echo_over(stream: &TcpStream, data: &[u8], what: &str) {
    let got = echo_exact(stream, data).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        got == data,
        "{what}: echo differs ({} bytes back)",
        got.len()
    );
}

/// Asserts the newest connection the server accepted came from `egress`.
fn assert_last_peer(server: &TcpEchoServer, n: usize, egress: IpAddr, what: &str) {
    let peers = server.wait_peers(n);
    assert_eq!(
        peers[n - 1].ip(),
        egress,
        "{what}: the server must see the upstream's address; saw {peers:?}"
    );
}

#[test]
fn upstreams_work_without_tpgate() {
    let Some(lab) = Lab::with_wan_hosts("upsanity", 7) else {
        return;
    };
    let ms = ProcUpstream::start(&lab, 0, ProcKind::Microsocks { auth: None });
    let ms_auth = ProcUpstream::start(
        &lab,
        1,
        ProcKind::Microsocks {
            auth: Some((USER.to_owned(), PASS.to_owned())),
        },
    );
    let dante = ProcUpstream::start(&lab, 2, ProcKind::Dante);
    let tiny = ProcUpstream::start(&lab, 3, ProcKind::Tinyproxy);
    let ss22 = SsServer::start(&lab, 4, SS2022_METHOD, SS2022_PASSWORD);
    let ss = SsServer::start(&lab, 5, SS_AEAD_METHOD, SS_AEAD_PASSWORD);
    let tj = TrojanServer::start(&lab, 6);
    let gw = &lab.gw;

    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        let udp = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
        let data = pattern(100_000, 11);
        let mut n = 0;
        let mut next = |what: &str, egress: IpAddr| {
            n += 1;
            assert_last_peer(&server, n, egress, &format!("{what} {family:?}"));
        };

        let s = socks5_connect(gw, ms.addr(), None, server.addr).expect("microsocks CONNECT");
        echo_over(&s, &data, "microsocks");
        next("microsocks", ms.egress(family));

        let s = socks5_connect(gw, ms_auth.addr(), Some((USER, PASS)), server.addr)
            .expect("microsocks CONNECT with auth");
        echo_over(&s, &data, "microsocks auth");
        next("microsocks auth", ms_auth.egress(family));
        let refused = socks5_connect(gw, ms_auth.addr(), Some((USER, "wrong")), server.addr);
        assert!(refused.is_err(), "microsocks accepted a wrong password");

        let s = socks5_connect(gw, dante.addr(), None, server.addr).expect("dante CONNECT");
        echo_over(&s, &data, "dante");
        next("dante", dante.egress(family));

        let s = http_connect(gw, tiny.addr(), server.addr).expect("tinyproxy CONNECT");
        echo_over(&s, &data, "tinyproxy");
        next("tinyproxy", tiny.egress(family));

        for (name, up) in [("ss 2022", &ss22), ("ss aead", &ss)] {
            let got = ss_tcp_echo(gw, up, server.addr, &data).expect(name);
            assert!(got == data, "{name}: echo differs ({} bytes)", got.len());
            next(name, up.egress(family));
        }

        let got = trojan_tcp_echo(gw, &tj, TROJAN_PASSWORD, server.addr, &data).expect("trojan");
        assert!(got == data, "trojan: echo differs ({} bytes)", got.len());
        next("trojan", tj.egress(family));
        let bad = trojan_tcp_echo(gw, &tj, "not the password", server.addr, b"x");
        assert!(
            bad.map_or(true, |got| got.is_empty()),
            "trojan relayed with a wrong password"
        );

        // UDP: the reply names the destination; the server saw the upstream's address.
        let mut udp_seen = 0;
        let mut check_udp = |what: &str, got: (SocketAddr, Vec<u8>), egress: IpAddr| {
            assert_eq!(got, (udp.addr, b"ping".to_vec()), "{what} {family:?} reply");
            udp_seen += 1;
            let peers = udp.peers();
            assert_eq!(
                peers.len(),
                udp_seen,
                "{what}: datagrams at the server {peers:?}"
            );
            assert_eq!(peers[udp_seen - 1].ip(), egress, "{what} {family:?} sender");
        };
        let got = socks5_udp_exchange(gw, dante.addr(), udp.addr, b"ping", WAIT)
            .expect("dante UDP ASSOCIATE");
        check_udp("dante udp", got, dante.egress(family));
        for (name, up) in [("ss 2022 udp", &ss22), ("ss aead udp", &ss)] {
            let got = ss_udp_exchange(gw, up, udp.addr, b"ping", WAIT).expect(name);
            check_udp(name, got, up.egress(family));
        }
        let got = trojan_udp_exchange(gw, &tj, udp.addr, b"ping", WAIT).expect("trojan udp");
        check_udp("trojan udp", got, tj.egress(family));
    }
    let reqs = tj.requests();
    assert!(
        reqs.contains(&TrojanRequest::BadPassword) && reqs.contains(&TrojanRequest::UdpAssociate),
        "trojan requests: {reqs:?}"
    );
}

/// A killed upstream refuses new connections; restarted, it works again on the same address.
#[test]
fn upstream_stop_and_restart() {
    let Some(lab) = Lab::with_wan_hosts("upstop", 1) else {
        return;
    };
    let mut ms = ProcUpstream::start(&lab, 0, ProcKind::Microsocks { auth: None });
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    ms.stop();
    let err = lab::tcp_connect(&lab.gw, ms.addr()).expect_err("connect to a stopped microsocks");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    ms.restart();
    let s = socks5_connect(&lab.gw, ms.addr(), None, server.addr).expect("after restart");
    echo_over(&s, b"again", "after restart");
}

/// A delay front slows the round trip through its upstream, and only through it; the
/// delay can be changed while running.
#[test]
fn upstream_delay_is_per_upstream() {
    let Some(lab) = Lab::with_wan_hosts("updelay", 2) else {
        return;
    };
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let fast = ProcUpstream::start(&lab, 0, ProcKind::Microsocks { auth: None });
    let mut slow = ProcUpstream::start_delayed(
        &lab,
        1,
        ProcKind::Microsocks { auth: None },
        Duration::from_millis(100),
    );
    let time = |up: &ProcUpstream<'_>| {
        let t = std::time::Instant::now();
        let s = socks5_connect(&lab.gw, up.addr(), None, server.addr).expect("connect");
        echo_over(&s, b"x", "timed");
        t.elapsed()
    };
    let f = time(&fast);
    assert!(f < Duration::from_millis(100), "fast upstream took {f:?}");
    // Greeting, CONNECT and one echo: three round trips, 200 ms each.
    let s = time(&slow);
    assert!(
        s > Duration::from_millis(550),
        "delayed upstream took only {s:?}"
    );
    assert_last_peer(&server, 2, slow.egress(Family::V4), "delayed");
    slow.set_delay(Duration::ZERO);
    let s = time(&slow);
    assert!(s < Duration::from_millis(100), "delay 0 still took {s:?}");
    let data = pattern(1 << 20, 3);
    let stream = socks5_connect(&lab.gw, slow.addr(), None, server.addr).expect("connect");
    echo_over(&stream, &data, "1 MiB through the delay front");
}
