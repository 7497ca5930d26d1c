//! End-to-end through the Shadowsocks plugins against their real servers: simple-obfs's
//! `obfs-server` (HTTP and TLS modes) and v2ray-plugin's server (WebSocket, plain and in
//! TLS) in front of shadowsocks-rust's server, and sing-box's ShadowTLS inbound (versions 2
//! and 3) in front of its Shadowsocks inbound. For each: a LAN client's TCP (IPv4 and IPv6
//! destinations, a byte-exact 1 MiB echo, a server-first exchange, whose greeting needs
//! tpgate's request to go out alone through the plugin), its UDP (plain Shadowsocks to the
//! plugin's port, as mihomo sends it), the gateway's own TCP for one plugin, and a wrong
//! password that ends that one connection with one log line while the proxy goes on
//! working; the destination sees the upstream host's address every time.

mod lab;
#[path = "lab/sing_box.rs"]
mod sing_box;
#[path = "lab/ss_plugins.rs"]
mod ss_plugins;
#[path = "lab/ss_server.rs"]
mod ss_server;

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use lab::*;
use sing_box::{sing_box, Inbound, SingBox, SHADOW_TLS_PASSWORD};
use ss_plugins::{PluginKind, PluginServer, PLUGIN_PORT};
use ss_server::{Mode, SsServer, SS2022_METHOD, SS2022_PASSWORD, SS_PORT};

/// Another valid 2022 key: the server refuses it.
const WRONG_PASSWORD: &str = "AQEBAQEBAQEBAQEBAQEBAQ==";

/// Port 81 goes through `bad`: the client's connection ends without data (EOF or reset,
/// never a hang), nothing reaches the destination, one line names `bad` and `log`, and
/// `up` still works.
fn wrong_password_fails_cleanly(lab: &Lab, tp: &Tpgate<'_>, egress: std::net::IpAddr, log: &str) {
    let a = Family::V4.addrs();
    let refused = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 81));
    let mut s = tcp_connect(&lab.client, refused.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
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
            l.contains("bad") && l.contains(log)
        })
        .unwrap_or_else(|| {
            panic!(
                "no log line for the wrong password; log:\n{}",
                tp.log_text()
            )
        });
    let lines = tp.lines();
    let count = lines.iter().filter(|l| l.contains(log)).count();
    assert_eq!(count, 1, "one line for the one failed connection: {line}");
    assert!(refused.peers().is_empty(), "{:?}", refused.peers());
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    assert_via(
        lan_tcp(lab, &server, 1000),
        egress,
        "after the wrong password",
    );
}

/// shadowsocks-rust's server behind `kind` on one WAN host (TCP through the plugin, UDP
/// straight to the plugin's port), tpgate using it as `up` (and as `bad`, with a wrong
/// password, for port 81). Only the plugin listens for TCP on the proxy's port, so every
/// TCP flow that works went through it.
fn through_plugin(tag: &str, kind: PluginKind, local: bool, wrong_log: &str) {
    let Some(lab) = Lab::with_wan_hosts(tag, 1) else {
        return;
    };
    let _tcp = SsServer::start_on(
        &lab,
        0,
        SS2022_METHOD,
        SS2022_PASSWORD,
        SS_PORT,
        Mode::TcpOnly,
    );
    let _udp = SsServer::start_on(
        &lab,
        0,
        SS2022_METHOD,
        SS2022_PASSWORD,
        PLUGIN_PORT,
        Mode::UdpOnly,
    );
    let Some(plugin) = PluginServer::start(&lab, 0, kind) else {
        return;
    };
    let config = lab.write_proxy_config(
        &[
            plugin.proxy_yaml("up", SS2022_METHOD, SS2022_PASSWORD),
            plugin.proxy_yaml("bad", SS2022_METHOD, WRONG_PASSWORD),
        ],
        &[],
        &["DST-PORT,81,bad", "MATCH,up"],
    );
    let tp = Tpgate::start(&lab, &config);
    let egress = |f: Family| plugin.host.addr(f);
    let what = format!("ss over {kind:?}");
    tcp_through(&lab, &tp, egress, &what);
    udp_through(&lab, &tp, egress, &what);
    if local {
        local_tcp_through(&lab, &tp, egress, &what);
    }
    wrong_password_fails_cleanly(&lab, &tp, egress(Family::V4), wrong_log);
}

#[test]
fn obfs_http() {
    through_plugin(
        "tpobh",
        PluginKind::ObfsHttp,
        true,
        "obfs: the server ended the stream without a reply",
    );
}

#[test]
fn obfs_tls() {
    through_plugin(
        "tpobt",
        PluginKind::ObfsTls,
        false,
        "obfs: the server ended the stream without a reply",
    );
}

#[test]
fn v2ray_plugin_websocket() {
    through_plugin(
        "tpv2w",
        PluginKind::V2ray { tls: false },
        false,
        "without a reply",
    );
}

#[test]
fn v2ray_plugin_websocket_tls() {
    through_plugin(
        "tpv2t",
        PluginKind::V2ray { tls: true },
        true,
        "without a reply",
    );
}

/// sing-box's ShadowTLS inbound (`version`) in front of its Shadowsocks inbound, tpgate
/// using it as `up` (and as `bad`, with a wrong ShadowTLS password, for port 81).
fn through_shadow_tls(tag: &str, version: u8, test: impl FnOnce(&Lab, &SingBox<'_>, &Tpgate<'_>)) {
    let Some(bin) = sing_box() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts(tag, 1) else {
        return;
    };
    let up = SingBox::start(&lab, 0, &bin, Inbound::ShadowTls { version });
    let config = lab.write_proxy_config(
        &[
            up.proxy_yaml("up", SHADOW_TLS_PASSWORD),
            up.proxy_yaml("bad", "not-the-password"),
        ],
        &[],
        &["DST-PORT,81,bad", "MATCH,up"],
    );
    let tp = Tpgate::start(&lab, &config);
    test(&lab, &up, &tp);
}

#[test]
fn shadow_tls_v2() {
    through_shadow_tls("tpst2", 2, |lab, up, tp| {
        let egress = |f: Family| up.egress(f);
        tcp_through(lab, tp, egress, "ss over shadow-tls v2");
        udp_through(lab, tp, egress, "ss over shadow-tls v2");
        local_tcp_through(lab, tp, egress, "ss over shadow-tls v2");
        wrong_password_fails_cleanly(lab, tp, egress(Family::V4), "shadow-tls");
    });
}

/// Version 3: the ClientHello's session id signed, the handshake server's records unwrapped,
/// then records signed both ways. A wrong password: the server relays the stranger to the
/// handshake server untouched, and tpgate fails that one connection with one line.
#[test]
fn shadow_tls_v3() {
    through_shadow_tls("tpst3", 3, |lab, up, tp| {
        let egress = |f: Family| up.egress(f);
        tcp_through(lab, tp, egress, "ss over shadow-tls v3");
        udp_through(lab, tp, egress, "ss over shadow-tls v3");
        local_tcp_through(lab, tp, egress, "ss over shadow-tls v3");
        wrong_password_fails_cleanly(
            lab,
            tp,
            egress(Family::V4),
            "shadow-tls v3: the handshake server's records are not signed for this password",
        );
    });
}
