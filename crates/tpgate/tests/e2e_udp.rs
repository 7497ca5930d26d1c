//! End-to-end UDP behaviour of `tpgate run` in a namespace lab. Besides reaching the server,
//! every reply must come back from the exact address and port the client sent to (tpgate
//! answers from the original destination with a transparent socket), or clients drop it.

mod lab;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use lab::{udp_exchange, Family, Lab, PatientRecv, Tpgate, UdpEchoServer, UdpExchange};

const REPLY_WAIT: Duration = Duration::from_secs(5);

macro_rules! lab_with_tpgate {
    ($lab:ident, $tp:ident, $tag:expr) => {
        let Some($lab) = Lab::new($tag) else { return };
        let $tp = Tpgate::start(&$lab, &$lab.write_config());
    };
}

/// Unwraps the reply and checks it came from `dst` with `payload`.
fn assert_reply_from(x: &UdpExchange, dst: SocketAddr, payload: &[u8]) {
    let Some((from, data)) = &x.reply else {
        panic!("no UDP reply from {dst} within {REPLY_WAIT:?}")
    };
    assert_eq!(
        *from, dst,
        "the reply must come from the address the client sent to"
    );
    assert_eq!(data.as_slice(), payload, "echoed payload");
}

fn lan_client_is_relayed(family: Family) {
    lab_with_tpgate!(lab, tp, "lanudp");
    let a = family.addrs();
    let server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));

    let x = udp_exchange(&lab.client, family, server.addr, b"ping", REPLY_WAIT).expect("send");
    assert_reply_from(&x, server.addr, b"ping");
    let peers = server.peers();
    assert_eq!(peers.len(), 1, "datagrams at the server: {peers:?}");
    assert_eq!(
        peers[0].ip(),
        a.gw_wan,
        "the server must see the gateway, not {}",
        a.client
    );
    let line = tp.expect_flow(
        "udp",
        SocketAddr::new(a.client, x.local.port()),
        server.addr,
        "DIRECT",
    );
    assert!(line.contains("rule="), "flow line names the rule: {line}");
}

#[test]
fn lan_udp_v4_is_intercepted_and_relayed() {
    lan_client_is_relayed(Family::V4);
}

#[test]
fn lan_udp_v6_is_intercepted_and_relayed() {
    lan_client_is_relayed(Family::V6);
}

/// One client socket talking to two destinations: each reply carries its own source.
fn replies_keep_each_destination(family: Family) {
    lab_with_tpgate!(lab, _tp, "udp2dst");
    let a = family.addrs();
    let one = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7001));
    let two = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7002));

    let socket = lab
        .client
        .enter(|| UdpSocket::bind(family.any()))
        .expect("bind");
    socket.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
    let mut buf = [0u8; 64];
    for (round, dst) in [one.addr, two.addr, one.addr].into_iter().enumerate() {
        let payload = format!("round {round}");
        socket.send_to(payload.as_bytes(), dst).expect("send");
        let (n, from) = socket
            .recv_from_patiently(&mut buf)
            .unwrap_or_else(|e| panic!("no reply from {dst} in round {round}: {e}"));
        assert_eq!(
            (from, &buf[..n]),
            (dst, payload.as_bytes()),
            "round {round}"
        );
    }
    assert_eq!(one.peers().len(), 2);
    assert_eq!(two.peers().len(), 1);
    assert!(one
        .peers()
        .iter()
        .chain(&two.peers())
        .all(|p| p.ip() == a.gw_wan));
}

#[test]
fn lan_udp_v4_replies_come_from_each_destination() {
    replies_keep_each_destination(Family::V4);
}

#[test]
fn lan_udp_v6_replies_come_from_each_destination() {
    replies_keep_each_destination(Family::V6);
}

/// A process on the gateway: intercepted through OUTPUT, relayed from another socket, and
/// the reply still comes from the server's address.
fn gateway_process_is_relayed(family: Family) {
    lab_with_tpgate!(lab, tp, "localudp");
    let a = family.addrs();
    let server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));

    let x = udp_exchange(&lab.gw, family, server.addr, b"local", REPLY_WAIT).expect("send");
    assert_reply_from(&x, server.addr, b"local");
    let peers = server.peers();
    assert_eq!(peers.len(), 1, "datagrams at the server: {peers:?}");
    assert_eq!(peers[0].ip(), a.gw_wan);
    assert_ne!(
        peers[0].port(),
        x.local.port(),
        "the server sees the gateway's own socket: the datagram was not relayed"
    );
    tp.expect_flow(
        "udp",
        SocketAddr::new(a.gw_wan, x.local.port()),
        server.addr,
        "DIRECT",
    );
}

#[test]
fn local_udp_v4_is_intercepted() {
    gateway_process_is_relayed(Family::V4);
}

#[test]
fn local_udp_v6_is_intercepted() {
    gateway_process_is_relayed(Family::V6);
}

