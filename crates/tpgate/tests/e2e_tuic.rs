//! End-to-end against the real sing-box as the TUIC v5 server (QUIC, TLS with ALPN h3): a
//! LAN client's TCP (IPv4 and IPv6 destinations, a 1 MiB byte-exact echo, a server-first
//! exchange), UDP in QUIC datagrams (`udp-relay-mode: native`, with datagrams long enough to
//! be fragmented both ways) and in streams (`quic`), and the gateway's own TCP reach the
//! destination through it, the destination seeing the server host's address. A wrong
//! password (the server closes the connection: TUIC has no replies) ends that flow without
//! data and tpgate goes on.

mod lab;
#[path = "lab/sing_box.rs"]
mod sing_box;

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use lab::*;
use sing_box::{sing_box, Inbound, SingBox, TROJAN_PASSWORD};

fn with_server(tag: &str, quic_udp: bool, test: impl FnOnce(&Lab, &SingBox<'_>, &Tpgate<'_>)) {
    let Some(bin) = sing_box() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts(tag, 1) else {
        return;
    };
    let up = SingBox::start(&lab, 0, &bin, Inbound::Tuic { quic_udp });
    let config = lab.write_proxy_config(
        &[
            up.proxy_yaml("up", TROJAN_PASSWORD),
            up.proxy_yaml("bad", "not-the-password"),
        ],
        &[],
        &["DST-PORT,81,bad", "MATCH,up"],
    );
    let tp = Tpgate::start(&lab, &config);
    test(&lab, &up, &tp);
}

fn long_datagrams(lab: &Lab, up: &SingBox<'_>) {
    for family in [Family::V4, Family::V6] {
        let server =
            UdpEchoServer::start(&lab.server, SocketAddr::new(family.addrs().server, 7001));
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let via = lan_udp(lab, family, &server, &payload);
        assert_via(
            via,
            up.egress(family),
            &format!("3000-byte datagram {family:?}"),
        );
    }
}

/// Port 81 goes through `bad`: the server closes the connection (the token does not
/// match), the client's connection ends without data, nothing reaches the destination, a
/// log line names `bad`, and `up` still works.
fn wrong_password_fails_cleanly(lab: &Lab, up: &SingBox<'_>, tp: &Tpgate<'_>) {
    let a = Family::V4.addrs();
    let refused = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 81));
    let mut s = tcp_connect(&lab.client, refused.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let _ = s.write_all(b"hello?");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("got {n} bytes with a wrong password: {:?}", &buf[..n]),
        Err(e) => panic!("expected reset or EOF with a wrong password, got {e}"),
    }
    let line = tp
        .wait_for_line(Duration::from_secs(10), |l| l.contains("via bad failed"))
        .unwrap_or_else(|| {
            panic!(
                "no log line for the wrong password; log:\n{}",
                tp.log_text()
            )
        });
    assert!(line.contains("wrong uuid or password"), "{line}");
    assert!(refused.peers().is_empty(), "{:?}", refused.peers());
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    assert_via(lan_tcp(lab, &server, 1000), up.egress(Family::V4), "after");
}

#[test]
fn tuic_carries_tcp_udp_and_local_traffic() {
    with_server("tuic", false, |lab, up, tp| {
        tcp_through(lab, tp, |f| up.egress(f), "tuic");
        udp_through(lab, tp, |f| up.egress(f), "tuic");
        long_datagrams(lab, up);
        local_tcp_through(lab, tp, |f| up.egress(f), "tuic");
        wrong_password_fails_cleanly(lab, up, tp);
    });
}

#[test]
fn tuic_carries_udp_in_streams() {
    with_server("tuicq", true, |lab, up, tp| {
        udp_through(lab, tp, |f| up.egress(f), "tuic quic");
        long_datagrams(lab, up);
    });
}
