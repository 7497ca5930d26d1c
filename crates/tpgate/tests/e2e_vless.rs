//! End-to-end against the real sing-box as the VLESS and the VMess (AEAD) server, plain and
//! inside TLS: a LAN client's TCP (IPv4 and IPv6 destinations, a 1 MiB byte-exact echo, a
//! server-first exchange) and UDP reach the server through it, the server seeing the upstream host's
//! address; a wrong uuid fails that one connection cleanly, with a log line, and tpgate
//! goes on.

mod lab;
#[path = "lab/sing_box.rs"]
mod sing_box;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lab::{
    assert_via, lan_tcp, lan_udp, lan_udp_rounds, tcp_connect, Family, Lab, TcpEchoServer, Tpgate,
    UdpEchoServer,
};
use sing_box::{sing_box, Inbound, SingBox, VLESS_UUID, WRONG_UUID};

/// Bytes each way in the bulk echo.
const BULK: usize = 1 << 20;

/// A lab with one WAN host running sing-box with `inbound`, and tpgate using it as `up`
/// (plus `bad`, the same server with a wrong uuid, for port 81).
fn with_server(tag: &str, inbound: Inbound, test: impl FnOnce(&Lab, &SingBox<'_>, &Tpgate<'_>)) {
    let Some(bin) = sing_box() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts(tag, 1) else {
        return;
    };
    let up = SingBox::start(&lab, 0, &bin, inbound);
    let config = lab.write_proxy_config(
        &[
            up.proxy_yaml("up", VLESS_UUID),
            up.proxy_yaml("bad", WRONG_UUID),
        ],
        &[],
        &["DST-PORT,81,bad", "MATCH,up"],
    );
    let tp = Tpgate::start(&lab, &config);
    test(&lab, &up, &tp);
}

/// TCP over IPv4 and IPv6: a short and a 1 MiB echo, a server-first exchange.
fn tcp_through(lab: &Lab, up: &SingBox<'_>, tp: &Tpgate<'_>, what: &str) {
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let egress = up.egress(family);
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        let via = lan_tcp(lab, &server, 1000);
        assert_via(via, egress, &format!("{what} tcp {family:?}"));
        tp.expect_flow("tcp", via.local, server.addr, "up");
        let via = lan_tcp(lab, &server, BULK);
        assert_via(via, egress, &format!("{what} 1 MiB {family:?}"));
        server_first(lab, SocketAddr::new(a.server, 25), egress, what);
    }
}

/// The server greets first (SMTP, SSH): the greeting must come through at once although
/// the client has sent nothing, and the answer must reach the server.
fn server_first(lab: &Lab, addr: SocketAddr, egress: IpAddr, what: &str) {
    let listener = lab
        .server
        .enter(|| std::net::TcpListener::bind(addr))
        .expect("bind");
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        s.write_all(b"220 greeting\r\n").expect("greeting");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).expect("client answer");
        (buf, peer.ip())
    });
    let started = std::time::Instant::now();
    let mut c = tcp_connect(&lab.client, addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut greeting = [0u8; 14];
    c.read_exact(&mut greeting)
        .unwrap_or_else(|e| panic!("{what}: no greeting from a server-first service: {e}"));
    let waited = started.elapsed();
    assert_eq!(&greeting, b"220 greeting\r\n");
    assert!(
        waited < Duration::from_secs(3),
        "{what}: the greeting took {waited:?}"
    );
    c.write_all(b"QUIT\r\n").expect("answer");
    let (answer, peer) = server.join().expect("server");
    assert_eq!(
        &answer, b"QUIT\r\n",
        "{what}: the answer reached the server"
    );
    assert_eq!(peer, egress, "{what}: the server saw the upstream");
}

/// UDP over IPv4 and IPv6: two associations, then three round trips on one; replies come
/// from the address asked (checked by `lan_udp`).
fn udp_through(lab: &Lab, up: &SingBox<'_>, tp: &Tpgate<'_>, what: &str) {
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
        for flow in 0..2 {
            let payload = format!("{what} {family:?} flow {flow}");
            let via = lan_udp(lab, family, &server, payload.as_bytes());
            assert_via(
                via,
                up.egress(family),
                &format!("{what} udp {family:?} {flow}"),
            );
            tp.expect_flow("udp", via.local, server.addr, "up");
        }
        let via = lan_udp_rounds(lab, family, &server, 3);
        assert_via(
            via,
            up.egress(family),
            &format!("{what} udp {family:?} rounds"),
        );
    }
}

