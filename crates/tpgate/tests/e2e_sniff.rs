//! End-to-end: tpgate learns the name a LAN client asked for from its first bytes (TLS SNI
//! from a real `curl`, HTTP Host), matches domain rules on it, logs it, and hands the NAME
//! to an upstream proxy, which resolves it itself. Server-first protocols on sniffed ports
//! are not delayed when no name can change the verdict, and still work (after the bounded
//! wait) when one could.

mod lab;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use lab::{
    has_field, lan_request_for, poll, tcp_connect, Family, Lab, NetnsHosts, PatientRecv, ProcKind,
    ProcUpstream, TcpEchoServer, Tpgate,
};

/// From the LAN client: `curl https://NAME/` with NAME pinned to `addr`. The server is an
/// echo, not TLS, so curl fails the handshake; what matters is where its ClientHello went.
fn curl_tls(lab: &Lab, name: &str, addr: SocketAddr) {
    let resolve = format!("{name}:{}:{}", addr.port(), addr.ip());
    let url = format!("https://{name}:{}/", addr.port());
    let _ = lab.client.exec(
        "curl",
        &["-sk", "--max-time", "3", "--resolve", &resolve, &url],
    );
}

fn flow_line(tp: &Tpgate<'_>, dst: SocketAddr, host: &str) -> String {
    tp.wait_for_line(Duration::from_secs(5), |l| {
        l.contains(&format!(" -> {dst} ")) && has_field(l, "host", host)
    })
    .unwrap_or_else(|| panic!("no flow line to {dst} with host={host}:\n{}", tp.log_text()))
}

#[test]
fn tls_sni_and_http_host_drive_domain_rules() {
    let Some(lab) = Lab::new("sniff") else {
        return;
    };
    let config = lab.write_file(
        "tpgate.yaml",
        &lab.proxy_config_text(
            &[],
            &[],
            &[
                "DOMAIN-SUFFIX,blocked.example,REJECT",
                "AND,((DOMAIN-KEYWORD,ads),(NETWORK,tcp)),REJECT",
                "MATCH,DIRECT",
            ],
        ),
    );
    let tp = Tpgate::start(&lab, &config);
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let tls = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 443));
        let http = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));

        curl_tls(&lab, "www.allowed.example", tls.addr);
        let line = flow_line(&tp, tls.addr, "www.allowed.example");
        assert!(has_field(&line, "action", "DIRECT"), "{line}");
        assert_eq!(tls.wait_peers(1)[0].ip(), a.gw_wan, "relayed DIRECT");

        curl_tls(&lab, "cdn.blocked.example", tls.addr);
        let line = flow_line(&tp, tls.addr, "cdn.blocked.example");
        assert!(has_field(&line, "action", "REJECT"), "{line}");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(tls.peers().len(), 1, "a rejected name reached the server");

        let echoed = lan_request_for(&lab, "Plain.Allowed.Example", http.addr);
        assert!(!echoed.is_empty(), "HTTP through tpgate failed");
        assert!(
            echoed.starts_with(b"GET / HTTP/1.1\r\n"),
            "the sniffed bytes must be sent on first, unchanged"
        );
        flow_line(&tp, http.addr, "plain.allowed.example");
        assert!(lan_request_for(&lab, "ads.tracker.test", http.addr).is_empty());
        let line = flow_line(&tp, http.addr, "ads.tracker.test");
        assert!(has_field(&line, "action", "REJECT"), "{line}");
    }
}

/// A server that speaks first (SSH, SMTP) on a sniffed port, behind a 3 s sniffing wait:
/// how long the client waits for the banner. The exchange completes either way.
fn banner_wait(lab: &Lab, config: &std::path::Path, port: u16) -> Duration {
    let tp = Tpgate::start(lab, config);
    let a = Family::V4.addrs();
    let addr = SocketAddr::new(a.server, port);
    let listener = lab.server.enter(|| TcpListener::bind(addr)).expect("bind");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.write_all(b"220 banner\r\n").expect("banner");
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).expect("client reply");
        buf
    });
    let started = std::time::Instant::now();
    let mut c = tcp_connect(&lab.client, addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut banner = [0u8; 12];
    c.read_exact(&mut banner).expect("banner through tpgate");
    let waited = started.elapsed();
    assert_eq!(&banner, b"220 banner\r\n");
    c.write_all(b"QUIT\r\n").expect("reply");
    assert_eq!(&server.join().expect("server"), b"QUIT\r\n");
    let line = tp
        .wait_for_line(Duration::from_secs(5), |l| {
            l.contains(&format!(" -> {addr} "))
        })
        .expect("flow line");
    assert!(
        !line.contains("host="),
        "no name in a server-first flow: {line}"
    );
    waited
}

const SNIFF_WAIT: &str = "sniffer:\n  enable: true\n  timeout: 3000\n";

/// When no name can change where a flow goes (here: no domain rules, everything DIRECT),
/// tpgate connects at once and reads the client's first bytes only meanwhile: the banner
/// of a server-first protocol on a sniffed port is not held back by the sniffing wait.
#[test]
fn server_first_protocol_is_not_delayed_when_no_name_can_matter() {
    let Some(lab) = Lab::new("srvfirst") else {
        return;
    };
    let config = lab.write_file("tpgate.yaml", &format!("{}{SNIFF_WAIT}", lab.config_text()));
    for port in [80, 443] {
        let waited = banner_wait(&lab, &config, port);
        assert!(
            waited < Duration::from_millis(1500),
            "port {port}: the banner waited {waited:?}, as if for the 3 s sniffing timeout"
        );
    }
}

