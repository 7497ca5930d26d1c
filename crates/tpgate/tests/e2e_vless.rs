//! End-to-end against the real sing-box as the VLESS and the VMess (AEAD) server, plain and
//! inside TLS: a LAN client's TCP (IPv4 and IPv6 destinations, a 1 MiB byte-exact echo, a
//! server-first exchange) and UDP reach the server through it, the server seeing the upstream host's
//! address; a wrong uuid fails that one connection cleanly, with a log line, and tpgate
//! goes on.

mod lab;
#[path = "lab/sing_box.rs"]
mod sing_box;

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use lab::*;
use sing_box::{sing_box, Inbound, SingBox, VLESS_UUID, WRONG_UUID};

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
    match s.read_patiently(&mut buf) {
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
        tcp_through(lab, tp, |f| up.egress(f), "vless");
        wrong_uuid_fails_cleanly(lab, up, tp);
    });
}

#[test]
fn vless_tls_carries_tcp() {
    with_server("vlesstls", Inbound::Vless { tls: true }, |lab, up, tp| {
        tcp_through(lab, tp, |f| up.egress(f), "vless+tls");
        wrong_uuid_fails_cleanly(lab, up, tp);
    });
}

#[test]
fn vless_carries_udp() {
    with_server("vlessudp", Inbound::Vless { tls: false }, |lab, up, tp| {
        udp_through(lab, tp, |f| up.egress(f), "vless");
    });
}

#[test]
fn vless_tls_carries_udp() {
    with_server(
        "vlesstlsudp",
        Inbound::Vless { tls: true },
        |lab, up, tp| {
            udp_through(lab, tp, |f| up.egress(f), "vless+tls");
        },
    );
}

/// VMess AEAD through sing-box: TCP over IPv4 and IPv6 (1 MiB echo, server-first) and a
/// wrong uuid failing cleanly, for `cipher` (TLS around it when `tls`).
fn vmess(tag: &str, tls: bool, cipher: &'static str) {
    with_server(tag, Inbound::Vmess { tls, cipher }, |lab, up, tp| {
        tcp_through(lab, tp, |f| up.egress(f), &format!("vmess {cipher}"));
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
            udp_through(lab, tp, |f| up.egress(f), "vmess");
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
        |lab, up, tp| udp_through(lab, tp, |f| up.egress(f), "vmess+tls"),
    );
}
