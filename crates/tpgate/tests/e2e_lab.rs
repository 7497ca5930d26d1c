//! Sanity check of the test lab itself, without tpgate: the gateway forwards plain traffic
//! both ways, TCP and UDP, IPv4 and IPv6, and every peer sees the other's real address.
//! When this fails, the other e2e failures say nothing about tpgate.

mod lab;

use std::net::SocketAddr;
use std::time::Duration;

use lab::{tcp_echo, udp_exchange, Family, Lab, TcpEchoServer, UdpEchoServer};

fn forwards(family: Family) {
    let Some(lab) = Lab::new("labfwd") else {
        return;
    };
    let a = family.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let bypass = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server_bypass, 80));
    let udp = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
    let on_client = TcpEchoServer::start(&lab.client, SocketAddr::new(a.client, 80));

    let x = tcp_echo(&lab.client, server.addr, b"hello").expect("client -> server tcp");
    assert_eq!(x.echoed, b"hello");
    assert_eq!(
        server.wait_peers(1),
        vec![x.local],
        "server sees the client itself"
    );

    let x = tcp_echo(&lab.client, bypass.addr, b"bypass").expect("client -> bypass addr");
    assert_eq!(x.echoed, b"bypass");
    assert_eq!(bypass.wait_peers(1), vec![x.local]);

    let x = tcp_echo(&lab.server, on_client.addr, b"inbound").expect("server -> client tcp");
    assert_eq!(x.echoed, b"inbound");
    assert_eq!(on_client.wait_peers(1), vec![x.local]);

    let x = udp_exchange(
        &lab.client,
        family,
        udp.addr,
        b"ping",
        Duration::from_secs(5),
    )
    .expect("client -> server udp");
    let (from, data) = x.reply.expect("udp reply");
    assert_eq!((from, data.as_slice()), (udp.addr, b"ping".as_slice()));
    let peers = udp.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0], SocketAddr::new(a.client, x.local.port()));
}

#[test]
fn lab_forwards_without_tpgate_v4() {
    forwards(Family::V4);
}

#[test]
fn lab_forwards_without_tpgate_v6() {
    forwards(Family::V6);
}

#[test]
fn lab_is_removed_on_drop() {
    let Some(lab) = Lab::new("labdrop") else {
        return;
    };
    let names = [
        lab.client.name.clone(),
        lab.gw.name.clone(),
        lab.server.name.clone(),
    ];
    drop(lab);
    let list = lab::run("ip", &["netns", "list"]).ok_or_panic();
    for name in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str())),
            "{name} left behind"
        );
    }
}
