//! End-to-end against the real sing-box as the Hysteria 2 server (QUIC, HTTP/3 auth, TLS
//! with ALPN h3), plain and with Salamander obfuscation: a LAN client's TCP (IPv4 and IPv6
//! destinations, a 1 MiB byte-exact echo, a server-first exchange), UDP (with datagrams
//! too long for one QUIC datagram, so fragmented both ways) and the gateway's own TCP reach
//! the destination through it, the destination seeing the server host's address; a wrong
//! password fails that one connection with a log line saying so, and tpgate goes on. With
//! `ports` (port hopping) the client moves among the server's ports. As the later hop of a
//! relay chain, its QUIC packets go through the Shadowsocks hop's UDP, and the chain
//! survives that hop stopping and coming back.

mod lab;
#[path = "lab/sing_box.rs"]
mod sing_box;
#[path = "lab/ss_server.rs"]
mod ss_server;

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use lab::*;
use sing_box::{sing_box, Inbound, SingBox, TROJAN_PASSWORD, VLESS_SNI};
use ss_server::{SsServer, SS2022_METHOD, SS2022_PASSWORD};

/// A lab with one WAN host running sing-box's hysteria2 inbound, and tpgate using it as
/// `up` (and as `bad`, with a wrong password, for port 81).
fn with_server(tag: &str, obfs: bool, test: impl FnOnce(&Lab, &SingBox<'_>, &Tpgate<'_>)) {
    let Some(bin) = sing_box() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts(tag, 1) else {
        return;
    };
    let up = SingBox::start(&lab, 0, &bin, Inbound::Hysteria2 { obfs });
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

/// Datagrams longer than QUIC's datagram room (about 1,200 bytes) travel in fragments, and
/// the reply, as long, comes back in fragments too.
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

/// Port 81 goes through `bad`: the client's connection ends without data, tpgate says the
/// server refused the password, nothing reaches the destination, and `up` still works.
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
        .wait_for_line(Duration::from_secs(5), |l| {
            l.contains("bad: ") && l.contains("not 233")
        })
        .unwrap_or_else(|| {
            panic!(
                "no log line for the wrong password; log:\n{}",
                tp.log_text()
            )
        });
    assert!(line.contains("wrong password"), "{line}");
    assert!(refused.peers().is_empty(), "{:?}", refused.peers());
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    assert_via(lan_tcp(lab, &server, 1000), up.egress(Family::V4), "after");
}

#[test]
fn hysteria2_carries_tcp_udp_and_local_traffic() {
    with_server("hy2", false, |lab, up, tp| {
        tcp_through(lab, tp, |f| up.egress(f), "hysteria2");
        udp_through(lab, tp, |f| up.egress(f), "hysteria2");
        long_datagrams(lab, up);
        local_tcp_through(lab, tp, |f| up.egress(f), "hysteria2");
        wrong_password_fails_cleanly(lab, up, tp);
    });
}

#[test]
fn hysteria2_with_salamander_carries_tcp_and_udp() {
    with_server("hy2obfs", true, |lab, up, tp| {
        tcp_through(lab, tp, |f| up.egress(f), "hysteria2+salamander");
        udp_through(lab, tp, |f| up.egress(f), "hysteria2+salamander");
        long_datagrams(lab, up);
    });
}

