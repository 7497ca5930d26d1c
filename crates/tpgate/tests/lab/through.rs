//! Traffic from the LAN client through tpgate to the server, reporting which address the
//! server saw: the proof that a flow went through a given upstream (each upstream host has
//! its own address) rather than out of the gateway (203.0.113.1) or not at all.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{
    echo_exact, pattern, poll, tcp_connect, udp_exchange, Family, Lab, TcpEchoServer, UdpEchoServer,
};

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

/// From the LAN client, `rounds` request/reply exchanges on ONE socket (one flow, several
/// datagrams each way); every reply must come from exactly the address the client sent to.
pub(crate) fn lan_udp_rounds(
    lab: &Lab,
    family: Family,
    server: &UdpEchoServer,
    rounds: usize,
) -> Via {
    let before = server.peers().len();
    let socket = lab
        .client
        .enter(|| std::net::UdpSocket::bind(family.any()))
        .expect("bind client udp");
    socket.set_read_timeout(Some(UDP_WAIT)).expect("timeout");
    let mut buf = [0u8; 256];
    for round in 0..rounds {
        let payload = format!("round {round} of one flow");
        socket
            .send_to(payload.as_bytes(), server.addr)
            .expect("send");
        let (n, from) = socket.recv_from(&mut buf).unwrap_or_else(|e| {
            panic!(
                "round {round}: no UDP reply from {} ({e}); datagrams at the server: {:?}",
                server.addr,
                server.peers()
            )
        });
        assert_eq!(from, server.addr, "round {round}: reply source");
        assert_eq!(&buf[..n], payload.as_bytes(), "round {round}: payload");
    }
    let local = socket.local_addr().expect("local addr");
    Via {
        local: SocketAddr::new(family.addrs().client, local.port()),
        seen: server.peers()[before],
    }
}
