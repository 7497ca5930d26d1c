//! End-to-end TCP behaviour of `tpgate run` in a namespace lab: what is intercepted and
//! relayed DIRECT (LAN clients, the gateway's own processes), what must pass untouched
//! (bypass ranges, WAN-initiated and port-forwarded connections), REJECT rules, and the
//! tproxy port itself.

mod lab;

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use lab::{
    pattern, tcp_connect, tcp_echo, tcp_send_all_and_read, Family, Lab, PatientRead, TcpEchoServer,
    Tpgate, TPROXY_PORT,
};

/// Builds a lab and starts tpgate in it with the standard config.
macro_rules! lab_with_tpgate {
    ($lab:ident, $tp:ident, $tag:expr) => {
        let Some($lab) = Lab::new($tag) else { return };
        let $tp = Tpgate::start(&$lab, &$lab.write_config());
    };
}

fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}; first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

fn lan_client_is_relayed(family: Family) {
    lab_with_tpgate!(lab, tp, "lantcp");
    let a = family.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));

    let data = pattern(10_000, 1);
    let x = tcp_echo(&lab.client, server.addr, &data).expect("LAN client -> server");
    assert_same_bytes(&x.echoed, &data, "echo through tpgate");

    let peers = server.wait_peers(1);
    assert_eq!(
        peers.len(),
        1,
        "one connection reaches the server: {peers:?}"
    );
    assert_eq!(
        peers[0].ip(),
        a.gw_wan,
        "the server must see the gateway's WAN address (relayed), not the client {}",
        a.client
    );
    let line = tp.expect_flow("tcp", x.local, server.addr, "DIRECT");
    assert!(line.contains("rule="), "flow line names the rule: {line}");
}

#[test]
fn lan_tcp_v4_is_intercepted_and_relayed() {
    lan_client_is_relayed(Family::V4);
}

#[test]
fn lan_tcp_v6_is_intercepted_and_relayed() {
    lan_client_is_relayed(Family::V6);
}

/// 1 MiB each way; the client half-closes and must still get every echoed byte, which
/// needs the relay to pass the FIN on instead of closing both directions.
fn lan_bulk_half_close(family: Family) {
    lab_with_tpgate!(lab, tp, "bulk");
    let a = family.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));

    let data = pattern(1 << 20, 7);
    let stream = tcp_connect(&lab.client, server.addr).expect("connect through tpgate");
    let local = stream.local_addr().expect("local addr");
    let echoed = tcp_send_all_and_read(&stream, &data).expect("1 MiB echo with half-close");
    assert_same_bytes(&echoed, &data, "1 MiB echo after half-close");
    assert_eq!(
        server.wait_peers(1)[0].ip(),
        a.gw_wan,
        "relayed by the gateway"
    );
    tp.expect_flow("tcp", local, server.addr, "DIRECT");
}

#[test]
fn lan_tcp_v4_bulk_transfer_survives_half_close() {
    lan_bulk_half_close(Family::V4);
}

#[test]
fn lan_tcp_v6_bulk_transfer_survives_half_close() {
    lan_bulk_half_close(Family::V6);
}

/// A process on the gateway itself: intercepted through OUTPUT and relayed from a new
/// socket, so the server sees another source port.
fn gateway_process_is_relayed(family: Family) {
    lab_with_tpgate!(lab, tp, "localtcp");
    let a = family.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));

    let x = tcp_echo(&lab.gw, server.addr, b"from the gateway").expect("gw -> server");
    assert_eq!(x.echoed, b"from the gateway");
    let peer = server.wait_peers(1)[0];
    assert_eq!(peer.ip(), a.gw_wan);
    assert_ne!(
        peer.port(),
        x.local.port(),
        "the server sees the gateway's own socket {}: the connection was not relayed",
        x.local
    );
    tp.expect_flow("tcp", x.local, server.addr, "DIRECT");
}

#[test]
fn local_tcp_v4_is_intercepted() {
    gateway_process_is_relayed(Family::V4);
}

#[test]
fn local_tcp_v6_is_intercepted() {
    gateway_process_is_relayed(Family::V6);
}

fn bypass_is_not_intercepted(family: Family) {
    lab_with_tpgate!(lab, tp, "bypass");
    let a = family.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server_bypass, 80));

    let x = tcp_echo(&lab.client, server.addr, b"bypass").expect("client -> bypass address");
    assert_eq!(x.echoed, b"bypass");
    assert_eq!(
        server.wait_peers(1),
        vec![x.local],
        "a bypassed destination sees the client itself"
    );
    assert_eq!(
        tp.flows_to(server.addr),
        Vec::<String>::new(),
        "bypass was logged as a flow"
    );
}

