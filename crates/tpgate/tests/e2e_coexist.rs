//! End-to-end: tpgate living with other software that manages the firewall and routing.
//! Another program flushes the whole nftables ruleset, deletes the fwmark rules, flushes
//! tpgate's routing table; addresses come and go; an interface tpgate was not told about
//! (a container bridge) carries traffic. Interception must survive or come back within a
//! second, and traffic tpgate must not touch must stay untouched.

mod lab;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lab::{pattern, poll, tcp_echo, Family, Lab, Netns, TcpEchoServer, Tpgate, ROUTE_TABLE};

/// How long tpgate may take to put its routing back.
const RESTORE: Duration = Duration::from_secs(3);

/// A LAN client's connection is intercepted: the server sees the gateway's WAN address and
/// tpgate logs the flow.
fn assert_intercepted(lab: &Lab, tp: &Tpgate<'_>, server: &TcpEchoServer, what: &str) {
    let before = server.peers().len();
    let data = pattern(4096, before as u64);
    let x = tcp_echo(&lab.client, server.addr, &data).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(x.echoed == data, "{what}: echo differs");
    let peers = server.wait_peers(before + 1);
    let family = if server.addr.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let gw = family.addrs().gw_wan;
    assert_eq!(peers[before].ip(), gw, "{what}: not relayed by tpgate");
    tp.expect_flow("tcp", x.local, server.addr, "DIRECT");
}

/// Whether the gateway's own connection to `server` goes through tpgate (it logs the flow)
/// once policy routing is back: polled, since the restore is asynchronous.
fn local_is_intercepted_again(lab: &Lab, tp: &Tpgate<'_>, server: &TcpEchoServer) -> bool {
    poll(RESTORE, || {
        let x = tcp_echo(&lab.gw, server.addr, b"local").ok()?;
        let flow = format!("tcp {} -> {}", x.local, server.addr);
        tp.lines().iter().any(|l| l.contains(&flow)).then_some(())
    })
    .is_some()
}

#[test]
fn flush_ruleset_by_another_program_leaves_interception_in_place() {
    let Some(lab) = Lab::new("flushrs") else {
        return;
    };
    let tp = Tpgate::start(&lab, &lab.write_config());
    // What a firewall reload does (firewalld, fw4, `nft -f /etc/nftables.conf`).
    let out = lab.gw.exec("nft", &["flush", "ruleset"]);
    assert!(out.success(), "nft flush ruleset: {}", out.stderr);
    let del = lab.gw.exec("nft", &["delete", "table", "inet", "tpgate"]);
    assert!(
        !del.success(),
        "another program could delete tpgate's owned table"
    );
    // nftables: the owned table never went away. iptables (no owner flag): the chains are
    // put back within a second.
    assert!(
        poll(RESTORE, || lab.gw_state().has_tpgate_table().then_some(())).is_some(),
        "tpgate's rules are gone; log:\n{}",
        tp.log_text()
    );
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        assert_intercepted(&lab, &tp, &server, &format!("after flush {family:?}"));
    }
}

#[test]
fn deleted_policy_routing_is_restored_within_a_second() {
    let Some(lab) = Lab::new("rtdel") else {
        return;
    };
    let tp = Tpgate::start(&lab, &lab.write_config());
    let table = ROUTE_TABLE.to_string();
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        let flag = match family {
            Family::V4 => "-4",
            Family::V6 => "-6",
        };
        // `ip rule flush` as some network managers do at start, then the table.
        lab.gw.ip(&[flag, "rule", "del", "lookup", &table]);
        lab.gw.ip(&[flag, "route", "flush", "table", &table]);
        let back = poll(RESTORE, || {
            let (r4, r6) = lab.gw_state().fwmark_rules();
            let (l4, l6) = lab.gw_state().local_routes();
            let ok = match family {
                Family::V4 => r4 && l4,
                Family::V6 => r6 && l6,
            };
            ok.then_some(())
        });
        assert!(
            back.is_some(),
            "{family:?}: policy routing not restored within {RESTORE:?}; log:\n{}",
            tp.log_text()
        );
        assert!(
            local_is_intercepted_again(&lab, &tp, &server),
            "{family:?}: the gateway's own traffic is not intercepted again; log:\n{}",
            tp.log_text()
        );
        assert_intercepted(&lab, &tp, &server, &format!("LAN {family:?}"));
    }
    let reports = tp
        .lines()
        .into_iter()
        .filter(|l| l.contains("removed tpgate's policy routing"))
        .count();
    assert_eq!(
        reports,
        1,
        "the incident is logged once, not per event:\n{}",
        tp.log_text()
    );
}

