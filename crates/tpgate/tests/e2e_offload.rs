//! End-to-end: `offload-direct`. Destinations the rules send DIRECT by address alone (an
//! address rule before any rule that can look at a name, a process or a port) are left to
//! the kernel: tpgate never sees the flow (no log line), the server sees the client's own
//! address and source port (routed, not relayed), and the nftables counter moves. A name
//! rule before the address rule, or `offload-direct: false`, keeps the flow going through
//! tpgate. After SIGKILL the sets go with the owned table.

mod lab;

use std::net::SocketAddr;

use lab::{lan_udp, tcp_echo, Backend, Family, Lab, TcpEchoServer, Tpgate, UdpEchoServer};
use nix::sys::signal::Signal;

/// A lab on nftables (the offload is nftables only) with `rules`, plus `extra` config.
fn start<'l>(lab: &'l Lab, rules: &[&str], extra: &str) -> Tpgate<'l> {
    let text = lab.proxy_config_text(&[], &[], rules);
    let config = lab.write_file("tpgate.yaml", &format!("{text}{extra}"));
    Tpgate::start(lab, &config)
}

fn nftables_lab(tag: &str) -> Option<Lab> {
    let mut lab = Lab::new(tag)?;
    lab.backend = Backend::Nftables;
    Some(lab)
}

/// The offload rule's packet counter in the prerouting chain.
fn offload_packets(lab: &Lab) -> u64 {
    let chain = lab
        .gw
        .sh("nft", &["list", "chain", "inet", "tpgate", "prerouting"]);
    chain
        .lines()
        .filter(|l| l.contains("@direct4") || l.contains("@direct6"))
        .filter_map(|l| {
            let rest = l.split("counter packets ").nth(1)?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn address_decided_direct_flows_are_left_to_the_kernel() {
    let Some(lab) = nftables_lab("offload") else {
        return;
    };
    let (v4, v6) = (Family::V4.addrs(), Family::V6.addrs());
    let rules = [
        format!("IP-CIDR,{}/32,DIRECT", v4.server),
        format!("IP-CIDR6,{}/128,DIRECT", v6.server),
        "DOMAIN-SUFFIX,blocked.test,REJECT".to_owned(),
        "MATCH,DIRECT".to_owned(),
    ];
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let tp = start(&lab, &rules, "");
    assert!(
        tp.log_text().contains("offload-direct"),
        "{}",
        tp.log_text()
    );
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        let x = tcp_echo(&lab.client, server.addr, b"offloaded").expect("LAN client -> server");
        assert_eq!(x.echoed, b"offloaded");
        let peers = server.wait_peers(1);
        assert_eq!(
            peers[0], x.local,
            "{family:?}: routed by the kernel, the server sees the client's own address and port"
        );
        // This host's own traffic too: no relay, so the server sees the very same port.
        let own = tcp_echo(&lab.gw, server.addr, b"own").expect("gateway -> server");
        let peers = server.wait_peers(2);
        assert_eq!(
            peers[1].port(),
            own.local.port(),
            "{family:?}: local, not relayed"
        );
        let udp = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
        let via = lan_udp(&lab, family, &udp, b"offloaded udp");
        assert_eq!(via.seen, via.local, "{family:?}: UDP routed, not relayed");
        assert!(
            tp.flows_to(server.addr).is_empty() && tp.flows_to(udp.addr).is_empty(),
            "tpgate never saw the offloaded flows: {:?}",
            tp.flows_to(server.addr)
        );
    }
    assert!(offload_packets(&lab) > 0, "the offload rule counted them");
    tp.signal(Signal::SIGKILL);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while lab.gw.nft_tables().contains("tpgate") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !lab.gw.nft_tables().contains("tpgate"),
        "after SIGKILL the owned table, sets included, is gone"
    );
}

#[test]
fn a_name_rule_first_or_offload_off_keeps_flows_in_tpgate() {
    let Some(lab) = nftables_lab("offloadno") else {
        return;
    };
    let a = Family::V4.addrs();
    let cidr = format!("IP-CIDR,{}/32,DIRECT", a.server);
    let cases = [
        (
            "a name rule comes first",
            vec![
                "DOMAIN-SUFFIX,blocked.test,REJECT",
                cidr.as_str(),
                "MATCH,DIRECT",
            ],
            false,
        ),
        (
            "offload-direct: false",
            vec![cidr.as_str(), "MATCH,DIRECT"],
            true,
        ),
    ];
    for (what, rules, off) in cases {
        let mut text = lab.proxy_config_text(&[], &[], &rules);
        if off {
            text = text.replacen("intercept:\n", "intercept:\n  offload-direct: false\n", 1);
            assert!(text.contains("offload-direct: false"), "{text}");
        }
        let config = lab.write_file("tpgate.yaml", &text);
        let mut tp = Tpgate::start(&lab, &config);
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        let x = tcp_echo(&lab.client, server.addr, b"relayed").expect("LAN client -> server");
        assert_eq!(x.echoed, b"relayed");
        let peers = server.wait_peers(1);
        assert_eq!(peers[0].ip(), a.gw_wan, "{what}: relayed by tpgate");
        tp.expect_flow("tcp", x.local, server.addr, "DIRECT");
        let table = lab.gw.sh("nft", &["list", "table", "inet", "tpgate"]);
        let offloaded = table
            .split("set direct4")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .is_some_and(|set| set.contains("elements"));
        assert!(!offloaded, "{what}: nothing offloaded:\n{table}");
        assert_eq!(
            off,
            !table.contains("direct4"),
            "{what}: the sets exist while the switch is on"
        );
        drop(server);
        tp.terminate();
    }
}