/// Port hopping: the server host forwards UDP ports 20000-20010 to sing-box's one port;
/// the proxy names only `ports` (no `port`), so the first flows go to 20000; after
/// `hop-interval` (5 s, mihomo's floor) the client sends to another of them, which the
/// server host's counter on 20001-20010 shows.
#[test]
fn hysteria2_hops_among_ports() {
    let Some(bin) = sing_box() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts("hy2hop", 1) else {
        return;
    };
    let up = SingBox::start(&lab, 0, &bin, Inbound::Hysteria2 { obfs: false });
    up.host.ns.sh(
        "nft",
        &["add table inet hop; \
           add chain inet hop pre { type nat hook prerouting priority dstnat; }; \
           add rule inet hop pre udp dport 20000 counter redirect to :443; \
           add rule inet hop pre udp dport 20001-20010 counter redirect to :443"],
    );
    let proxy = format!(
        "{{name: up, type: hysteria2, server: {}, ports: \"20000-20010\", hop-interval: 5, \
         password: {TROJAN_PASSWORD}, sni: {VLESS_SNI}, skip-cert-verify: true}}",
        up.host.v4
    );
    let config = lab.write_proxy_config(&[proxy], &[], &["MATCH,up"]);
    let tp = Tpgate::start(&lab, &config);
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(Family::V4.addrs().server, 80));
    assert_via(
        lan_tcp(&lab, &server, 1000),
        up.egress(Family::V4),
        "first port",
    );
    let counters = || {
        up.host
            .ns
            .sh("nft", &["list", "chain", "inet", "hop", "pre"])
    };
    let packets = |text: &str, rule: &str| -> u64 {
        text.lines()
            .find(|l| l.contains(rule))
            .and_then(|l| l.split("packets ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(packets(&counters(), "dport 20000 ") > 0, "{}", counters());
    let hopped = poll(Duration::from_secs(40), || {
        assert_via(
            lan_tcp(&lab, &server, 1000),
            up.egress(Family::V4),
            "while hopping",
        );
        std::thread::sleep(Duration::from_millis(500));
        (packets(&counters(), "20001-20010") > 0).then_some(())
    });
    assert!(
        hopped.is_some(),
        "no packet to another port in 40 s:\n{}\n{}",
        counters(),
        tp.log_text()
    );
}

/// A relay chain with a hysteria2 first hop and a Trojan last hop (two sing-box servers):
/// TCP and UDP from the LAN, IPv4 and IPv6, reach the destination from the Trojan host, and
/// the Trojan server was reached from the hysteria2 host. UDP travels inside the Trojan
/// stream, which itself is a stream of the hysteria2 connection.
#[test]
fn hysteria2_first_hop_of_a_chain_carries_tcp_and_udp() {
    let Some(bin) = sing_box() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts("hy2chain", 2) else {
        return;
    };
    let hy = SingBox::start(&lab, 0, &bin, Inbound::Hysteria2 { obfs: false });
    let tj = SingBox::start(&lab, 1, &bin, Inbound::Trojan);
    let config = lab.write_proxy_config(
        &[
            hy.proxy_yaml("hy", TROJAN_PASSWORD),
            tj.proxy_yaml("tj", TROJAN_PASSWORD),
        ],
        &["{name: viaboth, type: relay, proxies: [hy, tj]}".to_owned()],
        &["MATCH,viaboth"],
    );
    let tp = Tpgate::start(&lab, &config);
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        let via = lan_tcp(&lab, &server, 1 << 20);
        assert_via(via, tj.egress(family), &format!("chain tcp {family:?}"));
        tp.expect_flow("tcp", via.local, server.addr, "viaboth(hy>tj)");
        let udp = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
        let via = lan_udp(&lab, family, &udp, b"through two hops");
        assert_via(via, tj.egress(family), &format!("chain udp {family:?}"));
        tp.expect_flow("udp", via.local, udp.addr, "viaboth(hy>tj)");
    }
    // The Trojan server's peers were the hysteria2 host, never the gateway.
    let hy_host = hy.egress(Family::V4).to_string();
    let log = tj.log_text();
    assert!(
        log.contains(&format!("from {hy_host}:")),
        "the Trojan server did not see the hysteria2 host {hy_host}:\n{log}"
    );
}

/// The SHA-256 of the first certificate in a PEM file, as hex (a small base64 decoder: the
/// test has no base64 crate).
fn pem_sha256_hex(pem: &str) -> String {
    use sha2::{Digest, Sha256};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let (mut der, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in body.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            der.push((acc >> bits) as u8);
        }
    }
    Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `fingerprint` pins the server's certificate without trusting any CA: a hysteria2 (QUIC)
/// and a Trojan (TLS over TCP) proxy with the right SHA-256 and no `skip-cert-verify` work;
/// a wrong one fails that connection with a line naming the pin, and nothing reaches the
/// destination.
#[test]
fn fingerprint_pins_the_server_certificate() {
    let Some(bin) = sing_box() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts("hy2pin", 2) else {
        return;
    };
    let hy = SingBox::start(&lab, 0, &bin, Inbound::Hysteria2 { obfs: false });
    let tj = SingBox::start(&lab, 1, &bin, Inbound::Trojan);
    let pin = |host: usize| {
        let pem = std::fs::read_to_string(lab.dir.join(format!("sing-box-h{host}.crt")))
            .expect("the server's certificate");
        pem_sha256_hex(&pem)
    };
    let pinned = |yaml: String, fp: &str| {
        yaml.replace("skip-cert-verify: true", &format!("fingerprint: \"{fp}\""))
    };
    let wrong = "00".repeat(32);
    let config = lab.write_proxy_config(
        &[
            pinned(hy.proxy_yaml("hy", TROJAN_PASSWORD), &pin(0)),
            pinned(hy.proxy_yaml("hybad", TROJAN_PASSWORD), &wrong),
            pinned(tj.proxy_yaml("tj", TROJAN_PASSWORD), &pin(1)),
        ],
        &[],
        &["DST-PORT,81,hybad", "DST-PORT,82,tj", "MATCH,hy"],
    );
    let tp = Tpgate::start(&lab, &config);
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    assert_via(
        lan_tcp(&lab, &server, 1000),
        hy.egress(Family::V4),
        "pinned hysteria2",
    );
    let server82 = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 82));
    assert_via(
        lan_tcp(&lab, &server82, 1000),
        tj.egress(Family::V4),
        "pinned trojan",
    );
    let refused = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 81));
    let mut s = tcp_connect(&lab.client, refused.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let _ = s.write_all(b"hello?");
    let mut buf = [0u8; 16];
    assert!(
        matches!(s.read_patiently(&mut buf), Ok(0) | Err(_)),
        "data through a proxy whose pin does not match"
    );
    tp.wait_for_line(Duration::from_secs(5), |l| {
        l.contains("via hybad failed") && l.contains("pinned `fingerprint`")
    })
    .unwrap_or_else(|| panic!("no line for the pin mismatch; log:\n{}", tp.log_text()));
    assert!(refused.peers().is_empty(), "{:?}", refused.peers());
}

