//! Traffic from the LAN client through tpgate to the server, reporting which address the
//! server saw: the proof that a flow went through a given upstream (each upstream host has
//! its own address) rather than out of the gateway (203.0.113.1) or not at all.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use super::{
    echo_exact, pattern, poll, tcp_connect, udp_exchange, Family, Lab, PatientRecv, TcpEchoServer,
    Tpgate, UdpEchoServer,
};

/// Bytes each way in the bulk echo through an upstream.
pub(crate) const BULK: usize = 1 << 20;

/// How long a UDP reply through an upstream may take.
pub(crate) const UDP_WAIT: Duration = Duration::from_secs(5);

/// One flow through tpgate: the client's own address and the peer address the server saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Via {
    pub(crate) local: SocketAddr,
    pub(crate) seen: SocketAddr,
}

/// From the LAN client, one TCP connection to `server` echoing `len` bytes (read back
/// exactly, no half-close: microsocks closes both ways at the first EOF). Panics unless
/// every byte comes back intact.
pub(crate) fn lan_tcp(lab: &Lab, server: &TcpEchoServer, len: usize) -> Via {
    try_lan_tcp(lab, server, len).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`lan_tcp`], with an error (what failed) instead of a panic: for polling while an
/// upstream comes and goes.
pub(crate) fn try_lan_tcp(lab: &Lab, server: &TcpEchoServer, len: usize) -> Result<Via, String> {
    let before = server.peers().len();
    let stream = tcp_connect(&lab.client, server.addr)
        .map_err(|e| format!("LAN client -> {}: {e}", server.addr))?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let data = pattern(len, u64::from(local.port()));
    let got = echo_exact(&stream, &data)
        .map_err(|e| format!("echo of {len} bytes via {}: {e}", server.addr))?;
    if got != data {
        let first = got.iter().zip(&data).position(|(a, b)| a != b);
        return Err(format!(
            "echo of {len} bytes differs; first difference at {first:?}"
        ));
    }
    let seen = poll(Duration::from_secs(5), || {
        server.peers().get(before).copied()
    })
    .ok_or_else(|| format!("the server saw no connection (peers {:?})", server.peers()))?;
    Ok(Via { local, seen })
}

/// From the LAN client, one UDP datagram to `server`; panics unless the echo comes back
/// from exactly the address the client sent to.
pub(crate) fn lan_udp(lab: &Lab, family: Family, server: &UdpEchoServer, payload: &[u8]) -> Via {
    let before = server.peers().len();
    let x = udp_exchange(&lab.client, family, server.addr, payload, UDP_WAIT)
        .unwrap_or_else(|e| panic!("LAN client udp -> {}: {e}", server.addr));
    let Some((from, data)) = x.reply else {
        panic!(
            "no UDP reply from {} within {UDP_WAIT:?}; datagrams at the server: {:?}",
            server.addr,
            server.peers()
        )
    };
    assert_eq!(
        from, server.addr,
        "the reply must come from the address the client sent to"
    );
    assert_eq!(data, payload, "UDP payload");
    let peers = server.peers();
    assert!(
        peers.len() > before,
        "the server saw no datagram: {peers:?}"
    );
    Via {
        local: SocketAddr::new(family.addrs().client, x.local.port()),
        seen: peers[before],
    }
}

/// Asserts the server saw `egress`, naming the upstream in the message.
pub(crate) fn assert_via(via: Via, egress: IpAddr, what: &str) {
    assert_eq!(
        via.seen.ip(),
        egress,
        "{what}: the server must see the upstream's address {egress}, saw {} (the \
         gateway is {})",
        via.seen,
        if egress.is_ipv4() {
            Family::V4.addrs().gw_wan
        } else {
            Family::V6.addrs().gw_wan
        }
    );
}

