//! End-to-end against the real sing-box as the TUIC v5 server (QUIC, TLS with ALPN h3): a
//! LAN client's TCP (IPv4 and IPv6 destinations, a 1 MiB byte-exact echo, a server-first
//! exchange), UDP in QUIC datagrams (`udp-relay-mode: native`, with datagrams long enough to
//! be fragmented both ways) and in streams (`quic`), and the gateway's own TCP reach the
//! destination through it, the destination seeing the server host's address. A wrong
//! password (the server closes the connection: TUIC has no replies) ends that flow without
//! data and tpgate goes on. Uploads to a destination that resets them end within seconds
//! (the server passes the reset on as a plain end and stops reading; the relay ends a way
//! that cannot write once the other has ended). Through a `dialer-proxy`, its QUIC packets
//! travel as UDP inside a Trojan stream.

mod lab;
#[path = "lab/sing_box.rs"]
mod sing_box;

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
    let text = lab.proxy_config_text(
        &[
            up.proxy_yaml("up", TROJAN_PASSWORD),
            up.proxy_yaml("bad", "not-the-password"),
        ],
        &[],
        &["DST-PORT,81,bad", "MATCH,up"],
    );
    let config = lab.write_file("tpgate.yaml", &format!("log-level: debug\n{text}"));
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
    match s.read_patiently(&mut buf) {
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

/// A destination that reads a little and closes with the rest unread (a reset): a LAN
/// client uploading through tuic sees its connection end within a few seconds, not after
/// the QUIC idle timeout. 4 such uploads at once, as the benchmark found it.
#[test]
fn an_upload_ends_soon_after_the_destination_resets() {
    with_server("tuicrst", false, |lab, _up, _tp| {
        let a = Family::V4.addrs();
        let addr = SocketAddr::new(a.server, 5201);
        let listener = lab
            .server
            .enter(|| std::net::TcpListener::bind(addr))
            .expect("bind");
        let server = std::thread::spawn(move || {
            for _ in 0..4 {
                let (mut s, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 4096];
                let _ = s.read_patiently(&mut buf);
                std::thread::sleep(Duration::from_millis(200));
                drop(s);
            }
        });
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let mut s = tcp_connect(&lab.client, addr).expect("connect");
                s.set_write_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let chunk = vec![7u8; 64 * 1024];
                    let mut sent = 0usize;
                    // Bounded: 256 MiB at most; the destination stopped reading long before.
                    while sent < 256 << 20 {
                        match s.write(&chunk) {
                            Ok(n) => sent += n,
                            // A stop and resume of the test process (see lab/patient.rs).
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    start.elapsed()
                })
            })
            .collect();
        for c in clients {
            let took = c.join().expect("client");
            // The relay's idle timeout is 60 s; the stall limit 5 s once the upload is stuck
            // (filling the QUIC stream's window first takes a while on a busy machine).
            assert!(
                took < Duration::from_secs(25),
                "the upload went on for {took:?} after the destination reset"
            );
        }
        server.join().expect("server");
    });
}

/// TUIC reached through its `dialer-proxy`, a select group holding a Trojan proxy: TUIC's
/// QUIC packets travel as UDP inside the Trojan stream. The TUIC host drops all UDP from
/// the gateway and counts what comes from the Trojan host, so only that way reaches it.
/// TCP and UDP (in QUIC datagrams, long ones fragmented) reach the destination from the
/// TUIC host, both families, and the flow's line names the way (`up[pick/tj]`).
#[test]
fn tuic_through_its_dialer_proxy() {
    let Some(bin) = sing_box() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts("tuicdialer", 2) else {
        return;
    };
    let tj = SingBox::start(&lab, 0, &bin, Inbound::Trojan);
    let up = SingBox::start(&lab, 1, &bin, Inbound::Tuic { quic_udp: false });
    let hop = tj.egress(Family::V4);
    up.host.only_through(hop, "meta l4proto udp");
    let up_yaml = up.proxy_yaml("up", TROJAN_PASSWORD);
    let up_yaml = format!(
        "{}, dialer-proxy: pick}}",
        up_yaml.strip_suffix('}').expect("a flow mapping")
    );
    let config = lab.write_proxy_config(
        &[tj.proxy_yaml("tj", TROJAN_PASSWORD), up_yaml],
        &["{name: pick, type: select, proxies: [tj]}".to_owned()],
        &["MATCH,up"],
    );
    let tp = Tpgate::start(&lab, &config);
    let what = "trojan>tuic";
    tcp_through_as(&lab, &tp, |f| up.egress(f), what, "up[pick/tj]");
    udp_through_as(&lab, &tp, |f| up.egress(f), what, "up[pick/tj]");
    long_datagrams(&lab, &up);
    assert!(
        up.host.through_count(hop) >= 10,
        "the TUIC host saw no QUIC from the Trojan host"
    );
}