/// Hysteria 2 as the later hop of a relay chain [ss, up]: its QUIC packets travel through
/// the Shadowsocks hop's UDP. The hysteria2 host drops all UDP from the gateway and counts
/// what comes from the ss host, so only the chain reaches it. TCP (a bulk echo and a
/// server-first exchange) and UDP (several flows, rounds and a burst) reach the destination
/// from the hysteria2 host, both families, and the flow's line names the chain.
#[test]
fn hysteria2_as_the_later_hop_of_a_relay_chain() {
    let Some(bin) = sing_box() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts("hy2chain", 2) else {
        return;
    };
    let mut ss = SsServer::start(&lab, 0, SS2022_METHOD, SS2022_PASSWORD);
    let up = SingBox::start(&lab, 1, &bin, Inbound::Hysteria2 { obfs: true });
    let hop = ss.egress(Family::V4);
    up.host.only_through(hop, "meta l4proto udp");
    let config = lab.write_proxy_config(
        &[ss.proxy_yaml("ss"), up.proxy_yaml("up", TROJAN_PASSWORD)],
        &["{name: chain, type: relay, proxies: [ss, up]}".to_owned()],
        &["MATCH,chain"],
    );
    let tp = Tpgate::start(&lab, &config);
    let what = "ss>hysteria2";
    tcp_through_as(&lab, &tp, |f| up.egress(f), what, "chain(ss>up)");
    udp_through_as(&lab, &tp, |f| up.egress(f), what, "chain(ss>up)");
    long_datagrams(&lab, &up);
    assert!(
        up.host.through_count(hop) >= 10,
        "the hysteria2 host saw no QUIC from the ss host"
    );

    // The earlier hop goes away: a flow through the chain fails with a line naming the
    // hysteria2 hop, and nothing else waits for QUIC's idle timeout. Once ss is back, the
    // chain works again (on a new QUIC connection through it).
    ss.stop();
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 82));
    let started = std::time::Instant::now();
    let failed = tcp_echo(&lab.client, server.addr, b"while ss is down");
    assert!(
        failed.as_ref().map_or(true, |x| x.echoed.is_empty()),
        "echoed with the earlier hop down: {failed:?}"
    );
    let line = tp
        .wait_for_line(Duration::from_secs(25), |l| {
            l.contains("failed") && l.contains("up:")
        })
        .unwrap_or_else(|| panic!("no line for the broken chain; log:\n{}", tp.log_text()));
    eprintln!("after {:?}: {line}", started.elapsed());
    assert!(server.peers().is_empty(), "{:?}", server.peers());
    ss.restart();
    let back = poll(Duration::from_secs(30), || {
        tcp_echo(&lab.client, server.addr, b"ss is back")
            .ok()
            .filter(|x| x.echoed == b"ss is back")
    })
    .unwrap_or_else(|| panic!("the chain did not come back; log:\n{}", tp.log_text()));
    let peer = server.wait_peers(1)[0];
    assert_eq!(peer.ip(), up.egress(Family::V4), "after ss came back");
    tp.expect_flow("tcp", back.local, server.addr, "chain(ss>up)");
}