/// One UDP flow from the LAN client: `exchange` runs on its socket (read timeout
/// [`UDP_WAIT`]); the flow's addresses as the client and the server saw them.
fn lan_udp_flow(
    lab: &Lab,
    family: Family,
    server: &UdpEchoServer,
    exchange: impl FnOnce(&std::net::UdpSocket),
) -> Via {
    let before = server.peers().len();
    let socket = lab
        .client
        .enter(|| std::net::UdpSocket::bind(family.any()))
        .expect("bind client udp");
    socket.set_read_timeout(Some(UDP_WAIT)).expect("timeout");
    exchange(&socket);
    let local = socket.local_addr().expect("local addr");
    Via {
        local: SocketAddr::new(family.addrs().client, local.port()),
        seen: server.peers()[before],
    }
}

/// From the LAN client, `rounds` request/reply exchanges on ONE socket (one flow, several
/// datagrams each way); every reply must come from exactly the address the client sent to.
pub(crate) fn lan_udp_rounds(
    lab: &Lab,
    family: Family,
    server: &UdpEchoServer,
    rounds: usize,
) -> Via {
    lan_udp_flow(lab, family, server, |socket| {
        let mut buf = [0u8; 256];
        for round in 0..rounds {
            let payload = format!("round {round} of one flow");
            socket
                .send_to(payload.as_bytes(), server.addr)
                .expect("send");
            let (n, from) = socket.recv_from_patiently(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "round {round}: no UDP reply from {} ({e}); datagrams at the server: {:?}",
                    server.addr,
                    server.peers()
                )
            });
            assert_eq!(from, server.addr, "round {round}: reply source");
            assert_eq!(&buf[..n], payload.as_bytes(), "round {round}: payload");
        }
    })
}

/// TCP over IPv4 and IPv6 through the upstream whose host address is `egress(family)`: a
/// short and a 1 MiB echo, the server sees the upstream, tpgate logs `action=up`.
pub(crate) fn tcp_through(
    lab: &Lab,
    tp: &Tpgate<'_>,
    egress: impl Fn(Family) -> IpAddr,
    what: &str,
) {
    tcp_through_as(lab, tp, egress, what, "up");
}

/// [`tcp_through`] with tpgate logging `action={action}`.
pub(crate) fn tcp_through_as(
    lab: &Lab,
    tp: &Tpgate<'_>,
    egress: impl Fn(Family) -> IpAddr,
    what: &str,
    action: &str,
) {
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        let via = lan_tcp(lab, &server, 1000);
        assert_via(via, egress(family), &format!("{what} tcp {family:?}"));
        tp.expect_flow("tcp", via.local, server.addr, action);
        let via = lan_tcp(lab, &server, BULK);
        assert_via(via, egress(family), &format!("{what} 1 MiB {family:?}"));
        server_first(lab, SocketAddr::new(a.server, 25), egress(family), what);
    }
}

/// A process on the gateway (`intercept.local`) reaches the destination through `up` too.
pub(crate) fn local_tcp_through(
    lab: &Lab,
    tp: &Tpgate<'_>,
    egress: impl Fn(Family) -> IpAddr,
    what: &str,
) {
    for family in [Family::V4, Family::V6] {
        let server =
            TcpEchoServer::start(&lab.server, SocketAddr::new(family.addrs().server, 8080));
        let s = tcp_connect(&lab.gw, server.addr)
            .unwrap_or_else(|e| panic!("{what} local {family:?}: {e}"));
        let local = s.local_addr().expect("local addr");
        let got = echo_exact(&s, b"from the gateway")
            .unwrap_or_else(|e| panic!("{what} local {family:?}: {e}"));
        assert_eq!(got, b"from the gateway", "{what} local {family:?}");
        let peer = server.wait_peers(1)[0];
        assert_eq!(
            peer.ip(),
            egress(family),
            "{what} local {family:?}: the server saw"
        );
        tp.expect_flow("tcp", local, server.addr, "up");
    }
}