/// A new address (a new IPv6 prefix, as after an ISP renumbering) on the gateway while tpgate
/// runs: traffic to it, from the gateway itself and from the LAN, reaches the gateway's own
/// service directly and is never sent into the proxy.
#[test]
fn new_gateway_address_is_never_proxied() {
    let Some(lab) = Lab::new("newaddr") else {
        return;
    };
    let tp = Tpgate::start(&lab, &lab.write_config());
    let new: IpAddr = "2001:db8:5::1".parse().expect("address");
    lab.gw.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:5::1/64",
        "dev",
        &lab.lan_if,
        "nodad",
    ]);
    let service = TcpEchoServer::start(&lab.gw, SocketAddr::new(new, 8080));

    let x = tcp_echo(&lab.gw, service.addr, b"self").expect("gateway -> its new address");
    assert_eq!(x.echoed, b"self");
    let x = poll(Duration::from_secs(5), || {
        tcp_echo(&lab.client, service.addr, b"lan").ok()
    })
    .expect("LAN client -> the gateway's new address");
    assert_eq!(x.echoed, b"lan");
    let peers = service.wait_peers(2);
    assert_eq!(
        peers[1], x.local,
        "the LAN client must reach the gateway's service itself, not through a relay"
    );
    assert_eq!(
        tp.flows_to(service.addr),
        Vec::<String>::new(),
        "traffic to the gateway's own new address went into the proxy"
    );
}

/// A bridge tpgate was not told about (Docker's docker0 and its containers) is routed by the
/// gateway as usual, never intercepted: only `lan-interfaces` are.
#[test]
fn unlisted_container_bridge_is_not_intercepted() {
    let Some(lab) = Lab::new("docker") else {
        return;
    };
    let ct = ContainerNs::create(&lab);
    let tp = Tpgate::start(&lab, &lab.write_config());
    let a = Family::V6.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let mut last = None;
    let x = poll(Duration::from_secs(5), || {
        tcp_echo(&ct.ns, server.addr, b"from a container")
            .map_err(|e| last = Some(e))
            .ok()
    })
    .unwrap_or_else(|| {
        panic!(
            "container -> server: {last:?}\ngateway:\n{}\n{}",
            lab.gw.ip(&["-6", "addr"]),
            lab.gw.ip(&["-6", "neigh"])
        )
    });
    assert_eq!(x.echoed, b"from a container");
    let peers = server.wait_peers(1);
    assert_eq!(
        peers[0], x.local,
        "the container's connection must be routed untouched (the server sees the container)"
    );
    assert_eq!(tp.flows_to(server.addr), Vec::<String>::new());
    // The LAN next to it still is intercepted.
    assert_intercepted(&lab, &tp, &server, "LAN beside the bridge");
}

/// A "container" namespace behind a bridge `docker0` on the gateway, 2001:db8:6::/64 (the
/// server routes back through the gateway by default); deleted on drop.
struct ContainerNs {
    ns: Netns,
}

impl ContainerNs {
    fn create(lab: &Lab) -> Self {
        let name = format!("{}-d", lab.gw.name.trim_end_matches("-g"));
        let status = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(status.success(), "ip netns add {name}");
        let me = Self {
            ns: Netns { name: name.clone() },
        };
        me.ns
            .sh("sysctl", &["-qw", "net.ipv6.conf.all.accept_dad=0"]);
        me.ns
            .sh("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"]);
        let g = &lab.gw;
        g.ip(&["link", "add", "docker0", "type", "bridge"]);
        g.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:6::1/64",
            "dev",
            "docker0",
            "nodad",
        ]);
        g.ip(&["link", "set", "docker0", "up"]);
        g.ip(&[
            "link", "add", "veth0ct", "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        g.ip(&["link", "set", "veth0ct", "master", "docker0"]);
        g.ip(&["link", "set", "veth0ct", "up"]);
        me.ns.ip(&["link", "set", "lo", "up"]);
        me.ns.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:6::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        me.ns.ip(&["link", "set", "eth0", "up"]);
        me.ns
            .ip(&["-6", "route", "add", "default", "via", "2001:db8:6::1"]);
        me
    }
}

impl Drop for ContainerNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns.name])
            .status();
    }
}
