//! End-to-end against the real sing-box, VMess, VLESS and Trojan over the V2Ray transports
//! (mihomo's `network`): WebSocket (with early data in a header and in the path), HTTP
//! upgrade, gRPC and h2, plain and inside TLS. For each: a LAN client's TCP (IPv4 and IPv6
//! destinations, a 1 MiB byte-exact echo, a server-first exchange), its UDP, and the
//! gateway's own TCP reach the destination through sing-box (and a client's half-close
//! where the transport or protocol carries one), the destination seeing the upstream host's address and UDP
//! replies coming from the address asked; a wrong uuid over a WebSocket fails that one
//! connection with a log line, and tpgate goes on. VMess over ws and h2 inside TLS also
//! against V2Ray (Debian's 4.x), a second server implementation, and over V2Ray's HTTP
//! header obfuscation (`network: http`, which sing-box does not serve).

mod lab;
#[path = "lab/sing_box.rs"]
mod sing_box;
#[path = "lab/v2ray.rs"]
mod v2ray;

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use lab::*;
use sing_box::{
    sing_box, Carrier, EarlyData, Inbound, SingBox, TROJAN_PASSWORD, VLESS_PORT, VLESS_UUID,
    WRONG_UUID,
};
use v2ray::{v2ray, V2ray, V2rayCarrier, V2RAY_UUID};

/// A lab with one WAN host running sing-box with `inbound` over `carrier`, and tpgate using
/// it as `up` (plus `bad`, the same server with a wrong uuid or password, for port 81).
fn with_server(
    tag: &str,
    inbound: Inbound,
    carrier: Carrier,
    test: impl FnOnce(&Lab, &SingBox<'_>, &Tpgate<'_>),
) {
    let Some(bin) = sing_box() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts(tag, 1) else {
        return;
    };
    let up = SingBox::start_with(&lab, 0, &bin, inbound, carrier);
    let (good, wrong) = match inbound {
        Inbound::Trojan => (TROJAN_PASSWORD, "not-the-password"),
        _ => (VLESS_UUID, WRONG_UUID),
    };
    let config = lab.write_proxy_config(
        &[up.proxy_yaml("up", good), up.proxy_yaml("bad", wrong)],
        &[],
        &["DST-PORT,81,bad", "MATCH,up"],
    );
    let tp = Tpgate::start(&lab, &config);
    test(&lab, &up, &tp);
}

/// TCP and UDP from the LAN and TCP from the gateway itself, both families, through `up`.
fn carries_tcp_and_udp(lab: &Lab, up: &SingBox<'_>, tp: &Tpgate<'_>, what: &str) {
    tcp_through(lab, tp, |f| up.egress(f), what);
    udp_through(lab, tp, |f| up.egress(f), what);
    local_tcp_through(lab, tp, |f| up.egress(f), what);
}

/// The client half-closes after sending (the echo server ends once it sees the end): the
/// whole echo and then the end come back. Not over a WebSocket, which has no half-close
/// (README).
fn half_close_through(lab: &Lab, what: &str) {
    let addr = SocketAddr::new(Family::V4.addrs().server, 8081);
    let server = TcpEchoServer::start(&lab.server, addr);
    let data = vec![7u8; 100_000];
    let x = tcp_echo(&lab.client, server.addr, &data)
        .unwrap_or_else(|e| panic!("{what} half-close: {e}"));
    assert!(
        x.echoed == data,
        "{what} half-close: {} bytes back",
        x.echoed.len()
    );
}

/// Port 81 goes through `bad`: the client's connection ends without data (EOF or reset,
/// never a hang), nothing reaches the destination, a line with `log` says why, and `up`
/// still works.
fn wrong_credentials_fail_cleanly(lab: &Lab, up: &SingBox<'_>, tp: &Tpgate<'_>, log: &str) {
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
        Ok(n) => panic!("got {n} bytes with wrong credentials: {:?}", &buf[..n]),
        Err(e) => panic!("expected reset or EOF with wrong credentials, got {e}"),
    }
    let line = tp
        .wait_for_line(Duration::from_secs(5), |l| l.contains(log))
        .unwrap_or_else(|| {
            panic!(
                "no log line for the wrong credentials; log:\n{}",
                tp.log_text()
            )
        });
    assert!(line.contains("wrong"), "{line}");
    assert!(refused.peers().is_empty(), "{:?}", refused.peers());
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    assert_via(lan_tcp(lab, &server, 1000), up.egress(Family::V4), "after");
}

const WS: Carrier = Carrier::Ws { early_data: None };

#[test]
fn vless_ws_tls() {
    let inbound = Inbound::Vless { tls: true };
    with_server("tvlwst", inbound, WS, |lab, up, tp| {
        carries_tcp_and_udp(lab, up, tp, "vless ws tls");
        wrong_credentials_fail_cleanly(lab, up, tp, "bad: no VLESS response");
    });
}

#[test]
fn vless_ws_early_data_in_header() {
    let carrier = Carrier::Ws {
        early_data: Some(EarlyData::Header),
    };
    with_server(
        "tvlwse",
        Inbound::Vless { tls: false },
        carrier,
        |lab, up, tp| {
            carries_tcp_and_udp(lab, up, tp, "vless ws early data");
        },
    );
}

#[test]
fn vmess_ws_early_data_in_path() {
    let inbound = Inbound::Vmess {
        tls: false,
        cipher: "auto",
    };
    let carrier = Carrier::Ws {
        early_data: Some(EarlyData::Path),
    };
    with_server("tvmwsp", inbound, carrier, |lab, up, tp| {
        carries_tcp_and_udp(lab, up, tp, "vmess ws early data in path");
        wrong_credentials_fail_cleanly(lab, up, tp, "bad: no VMess response");
    });
}