fn bypass_is_not_intercepted(family: Family) {
    lab_with_tpgate!(lab, tp, "bypassudp");
    let a = family.addrs();
    let server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server_bypass, 7000));

    let x = udp_exchange(&lab.client, family, server.addr, b"bypass", REPLY_WAIT).expect("send");
    assert_reply_from(&x, server.addr, b"bypass");
    assert_eq!(
        server.peers(),
        vec![SocketAddr::new(a.client, x.local.port())],
        "a bypassed destination sees the client itself"
    );
    assert_eq!(
        tp.flows_to(server.addr),
        Vec::<String>::new(),
        "bypass was logged as a flow"
    );
}

#[test]
fn bypass_udp_v4_is_not_intercepted() {
    bypass_is_not_intercepted(Family::V4);
}

#[test]
fn bypass_udp_v6_is_not_intercepted() {
    bypass_is_not_intercepted(Family::V6);
}

/// The server sends to a LAN host; the LAN host's reply enters the LAN interface and must go
/// back untouched (from the LAN host's own address).
fn wan_to_lan_is_not_intercepted(family: Family) {
    lab_with_tpgate!(lab, tp, "wan2lanudp");
    let a = family.addrs();
    let on_client = UdpEchoServer::start(&lab.client, SocketAddr::new(a.client, 7000));

    let x =
        udp_exchange(&lab.server, family, on_client.addr, b"inbound", REPLY_WAIT).expect("send");
    assert_reply_from(&x, on_client.addr, b"inbound");
    assert_eq!(
        on_client.peers(),
        vec![SocketAddr::new(a.server, x.local.port())]
    );
    assert!(
        tp.lines()
            .iter()
            .all(|l| !l.contains(&format!("udp {} ->", on_client.addr))),
        "the LAN host's reply was intercepted; log:\n{}",
        tp.log_text()
    );
}

#[test]
fn wan_to_lan_udp_v4_is_not_intercepted() {
    wan_to_lan_is_not_intercepted(Family::V4);
}

#[test]
fn wan_to_lan_udp_v6_is_not_intercepted() {
    wan_to_lan_is_not_intercepted(Family::V6);
}

/// REJECT for UDP: no reply, and nothing reaches the server.
fn reject_is_silent(family: Family) {
    lab_with_tpgate!(lab, tp, "rejectudp");
    let a = family.addrs();
    let server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 25));

    let x = udp_exchange(
        &lab.client,
        family,
        server.addr,
        b"spam",
        Duration::from_millis(1500),
    )
    .expect("send");
    assert_eq!(x.reply, None, "a REJECTed datagram got a reply");
    let line = tp.expect_flow(
        "udp",
        SocketAddr::new(a.client, x.local.port()),
        server.addr,
        "REJECT",
    );
    assert!(
        lab::has_rule(&line, "DST-PORT,25"),
        "REJECT line names its rule: {line}"
    );
    assert_eq!(
        server.peers(),
        vec![],
        "the rejected datagram reached the server"
    );
}

#[test]
fn reject_udp_v4_gets_no_reply_and_never_reaches_server() {
    reject_is_silent(Family::V4);
}

#[test]
fn reject_udp_v6_gets_no_reply_and_never_reaches_server() {
    reject_is_silent(Family::V6);
}

/// Several flows sending at once, interleaved, so tpgate's listener takes datagrams of
/// different flows in one batch and sends each flow's in runs: every flow's datagrams, of
/// varied sizes up to 30 000 bytes, arrive complete and in order, and every reply comes from
/// the destination its client asked.
fn interleaved_flows_keep_order(family: Family) {
    lab_with_tpgate!(lab, tp, "udpbatch");
    let a = family.addrs();
    let servers = [
        UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7010)),
        UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7011)),
    ];
    let flows: Vec<(UdpSocket, SocketAddr)> = (0..6)
        .map(|i| {
            let s = lab
                .client
                .enter(|| UdpSocket::bind(family.any()))
                .expect("bind");
            s.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
            (s, servers[i % 2].addr)
        })
        .collect();
    let payload = |flow: usize, seq: u16| {
        let size = if seq == ROUNDS - 1 {
            30_000
        } else {
            3 + usize::from(seq) * 23 % 1400
        };
        let mut p = vec![u8::try_from(flow).expect("flow id"); size];
        p[1..3].copy_from_slice(&seq.to_be_bytes());
        p
    };
    const ROUNDS: u16 = 60;
    const WINDOW: u16 = 10;
    let mut buf = vec![0u8; 65536];
    for start in (0..ROUNDS).step_by(usize::from(WINDOW)) {
        let end = (start + WINDOW).min(ROUNDS);
        for seq in start..end {
            for (i, (s, dst)) in flows.iter().enumerate() {
                s.send_to(&payload(i, seq), *dst).expect("send");
            }
        }
        for (i, (s, dst)) in flows.iter().enumerate() {
            for seq in start..end {
                let (n, from) = s.recv_from_patiently(&mut buf).unwrap_or_else(|e| {
                    panic!(
                        "flow {i}: no reply for datagram {seq}: {e}\n{}",
                        tp.log_text()
                    )
                });
                assert_eq!(from, *dst, "flow {i}: reply from the asked destination");
                assert_eq!(
                    &buf[..n],
                    payload(i, seq).as_slice(),
                    "flow {i}: datagram {seq} complete and in order"
                );
            }
        }
    }
    for server in &servers {
        let peers = server.peers();
        assert_eq!(peers.len(), 3 * usize::from(ROUNDS), "{peers:?}");
        assert!(peers.iter().all(|p| p.ip() == a.gw_wan), "{peers:?}");
    }
}

