//! Bad peers behind groups, for the QUIC proxies: a hysteria2 or tuic member whose password
//! the server refuses sits first in a `fallback` group next to a good one. The health check
//! (every second, through each member) moves the group to the good member with no traffic,
//! and traffic through it is never disturbed. (A dial that fails is retried through the
//! next member for every proxy type alike: `e2e_groups` covers that path; a hysteria2 dial
//! refused for its password is checked in `e2e_hysteria2`.)

mod lab;
#[path = "lab/sing_box.rs"]
mod sing_box;

use std::net::SocketAddr;
use std::time::Duration;

use lab::{
    assert_via, health_addr, health_url, lan_tcp, lan_udp, Api, Family, Http204Server, Lab,
    TcpEchoServer, Tpgate, UdpEchoServer,
};
use sing_box::{sing_box, Inbound, SingBox, TROJAN_PASSWORD};

const SECRET: &str = "lab-secret";
/// The health checks' interval, and how long a move may take after it.
const INTERVAL: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_secs(4);

fn bad_member_is_left(tag: &str, inbound: Inbound) {
    let Some(bin) = sing_box() else {
        return;
    };
    let Some(lab) = Lab::with_wan_hosts(tag, 1) else {
        return;
    };
    let up = SingBox::start(&lab, 0, &bin, inbound);
    let a = Family::V4.addrs();
    let echo = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let udp_echo = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
    let _health = Http204Server::start(&lab.server, health_addr());
    let group = format!(
        "{{name: safe, type: fallback, proxies: [bad, up], url: \"{}\", interval: {}, lazy: false}}",
        health_url(),
        INTERVAL.as_secs()
    );
    let text = lab.proxy_config_text(
        &[
            up.proxy_yaml("bad", "not-the-password"),
            up.proxy_yaml("up", TROJAN_PASSWORD),
        ],
        &[group],
        &["MATCH,safe"],
    ) + &format!("secret: {SECRET}\n");
    let tp = Tpgate::start(&lab, &lab.write_file("tpgate.yaml", &text));
    let api = Api::new(&lab, Some(SECRET));
    let egress = up.egress(Family::V4);

    api.wait_now("safe", "up", INTERVAL + SLACK);
    tp.wait_for_line(Duration::from_secs(5), |l| {
        l.contains("group safe: member bad failed its health check")
    })
    .unwrap_or_else(|| panic!("no health-check line for bad; log:\n{}", tp.log_text()));
    let via = lan_tcp(&lab, &echo, 1000);
    assert_via(via, egress, "safe after the check");
    tp.expect_flow("tcp", via.local, echo.addr, "safe/up");
    let via = lan_udp(&lab, Family::V4, &udp_echo, b"through the group");
    assert_via(via, egress, "udp through safe");
    tp.expect_flow("udp", via.local, udp_echo.addr, "safe/up");
    let via = lan_tcp(&lab, &echo, 1 << 20);
    assert_via(via, egress, "1 MiB through safe/up");
    assert_eq!(api.now("safe"), "up");
}

#[test]
fn hysteria2_bad_member_is_left() {
    bad_member_is_left("hy2grp", Inbound::Hysteria2 { obfs: false });
}

#[test]
fn tuic_bad_member_is_left() {
    bad_member_is_left("tuicgrp", Inbound::Tuic { quic_udp: false });
}