/// With a domain rule the name could change the verdict, so tpgate waits for the client's
/// first bytes, at most the sniffing timeout, then goes on with the address: a server-first
/// protocol on a sniffed port still works, once the bounded wait is over.
#[test]
fn server_first_protocol_on_a_sniffed_port_still_works() {
    let Some(lab) = Lab::new("srvfirstd") else {
        return;
    };
    let text = lab.proxy_config_text(
        &[],
        &[],
        &["DOMAIN-SUFFIX,blocked.example,REJECT", "MATCH,DIRECT"],
    );
    let config = lab.write_file("tpgate.yaml", &format!("{text}{SNIFF_WAIT}"));
    let waited = banner_wait(&lab, &config, 80);
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(8),
        "waited {waited:?}: the bounded sniffing wait (3 s), then the address"
    );
}

/// The upstream gets the sniffed NAME, not the address: its hosts file maps the name to the
/// server's IPv6 address while the client connected to the IPv4 one, so the server seeing the
/// upstream over IPv6 proves the upstream resolved the name itself.
#[test]
fn upstream_receives_the_sniffed_name() {
    let Some(lab) = Lab::with_wan_hosts("sniffup", 1) else {
        return;
    };
    let v4 = Family::V4.addrs();
    let v6 = Family::V6.addrs();
    let _hosts = NetnsHosts::write(
        &lab.hosts[0].ns.name,
        &format!("127.0.0.1 localhost\n{} named.example\n", v6.server),
    );
    let up = ProcUpstream::start(&lab, 0, ProcKind::Microsocks { auth: None });
    let config = lab.write_proxy_config(&[up.proxy_yaml("up")], &[], &["MATCH,up"]);
    let tp = Tpgate::start(&lab, &config);
    let asked = SocketAddr::new(v4.server, 80);
    let reached = TcpEchoServer::start(&lab.server, SocketAddr::new(v6.server, 80));
    let echoed = poll(Duration::from_secs(5), || {
        let e = lan_request_for(&lab, "named.example", asked);
        (!e.is_empty()).then_some(e)
    })
    .unwrap_or_else(|| panic!("no answer through the upstream:\n{}", tp.log_text()));
    assert!(echoed.starts_with(b"GET / HTTP/1.1\r\n"));
    let peers = reached.wait_peers(1);
    assert_eq!(
        peers[0].ip(),
        up.egress(Family::V6),
        "the server must see the upstream, which resolved named.example itself"
    );
    let line = flow_line(&tp, asked, "named.example");
    assert!(has_field(&line, "action", "up"), "{line}");
}

/// The first flight of a real QUIC client (aioquic; its ClientHello spans several Initial
/// packets and datagrams), captured by `crates/tpgate-core/tests/fixtures/capture.sh`.
fn quic_first_flight() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tpgate-core/tests/fixtures/quic-aioquic-multi.bin"
    );
    let raw = std::fs::read(path).expect("QUIC capture");
    let mut out = Vec::new();
    let mut rest = raw.as_slice();
    while let [hi, lo, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*hi, *lo]));
        out.push(tail[..n].to_vec());
        rest = &tail[n..];
    }
    out
}

/// QUIC: the name is read from the client's Initial packets (decrypted), the flow is decided
/// on it, and every held datagram is then delivered, in order.
#[test]
fn quic_initial_sni_drives_domain_rules() {
    let Some(lab) = Lab::new("sniffquic") else {
        return;
    };
    let config = lab.write_file(
        "tpgate.yaml",
        &lab.proxy_config_text(
            &[],
            &[],
            &["DOMAIN,multi.example.com,DIRECT", "MATCH,REJECT"],
        ),
    );
    let tp = Tpgate::start(&lab, &config);
    let flight = quic_first_flight();
    assert!(
        flight.len() > 1,
        "the capture is a multi-datagram first flight"
    );
    // The QUIC clients stay open to the end: the non-QUIC client below must not get the
    // port of the IPv4 one, whose flow tpgate still holds as DIRECT.
    let mut quic_clients = Vec::new();
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let dst = SocketAddr::new(a.server, 443);
        let got = lab
            .server
            .enter(|| std::net::UdpSocket::bind(dst))
            .expect("bind server");
        got.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let client = lab
            .client
            .enter(|| std::net::UdpSocket::bind(family.any()))
            .expect("bind client");
        for d in &flight {
            client.send_to(d, dst).expect("send");
        }
        let mut buf = vec![0u8; 65536];
        for (i, want) in flight.iter().enumerate() {
            let (n, from) = got.recv_from_patiently(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "{family:?}: datagram {i} never arrived: {e}\n{}",
                    tp.log_text()
                )
            });
            assert_eq!(
                &buf[..n],
                want.as_slice(),
                "{family:?}: datagram {i} changed"
            );
            assert_eq!(from.ip(), a.gw_wan, "{family:?}: relayed by tpgate");
        }
        let line = flow_line(&tp, dst, "multi.example.com");
        assert!(has_field(&line, "action", "DIRECT"), "{line}");
        quic_clients.push(client);
    }
    // Not QUIC on a QUIC port: no name, decided on the address (REJECT here) at once.
    let a = Family::V4.addrs();
    let dst = SocketAddr::new(a.server, 443);
    let client = lab
        .client
        .enter(|| std::net::UdpSocket::bind(Family::V4.any()))
        .expect("bind client");
    client.send_to(b"not quic", dst).expect("send");
    let local = client.local_addr().expect("local");
    let line = tp
        .wait_for_line(Duration::from_secs(5), |l| {
            l.contains(&format!(":{} -> {dst} ", local.port())) && has_field(l, "action", "REJECT")
        })
        .unwrap_or_else(|| panic!("non-QUIC datagram not decided:\n{}", tp.log_text()));
    assert!(!line.contains("host="), "{line}");
}