#[test]
fn trojan_ws() {
    with_server("ttjws", Inbound::Trojan, WS, |lab, up, tp| {
        carries_tcp_and_udp(lab, up, tp, "trojan ws");
        wrong_credentials_fail_cleanly(lab, up, tp, "bad: the Trojan");
    });
}

#[test]
fn vless_http_upgrade_fast_open() {
    let inbound = Inbound::Vless { tls: false };
    let carrier = Carrier::HttpUpgrade { fast_open: true };
    with_server("tvlhu", inbound, carrier, |lab, up, tp| {
        carries_tcp_and_udp(lab, up, tp, "vless httpupgrade fast open");
        half_close_through(lab, "vless httpupgrade");
        wrong_credentials_fail_cleanly(lab, up, tp, "bad: no VLESS response");
    });
}

#[test]
fn vmess_http_upgrade_tls() {
    let inbound = Inbound::Vmess {
        tls: true,
        cipher: "chacha20-poly1305",
    };
    let carrier = Carrier::HttpUpgrade { fast_open: false };
    with_server("tvmhut", inbound, carrier, |lab, up, tp| {
        carries_tcp_and_udp(lab, up, tp, "vmess httpupgrade tls");
    });
}

#[test]
fn vless_grpc_tls() {
    let inbound = Inbound::Vless { tls: true };
    with_server("tvlgr", inbound, Carrier::Grpc, |lab, up, tp| {
        carries_tcp_and_udp(lab, up, tp, "vless grpc tls");
        half_close_through(lab, "vless grpc");
        wrong_credentials_fail_cleanly(lab, up, tp, "bad: no VLESS response");
    });
}

/// Over gRPC every tunnel (TCP, UDP, the gateway's own) of these tests is a request on one
/// shared HTTP/2 connection: the server's host sees one TCP connection from the gateway.
#[test]
fn trojan_grpc() {
    with_server("ttjgr", Inbound::Trojan, Carrier::Grpc, |lab, up, tp| {
        up.host.ns.sh(
            "nft",
            &[&format!(
                "add table inet syns; \
                 add chain inet syns input {{ type filter hook input priority 0; }}; \
                 add rule inet syns input tcp dport {VLESS_PORT} tcp flags syn counter"
            )],
        );
        carries_tcp_and_udp(lab, up, tp, "trojan grpc");
        let tunnels = tp
            .lines()
            .iter()
            .filter(|l| l.contains("action=up"))
            .count();
        let listed = up
            .host
            .ns
            .sh("nft", &["list", "chain", "inet", "syns", "input"]);
        let connections: u64 = listed
            .split("packets ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter:\n{listed}"));
        assert!(tunnels >= 10, "{tunnels} tunnels");
        assert_eq!(
            connections, 1,
            "TCP connections to the gRPC server for {tunnels} tunnels"
        );
    });
}

#[test]
fn vmess_grpc_cleartext() {
    let inbound = Inbound::Vmess {
        tls: false,
        cipher: "auto",
    };
    with_server("tvmgr", inbound, Carrier::Grpc, |lab, up, tp| {
        carries_tcp_and_udp(lab, up, tp, "vmess grpc h2c");
    });
}

#[test]
fn vmess_h2_tls() {
    let inbound = Inbound::Vmess {
        tls: true,
        cipher: "auto",
    };
    with_server("tvmh2", inbound, Carrier::H2, |lab, up, tp| {
        carries_tcp_and_udp(lab, up, tp, "vmess h2");
        wrong_credentials_fail_cleanly(lab, up, tp, "bad: no VMess response");
    });
}

#[test]
fn vless_h2_tls() {
    let inbound = Inbound::Vless { tls: true };
    with_server("tvlh2", inbound, Carrier::H2, |lab, up, tp| {
        carries_tcp_and_udp(lab, up, tp, "vless h2");
        half_close_through(lab, "vless h2");
    });
}

/// VMess over `carrier` (inside TLS, or for the HTTP header bare) through V2Ray: TCP and
/// UDP, both families, and the gateway's own TCP.
fn through_v2ray(tag: &str, carrier: V2rayCarrier) {
    let Some(bin) = v2ray() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts(tag, 1) else {
        return;
    };
    let up = V2ray::start(&lab, 0, &bin, carrier);
    struct LogOnPanic<'a>(&'a V2ray<'a>);
    impl Drop for LogOnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("v2ray log:\n{}", self.0.log_text());
            }
        }
    }
    let _log = LogOnPanic(&up);
    let config = lab.write_proxy_config(&[up.proxy_yaml("up", V2RAY_UUID)], &[], &["MATCH,up"]);
    let tp = Tpgate::start(&lab, &config);
    let what = format!("vmess {carrier:?} through v2ray");
    tcp_through(&lab, &tp, |f| up.egress(f), &what);
    udp_through(&lab, &tp, |f| up.egress(f), &what);
    local_tcp_through(&lab, &tp, |f| up.egress(f), &what);
}

#[test]
fn vmess_ws_tls_through_v2ray() {
    through_v2ray("tv2ws", V2rayCarrier::Ws);
}

#[test]
fn vmess_h2_tls_through_v2ray() {
    through_v2ray("tv2h2", V2rayCarrier::H2);
}

/// `network: http`: V2Ray's HTTP header obfuscation (a request head before the first
/// bytes, the server's response head read off), paths and `Host` picked per connection.
#[test]
fn vmess_http_header_through_v2ray() {
    through_v2ray("tv2http", V2rayCarrier::HttpHeader);
}