/// A server-first protocol (the server greets, the client answers, as SMTP, SSH, FTP do)
/// through the upstream: the greeting must arrive well before any long wait, the answer
/// must reach the server, and the server must see the upstream's address.
pub(crate) fn server_first(lab: &Lab, addr: SocketAddr, egress: IpAddr, what: &str) {
    let listener = lab.server.enter(|| TcpListener::bind(addr)).expect("bind");
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

/// UDP over IPv4 and IPv6 through the upstream: the reply comes from the address asked,
/// the server sees the upstream, tpgate logs `action=up`. Per family: two client sockets
/// (a second association to the same upstream must work too), then one socket doing three
/// round trips (several datagrams in one association), then a burst (batches both ways).
pub(crate) fn udp_through(
    lab: &Lab,
    tp: &Tpgate<'_>,
    egress: impl Fn(Family) -> IpAddr,
    what: &str,
) {
    udp_through_as(lab, tp, egress, what, "up");
}

/// [`udp_through`] with tpgate logging `action={action}`.
pub(crate) fn udp_through_as(
    lab: &Lab,
    tp: &Tpgate<'_>,
    egress: impl Fn(Family) -> IpAddr,
    what: &str,
    action: &str,
) {
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
        for flow in 0..2 {
            let payload = format!("{what} {family:?} flow {flow}");
            let via = lan_udp(lab, family, &server, payload.as_bytes());
            assert_via(
                via,
                egress(family),
                &format!("{what} udp {family:?} flow {flow}"),
            );
            tp.expect_flow("udp", via.local, server.addr, action);
        }
        let via = lan_udp_rounds(lab, family, &server, 3);
        assert_via(
            via,
            egress(family),
            &format!("{what} udp {family:?} 3 rounds"),
        );
        let via = lan_udp_burst(lab, family, &server);
        assert_via(via, egress(family), &format!("{what} udp {family:?} burst"));
    }
}

/// Datagrams of one burst: equal sizes first (they travel as one batch, segmented where the
/// upstream is a datagram socket), then sizes that differ. None is empty or needs
/// fragments: shadowsocks-rust's server drops empty payloads and sends with fragmentation
/// off (over-MTU datagrams are its to drop, not tpgate's).
const BURST: usize = 48;

/// One flow: a first exchange, then [`BURST`] datagrams sent back to back without waiting;
/// every one must come back once, byte for byte, from the server's address.
pub(crate) fn lan_udp_burst(lab: &Lab, family: Family, server: &UdpEchoServer) -> Via {
    lan_udp_flow(lab, family, server, |socket| {
        let before = server.peers().len();
        let mut buf = vec![0u8; 4096];
        socket.send_to(b"burst opens", server.addr).expect("send");
        let (n, _) = socket
            .recv_from_patiently(&mut buf)
            .unwrap_or_else(|e| panic!("burst: no reply to the first datagram ({e})"));
        assert_eq!(&buf[..n], b"burst opens");
        let sent: Vec<Vec<u8>> = (0..BURST)
            .map(|i| {
                let len = if i < 32 {
                    1200
                } else {
                    [1, 7, 64, 300, 1000, 1300][i % 6]
                };
                let mut d: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
                if len >= 2 {
                    d[..2].copy_from_slice(&(i as u16).to_be_bytes());
                } else {
                    d[0] = i as u8;
                }
                d
            })
            .collect();
        for d in &sent {
            socket.send_to(d, server.addr).expect("send burst");
        }
        let mut missing = sent.clone();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        while !missing.is_empty() {
            let Ok((n, from)) = socket.recv_from_patiently(&mut buf) else {
                break;
            };
            assert_eq!(from, server.addr, "burst: reply source");
            let pos = missing
                .iter()
                .position(|d| d[..] == buf[..n])
                .unwrap_or_else(|| {
                    panic!("burst: a reply of {n} bytes that was not sent, or twice")
                });
            missing.swap_remove(pos);
        }
        assert!(
            missing.is_empty(),
            "burst: {} of {BURST} datagrams not echoed (sizes {:?}); the server got {} of {}",
            missing.len(),
            missing.iter().map(Vec::len).collect::<Vec<_>>(),
            server.peers().len() - before,
            BURST + 1
        );
    })
}