/// Port 81 goes through `bad`: the client's connection ends without data (EOF or reset,
/// never a hang), tpgate logs why once, nothing reaches the destination, and `up` still works.
fn wrong_uuid_fails_cleanly(lab: &Lab, up: &SingBox<'_>, tp: &Tpgate<'_>) {
    wrong_uuid_fails_cleanly_with(lab, up, tp, "bad: no VLESS response");
}

fn wrong_uuid_fails_cleanly_with(lab: &Lab, up: &SingBox<'_>, tp: &Tpgate<'_>, log: &str) {
    let a = Family::V4.addrs();
    let refused = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 81));
    let mut s = tcp_connect(&lab.client, refused.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(b"hello?");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("got {n} bytes with a wrong uuid: {:?}", &buf[..n]),
        Err(e) => panic!("expected reset or EOF with a wrong uuid, got {e}"),
    }
    let line = tp
        .wait_for_line(Duration::from_secs(5), |l| l.contains(log))
        .unwrap_or_else(|| panic!("no log line for the wrong uuid; log:\n{}", tp.log_text()));
    assert!(line.contains("wrong uuid"), "{line}");
    assert!(refused.peers().is_empty(), "{:?}", refused.peers());
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    assert_via(lan_tcp(lab, &server, 1000), up.egress(Family::V4), "after");
}

#[test]
fn vless_carries_tcp() {
    with_server("vless", Inbound::Vless { tls: false }, |lab, up, tp| {
        tcp_through(lab, up, tp, "vless");
        wrong_uuid_fails_cleanly(lab, up, tp);
    });
}

#[test]
fn vless_tls_carries_tcp() {
    with_server("vlesstls", Inbound::Vless { tls: true }, |lab, up, tp| {
        tcp_through(lab, up, tp, "vless+tls");
        wrong_uuid_fails_cleanly(lab, up, tp);
    });
}

#[test]
fn vless_carries_udp() {
    with_server("vlessudp", Inbound::Vless { tls: false }, |lab, up, tp| {
        udp_through(lab, up, tp, "vless");
    });
}

#[test]
fn vless_tls_carries_udp() {
    with_server(
        "vlesstlsudp",
        Inbound::Vless { tls: true },
        |lab, up, tp| {
            udp_through(lab, up, tp, "vless+tls");
        },
    );
}

/// VMess AEAD through sing-box: TCP over IPv4 and IPv6 (1 MiB echo, server-first) and a
/// wrong uuid failing cleanly, for `cipher` (TLS around it when `tls`).
fn vmess(tag: &str, tls: bool, cipher: &'static str) {
    with_server(tag, Inbound::Vmess { tls, cipher }, |lab, up, tp| {
        tcp_through(lab, up, tp, &format!("vmess {cipher}"));
        wrong_uuid_fails_cleanly_with(lab, up, tp, "bad: no VMess response");
    });
}

#[test]
fn vmess_aes_carries_tcp() {
    vmess("vmessaes", false, "auto");
}

#[test]
fn vmess_chacha_carries_tcp() {
    vmess("vmesscha", false, "chacha20-poly1305");
}

#[test]
fn vmess_none_in_tls_carries_tcp() {
    vmess("vmesstls", true, "none");
}

#[test]
fn vmess_carries_udp() {
    with_server(
        "vmessudp",
        Inbound::Vmess {
            tls: false,
            cipher: "auto",
        },
        |lab, up, tp| {
            udp_through(lab, up, tp, "vmess");
        },
    );
}

#[test]
fn vmess_tls_carries_udp() {
    with_server(
        "vmesstlsudp",
        Inbound::Vmess {
            tls: true,
            cipher: "chacha20-poly1305",
        },
        |lab, up, tp| udp_through(lab, up, tp, "vmess+tls"),
    );
}