#[test]
fn bypass_tcp_v4_is_not_intercepted() {
    bypass_is_not_intercepted(Family::V4);
}

#[test]
fn bypass_tcp_v6_is_not_intercepted() {
    bypass_is_not_intercepted(Family::V6);
}

/// A connection opened from the WAN toward a LAN host: the LAN host's replies enter the LAN
/// interface and must not be taken for new outgoing connections.
fn wan_to_lan_is_not_intercepted(family: Family) {
    lab_with_tpgate!(lab, tp, "wan2lan");
    let a = family.addrs();
    let on_client = TcpEchoServer::start(&lab.client, SocketAddr::new(a.client, 80));

    let data = pattern(100_000, 3);
    let x = tcp_echo(&lab.server, on_client.addr, &data).expect("server -> LAN client");
    assert_same_bytes(&x.echoed, &data, "echo from the LAN host");
    assert_eq!(
        on_client.wait_peers(1),
        vec![x.local],
        "the LAN host sees the server itself"
    );
    let from_client = SocketAddr::new(a.client, 80);
    assert_eq!(
        tp.flows_to(x.local),
        Vec::<String>::new(),
        "replies were intercepted"
    );
    assert!(tp
        .lines()
        .iter()
        .all(|l| !l.contains(&format!("tcp {from_client} ->"))));
}

#[test]
fn wan_to_lan_tcp_v4_is_not_intercepted() {
    wan_to_lan_is_not_intercepted(Family::V4);
}

#[test]
fn wan_to_lan_tcp_v6_is_not_intercepted() {
    wan_to_lan_is_not_intercepted(Family::V6);
}

/// A DNAT port-forward (another table in the gateway) to a LAN service keeps working.
#[test]
fn port_forward_to_lan_is_not_intercepted() {
    let Some(lab) = Lab::new("portfwd") else {
        return;
    };
    let a = Family::V4.addrs();
    let nat = format!(
        "table ip tpgtest_nat {{\n\
           chain prerouting {{\n\
             type nat hook prerouting priority dstnat; policy accept;\n\
             iifname \"{wan}\" ip daddr {gw} tcp dport 8080 dnat to {client}:80\n\
           }}\n\
         }}\n",
        wan = lab.wan_if,
        gw = a.gw_wan,
        client = a.client,
    );
    let nat_file = lab.write_file("nat.nft", &nat);
    lab.gw
        .sh("nft", &["-f", nat_file.to_str().expect("utf-8 path")]);
    let tp = Tpgate::start(&lab, &lab.write_config());
    let on_client = TcpEchoServer::start(&lab.client, SocketAddr::new(a.client, 80));

    let forwarded = SocketAddr::new(a.gw_wan, 8080);
    let data = pattern(50_000, 5);
    let x = tcp_echo(&lab.server, forwarded, &data).expect("server -> gw:8080 -> client:80");
    assert_same_bytes(&x.echoed, &data, "echo through the port-forward");
    assert_eq!(
        on_client.wait_peers(1),
        vec![x.local],
        "the LAN host sees the server itself"
    );
    let from_client = SocketAddr::new(a.client, 80);
    assert!(
        tp.lines()
            .iter()
            .all(|l| !l.contains(&format!("tcp {from_client} ->"))),
        "the LAN host's replies were intercepted; log:\n{}",
        tp.log_text()
    );
}

/// REJECT: the client's connection is refused or reset, the real server never sees it.
fn reject_resets(family: Family) {
    lab_with_tpgate!(lab, tp, "reject");
    let a = family.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 25));

    let local = match tcp_connect(&lab.client, server.addr) {
        Err(e) => {
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
                ),
                "REJECT should refuse or reset, got {e}"
            );
            None
        }
        Ok(mut s) => {
            let local = s.local_addr().expect("local addr");
            let mut buf = [0u8; 64];
            match s.read_patiently(&mut buf) {
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                other => panic!("REJECT should reset the connection, read gave {other:?}"),
            }
            Some(local)
        }
    };
    if let Some(local) = local {
        let line = tp.expect_flow("tcp", local, server.addr, "REJECT");
        assert!(
            lab::has_rule(&line, "DST-PORT,25"),
            "REJECT line names its rule: {line}"
        );
    }
    assert_eq!(
        server.peers(),
        vec![],
        "the rejected connection reached the server"
    );
}

#[test]
fn reject_tcp_v4_resets_and_never_reaches_server() {
    reject_resets(Family::V4);
}

#[test]
fn reject_tcp_v6_resets_and_never_reaches_server() {
    reject_resets(Family::V6);
}

