//! End-to-end: a LAN client's traffic reaches the server THROUGH a real upstream proxy that
//! tpgate dials: microsocks (SOCKS5, also with username/password), dante (SOCKS5 with UDP
//! ASSOCIATE), tinyproxy (HTTP CONNECT), shadowsocks-rust's server (a 2022 and a classic
//! AEAD cipher) and a Trojan server. The server must see the upstream host's address (not
//! the gateway's 203.0.113.1), a 1 MiB echo must come back byte-exact, and UDP replies must
//! come from the exact address the client sent to. Also: a dead upstream closes the
//! client's connection cleanly and tpgate goes on.

mod lab;
#[path = "lab/ss_server.rs"]
mod ss_server;
#[path = "lab/trojan_server.rs"]
mod trojan_server;

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use lab::*;
use ss_server::{SsServer, SS2022_METHOD, SS2022_PASSWORD, SS_AEAD_METHOD, SS_AEAD_PASSWORD};
use trojan_server::{TrojanRequest, TrojanServer};

/// Starts tpgate with one upstream `up` as the only proxy and `MATCH,up`.
fn start_with<'l>(lab: &'l Lab, proxy_yaml: &str) -> Tpgate<'l> {
    let config = lab.write_proxy_config(&[proxy_yaml.to_owned()], &[], &["MATCH,up"]);
    Tpgate::start(lab, &config)
}

#[test]
fn microsocks_carries_tcp() {
    let Some(lab) = Lab::with_wan_hosts("upms", 1) else {
        return;
    };
    let up = ProcUpstream::start(&lab, 0, ProcKind::Microsocks { auth: None });
    let tp = start_with(&lab, &up.proxy_yaml("up"));
    tcp_through(&lab, &tp, |f| up.egress(f), "microsocks");
}

#[test]
fn microsocks_with_password_carries_tcp() {
    let Some(lab) = Lab::with_wan_hosts("upmsauth", 1) else {
        return;
    };
    let auth = Some(("lab-user".to_owned(), "lab pass:word".to_owned()));
    let up = ProcUpstream::start(&lab, 0, ProcKind::Microsocks { auth });
    let tp = start_with(&lab, &up.proxy_yaml("up"));
    tcp_through(&lab, &tp, |f| up.egress(f), "microsocks with password");
}

/// Wrong credentials: the client's connection ends cleanly (reset or EOF, no data), the
/// server never sees it, tpgate goes on.
#[test]
fn microsocks_wrong_password_fails_cleanly() {
    let Some(lab) = Lab::with_wan_hosts("upmsbad", 1) else {
        return;
    };
    let auth = Some(("lab-user".to_owned(), "right".to_owned()));
    let up = ProcUpstream::start(&lab, 0, ProcKind::Microsocks { auth });
    let wrong = up.proxy_yaml("up").replace("\"right\"", "\"wrong\"");
    let mut tp = start_with(&lab, &wrong);
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    expect_clean_failure(&lab, server.addr);
    assert_eq!(
        server.peers(),
        vec![],
        "a refused proxy connection reached the server"
    );
    assert!(
        tp.try_status().is_none(),
        "tpgate exited:\n{}",
        tp.log_text()
    );
}

#[test]
fn dante_carries_tcp() {
    let Some(lab) = Lab::with_wan_hosts("updante", 1) else {
        return;
    };
    let up = ProcUpstream::start(&lab, 0, ProcKind::Dante);
    let tp = start_with(&lab, &up.proxy_yaml("up"));
    tcp_through(&lab, &tp, |f| up.egress(f), "dante");
}

#[test]
fn dante_carries_udp() {
    let Some(lab) = Lab::with_wan_hosts("updanteudp", 1) else {
        return;
    };
    let up = ProcUpstream::start(&lab, 0, ProcKind::Dante);
    let tp = start_with(&lab, &up.proxy_yaml("up"));
    udp_through(&lab, &tp, |f| up.egress(f), "dante");
}