#[test]
fn interleaved_udp_v4_flows_keep_order_and_reply_addresses() {
    interleaved_flows_keep_order(Family::V4);
}

#[test]
fn interleaved_udp_v6_flows_keep_order_and_reply_addresses() {
    interleaved_flows_keep_order(Family::V6);
}

/// Bursts of equal-sized datagrams (what a bulk UDP transfer sends, and what tpgate sends
/// on with one segmented send per run), with a shorter last one, of a size the path carries
/// whole and of one it must fragment (GSO cannot: tpgate falls back to separate sends):
/// every datagram arrives separately, complete and in order, both ways.
fn equal_bursts_arrive_whole(family: Family) {
    lab_with_tpgate!(lab, tp, "udpgso");
    let a = family.addrs();
    let server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7020));
    let s = lab
        .client
        .enter(|| UdpSocket::bind(family.any()))
        .expect("bind");
    s.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
    let mut buf = vec![0u8; 65536];
    for size in [1000usize, 3000] {
        let burst: Vec<Vec<u8>> = (0..24u8)
            .map(|i| {
                let len = if i == 23 { size / 3 } else { size };
                let mut p = vec![i ^ 0x5a; len];
                p[0] = i;
                p
            })
            .collect();
        for p in &burst {
            s.send_to(p, server.addr).expect("send");
        }
        for (i, want) in burst.iter().enumerate() {
            let (n, from) = s.recv_from_patiently(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "size {size}: datagram {i} never came back: {e}\n{}",
                    tp.log_text()
                )
            });
            assert_eq!(from, server.addr, "size {size}: reply source");
            assert_eq!(&buf[..n], want.as_slice(), "size {size}: datagram {i}");
        }
    }
    assert_eq!(server.peers().len(), 48);
}

#[test]
fn udp_v4_bursts_arrive_as_separate_datagrams() {
    equal_bursts_arrive_whole(Family::V4);
}

#[test]
fn udp_v6_bursts_arrive_as_separate_datagrams() {
    equal_bursts_arrive_whole(Family::V6);
}

/// Four UDP listeners per address (`SO_REUSEPORT`), each serving its own shard of the NAT
/// table: the kernel spreads flows over them by their addresses and ports, and every
/// datagram of a flow must reach the same shard, or the flow would be opened twice and the
/// server would see its datagrams from two of the gateway's ports.
#[test]
fn udp_flows_spread_over_sharded_listeners_keep_to_one() {
    let Some(lab) = Lab::new("udpshard") else {
        return;
    };
    let wrapper = ["env".to_string(), "TPGATE_ACCEPTORS=4".to_string()];
    let _tp = Tpgate::start_wrapped(&lab, &lab.write_config(), &wrapper);
    let listeners = lab.gw.sh("ss", &["-Huln", "sport = :7893"]);
    for (family, any) in [("IPv4", "0.0.0.0:7893"), ("IPv6", "[::]:7893")] {
        let n = listeners.lines().filter(|l| l.contains(any)).count();
        assert_eq!(
            n, 4,
            "{family} UDP listeners on the tproxy port:\n{listeners}"
        );
    }
    const FLOWS: usize = 24;
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7100));
        let sockets: Vec<UdpSocket> = (0..FLOWS)
            .map(|_| {
                let s = lab
                    .client
                    .enter(|| UdpSocket::bind(family.any()))
                    .expect("bind client udp");
                s.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
                s
            })
            .collect();
        let mut buf = [0u8; 64];
        for round in 0..3 {
            for (i, s) in sockets.iter().enumerate() {
                let payload = format!("flow {i} round {round}");
                s.send_to(payload.as_bytes(), server.addr).expect("send");
                let (n, from) = s.recv_from_patiently(&mut buf).unwrap_or_else(|e| {
                    panic!("{family:?} flow {i} round {round}: no reply ({e})")
                });
                assert_eq!(from, server.addr, "reply source");
                assert_eq!(&buf[..n], payload.as_bytes());
            }
        }
        let peers = server.peers();
        assert_eq!(peers.len(), 3 * FLOWS, "datagrams at the server");
        // The server answers each datagram in order, so peers[round * FLOWS + i] is flow i's.
        for i in 0..FLOWS {
            let seen: std::collections::BTreeSet<_> =
                (0..3).map(|round| peers[round * FLOWS + i]).collect();
            assert_eq!(
                seen.len(),
                1,
                "{family:?} flow {i}: one way out for all its datagrams, seen from {seen:?}"
            );
        }
        let distinct: std::collections::BTreeSet<_> = peers.iter().collect();
        assert_eq!(distinct.len(), FLOWS, "{family:?}: one way out per flow");
    }
}