/// REJECT-DROP: whatever the client sees, no byte comes back and the server sees nothing.
#[test]
fn reject_drop_tcp_v4_never_reaches_server() {
    lab_with_tpgate!(lab, tp, "rejdrop");
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 26));

    if let Ok(mut s) = tcp_connect(&lab.client, server.addr) {
        let local = s.local_addr().expect("local addr");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let _ = s.write_all(b"hello");
        let mut buf = [0u8; 64];
        if let Ok(n) = s.read_patiently(&mut buf) {
            assert_eq!(n, 0, "REJECT-DROP echoed data: {:?}", &buf[..n]);
        }
        tp.expect_flow("tcp", local, server.addr, "REJECT-DROP");
    }
    assert_eq!(
        server.peers(),
        vec![],
        "the dropped connection reached the server"
    );
}

/// Connecting straight to the tproxy port on the gateway's LAN address must be refused (not
/// relayed to itself in a loop), and tpgate keeps serving.
fn tproxy_port_is_refused(family: Family) {
    lab_with_tpgate!(lab, tp, "tpport");
    let mut tp = tp;
    let a = family.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));

    let direct = SocketAddr::new(a.gw_lan, TPROXY_PORT);
    match tcp_connect(&lab.client, direct) {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionRefused,
            "connect {direct}: {e}"
        ),
        Ok(s) => panic!(
            "connecting to the tproxy port {direct} succeeded (local {:?}); log:\n{}",
            s.local_addr(),
            tp.log_text()
        ),
    }
    assert!(
        tp.try_status().is_none(),
        "tpgate exited; log:\n{}",
        tp.log_text()
    );

    let x = tcp_echo(&lab.client, server.addr, b"still works").expect("normal traffic after");
    assert_eq!(x.echoed, b"still works");
    assert_eq!(server.wait_peers(1)[0].ip(), a.gw_wan);
    assert!(
        tp.try_status().is_none(),
        "tpgate exited; log:\n{}",
        tp.log_text()
    );
}

#[test]
fn tproxy_port_v4_on_gateway_is_refused() {
    tproxy_port_is_refused(Family::V4);
}

#[test]
fn tproxy_port_v6_on_gateway_is_refused() {
    tproxy_port_is_refused(Family::V6);
}

/// The client reconnects from the same port right after a connection whose end tpgate
/// began (the server closed first), so tpgate's side of the old connection is in TIME_WAIT.
/// The new SYN must reach TPROXY, which replaces the TIME_WAIT socket, and not the
/// established-connection fast path, which would hand it to the TIME_WAIT socket: that
/// answers with a bare ACK, and the client has to retransmit its SYN. The client's own
/// retransmission count (TCP_INFO) tells.
fn reconnect_from_the_same_port(family: Family) {
    lab_with_tpgate!(lab, tp, "twreuse");
    let a = family.addrs();
    let addr = SocketAddr::new(a.server, 9100);
    let listener = lab
        .server
        .enter(|| std::net::TcpListener::bind(addr))
        .expect("bind");
    let server = std::thread::spawn(move || {
        for _ in 0..4 {
            let (mut s, _) = listener.accept().expect("accept");
            s.write_all(b"hi").expect("write");
            // Dropped: the server closes first.
        }
    });
    let script = format!(
        r#"
import socket, struct, time
fam = socket.{af}
port = None
for i in range(4):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{any}", port or 0))
    port = s.getsockname()[1]
    s.settimeout(5)
    s.connect(("{ip}", 9100))
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    retrans = struct.unpack_from("I", info, 100)[0]
    data = b""
    while True:
        d = s.recv(16)
        if not d: break
        data += d
    s.close()
    print(port, retrans, data.decode())
    time.sleep(0.05)
"#,
        af = if family == Family::V4 {
            "AF_INET"
        } else {
            "AF_INET6"
        },
        any = if family == Family::V4 {
            "0.0.0.0"
        } else {
            "::"
        },
        ip = a.server,
    );
    let out = lab.client.sh("python3", &["-c", &script]);
    server.join().expect("server");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}\n{}", tp.log_text());
    let port = lines[0].split(' ').next();
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(
            f.first().copied(),
            port,
            "every connection from one port: {out}"
        );
        assert_eq!(f.get(2).copied(), Some("hi"), "{out}");
        assert_eq!(
            f.get(1).copied(),
            Some("0"),
            "the SYN had to be sent again (it met tpgate's TIME_WAIT socket): {out}"
        );
    }
}

#[test]
fn tcp_v4_reconnect_from_the_same_port_is_not_held_up_by_time_wait() {
    reconnect_from_the_same_port(Family::V4);
}

#[test]
fn tcp_v6_reconnect_from_the_same_port_is_not_held_up_by_time_wait() {
    reconnect_from_the_same_port(Family::V6);
}