#[test]
fn tinyproxy_carries_tcp() {
    let Some(lab) = Lab::with_wan_hosts("uptiny", 1) else {
        return;
    };
    let up = ProcUpstream::start(&lab, 0, ProcKind::Tinyproxy);
    let tp = start_with(&lab, &up.proxy_yaml("up"));
    tcp_through(&lab, &tp, |f| up.egress(f), "tinyproxy");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

fn shadowsocks(tag: &str, method: &'static str, password: &'static str, proto: Proto) {
    let Some(lab) = Lab::with_wan_hosts(tag, 1) else {
        return;
    };
    let up = SsServer::start(&lab, 0, method, password);
    let tp = start_with(&lab, &up.proxy_yaml("up"));
    match proto {
        Proto::Tcp => tcp_through(&lab, &tp, |f| up.egress(f), method),
        Proto::Udp => udp_through(&lab, &tp, |f| up.egress(f), method),
    }
}

#[test]
fn shadowsocks_2022_carries_tcp() {
    shadowsocks("upss2022", SS2022_METHOD, SS2022_PASSWORD, Proto::Tcp);
}

#[test]
fn shadowsocks_2022_carries_udp() {
    shadowsocks("upss2022udp", SS2022_METHOD, SS2022_PASSWORD, Proto::Udp);
}

#[test]
fn shadowsocks_aead_carries_tcp() {
    shadowsocks("upssaead", SS_AEAD_METHOD, SS_AEAD_PASSWORD, Proto::Tcp);
}

#[test]
fn shadowsocks_aead_carries_udp() {
    shadowsocks("upssaeadudp", SS_AEAD_METHOD, SS_AEAD_PASSWORD, Proto::Udp);
}

fn trojan(tag: &str, proto: Proto) {
    let Some(lab) = Lab::with_wan_hosts(tag, 1) else {
        return;
    };
    let up = TrojanServer::start(&lab, 0);
    let tp = start_with(&lab, &up.proxy_yaml("up"));
    match proto {
        Proto::Tcp => tcp_through(&lab, &tp, |f| up.egress(f), "trojan"),
        Proto::Udp => udp_through(&lab, &tp, |f| up.egress(f), "trojan"),
    }
    let reqs = up.requests();
    assert!(
        !reqs.contains(&TrojanRequest::BadPassword),
        "tpgate sent a wrong password hash: {reqs:?}"
    );
    let a = Family::V4.addrs();
    let want = match proto {
        Proto::Tcp => TrojanRequest::Connect(SocketAddr::new(a.server, 80)),
        Proto::Udp => TrojanRequest::UdpAssociate,
    };
    assert!(
        reqs.contains(&want),
        "trojan server saw no {want:?}: {reqs:?}"
    );
}

#[test]
fn trojan_carries_tcp() {
    trojan("uptrojan", Proto::Tcp);
}

#[test]
fn trojan_carries_udp() {
    trojan("uptrojanudp", Proto::Udp);
}

/// Connects from the LAN client to `dst` and expects the connection to end without data:
/// refused, reset, or EOF within 10 s (never a hang).
fn expect_clean_failure(lab: &Lab, dst: SocketAddr) {
    let mut s = match tcp_connect(&lab.client, dst) {
        Err(e) => {
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
                ),
                "connect {dst}: {e}"
            );
            return;
        }
        Ok(s) => s,
    };
    let _ = s.write_all(b"hello?");
    let mut buf = [0u8; 64];
    match s.read_patiently(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("got {n} bytes through a failing upstream: {:?}", &buf[..n]),
        Err(e) => panic!("expected reset or EOF from {dst}, got {e}"),
    }
}

/// The only upstream is dead: each client connection is closed cleanly, tpgate keeps
/// running, and traffic flows again once the upstream is back.
#[test]
fn dead_upstream_closes_connections_and_tpgate_goes_on() {
    let Some(lab) = Lab::with_wan_hosts("updead", 1) else {
        return;
    };
    let mut up = ProcUpstream::start(&lab, 0, ProcKind::Microsocks { auth: None });
    let mut tp = start_with(&lab, &up.proxy_yaml("up"));
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    assert_via(
        lan_tcp(&lab, &server, 1000),
        up.egress(Family::V4),
        "before",
    );

    up.stop();
    for _ in 0..3 {
        expect_clean_failure(&lab, server.addr);
    }
    assert_eq!(
        server.peers().len(),
        1,
        "nothing reached the server meanwhile"
    );
    assert!(
        tp.try_status().is_none(),
        "tpgate exited with its upstream dead:\n{}",
        tp.log_text()
    );

    up.restart();
    let via = poll(Duration::from_secs(10), || {
        try_lan_tcp(&lab, &server, 1000).ok()
    })
    .expect("traffic through the upstream again after its restart");
    assert_via(via, up.egress(Family::V4), "after restart");
}
