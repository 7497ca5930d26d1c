//! End-to-end: proxy groups choosing among REAL upstream proxies on the lab's WAN hosts.
//! Each upstream host has its own address, so the server's view of a connection's peer
//! proves which member carried it. url-test follows the lower delay (a [`DelayFront`] makes
//! one member slow, then the other); fallback leaves a killed first member (through the
//! failed-dial retry at once, through the health check within one interval) and returns to
//! it when it is back; load-balance spreads destinations by consistent hashing and
//! alternates with round-robin; relay chains two real proxies (the server sees the last hop,
//! the first hop saw the gateway), also UDP into Shadowsocks and into SOCKS5 (dante)
//! through Shadowsocks, and
//! `dialer-proxy` makes the same chain through a group; select starts on its first member, switches through the
//! external controller, keeps the choice across a restart and shrugs off bad requests, also
//! when a member is itself a url-test group.
//!
//! Health checks GET `/generate_204` from a small HTTP server on the WAN server, through each
//! member. Intervals are 1 s so every move is awaited by polling, never by fixed sleeps.

mod lab;
#[path = "lab/ss_server.rs"]
mod ss_server;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lab::{
    assert_via, health_addr, health_url, lan_tcp, lan_udp, poll, Api, Family, Http204Server, Lab,
    PatientRecv, ProcKind, ProcUpstream, TcpEchoServer, Tpgate, UdpEchoServer,
};
use ss_server::{SsServer, SS2022_METHOD, SS2022_PASSWORD};

/// The controller's secret in these tests.
const SECRET: &str = "lab-secret";
/// Latency a slow member gets in each direction (several round trips per health check).
const SLOW: Duration = Duration::from_millis(150);
/// The health-check interval of the groups (the config's `interval`, in seconds).
const INTERVAL: Duration = Duration::from_secs(1);
/// How much longer than one interval a move may take: the check in flight when the change
/// happened, then one interval, then one check through a slow member (about 1 s at 150 ms).
const SLACK: Duration = Duration::from_secs(3);

fn microsocks() -> ProcKind {
    ProcKind::Microsocks { auth: None }
}

/// Writes a config with `proxies`, `groups` and `rules` (plus the controller's secret) and
/// starts tpgate.
fn start<'l>(lab: &'l Lab, proxies: &[String], groups: &[String], rules: &[&str]) -> Tpgate<'l> {
    let text = lab.proxy_config_text(proxies, groups, rules) + &format!("secret: {SECRET}\n");
    let config = lab.write_file("tpgate.yaml", &text);
    Tpgate::start(lab, &config)
}

/// A health-checked group entry: `kind` with `members`, checked every [`INTERVAL`] (not
/// lazily: no traffic is needed for the checks) through the lab's HTTP server, plus `extra`
/// fields.
fn checked_group(name: &str, kind: &str, members: &[&str], extra: &str) -> String {
    format!(
        "{{name: {name}, type: {kind}, proxies: [{}], url: \"{}\", interval: {}, lazy: false{extra}}}",
        members.join(", "),
        health_url(),
        INTERVAL.as_secs(),
    )
}

/// The echo server (port 80) and the health-check server of a test, on the WAN server.
struct Peers {
    echo: TcpEchoServer,
    health: Http204Server,
}

fn peers(lab: &Lab) -> Peers {
    let a = Family::V4.addrs();
    Peers {
        echo: TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80)),
        health: Http204Server::start(&lab.server, health_addr()),
    }
}

/// One LAN connection to `server`: the server saw `egress`, tpgate logged `action=<route>`.
fn expect_route(tp: &Tpgate<'_>, server: &TcpEchoServer, egress: IpAddr, route: &str) {
    let via = lan_tcp(tp.lab(), server, 1000);
    assert_via(via, egress, route);
    tp.expect_flow("tcp", via.local, server.addr, route);
}

/// url-test: of a 150 ms member listed first and a fast one, the fast one wins after the
/// first check; the controller's delay test agrees; when the delays swap, the group moves
/// within about one interval.
#[test]
fn url_test_follows_the_lower_delay() {
    let Some(lab) = Lab::with_wan_hosts("grpurl", 2) else {
        return;
    };
    let p = peers(&lab);
    let mut one = ProcUpstream::start_delayed(&lab, 0, microsocks(), SLOW);
    let mut two = ProcUpstream::start_delayed(&lab, 1, microsocks(), Duration::ZERO);
    let group = checked_group("auto", "url-test", &["one", "two"], ", tolerance: 100");
    let tp = start(
        &lab,
        &[one.proxy_yaml("one"), two.proxy_yaml("two")],
        &[group],
        &["MATCH,auto"],
    );
    let api = Api::new(&lab, Some(SECRET));

    // Without any traffic: the first checks alone make the fast member current.
    api.wait_now("auto", "two", INTERVAL + SLACK);
    expect_route(&tp, &p.echo, two.egress(Family::V4), "auto/two");
    let url = health_url();
    let d_one = api.delay("one", &url, 5000).expect("delay through one");
    let d_two = api.delay("two", &url, 5000).expect("delay through two");
    assert!(
        d_one >= 2 * 150 && d_two < d_one,
        "delays: one {d_one} ms (150 ms each way), two {d_two} ms"
    );

    one.set_delay(Duration::ZERO);
    two.set_delay(SLOW);
    let took = api.wait_now("auto", "one", INTERVAL + SLACK);
    eprintln!("url-test moved {took:?} after the swap");
    expect_route(&tp, &p.echo, one.egress(Family::V4), "auto/one");
    // IPv6 destinations follow the same choice.
    let a6 = Family::V6.addrs();
    let echo6 = TcpEchoServer::start(&lab.server, SocketAddr::new(a6.server, 80));
    expect_route(&tp, &echo6, one.egress(Family::V6), "auto/one");
}

/// fallback: the first member while it lives. Killed, a new connection is retried at once
/// through the second (failed-dial path), and the health check alone moves a group within
/// one interval; restarted, traffic returns to it.
#[test]
fn fallback_leaves_a_dead_member_and_returns() {
    let Some(lab) = Lab::with_wan_hosts("grpfall", 2) else {
        return;
    };
    let p = peers(&lab);
    let a = Family::V4.addrs();
    let echo81 = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 81));
    let mut first = ProcUpstream::start(&lab, 0, microsocks());
    let second = ProcUpstream::start(&lab, 1, microsocks());
    // `safe` is checked every second; `slowcheck` only every 10 minutes, so within this
    // test only a failed dial can tell it that `first` died.
    let safe = checked_group("safe", "fallback", &["first", "second"], "");
    let slowcheck = format!(
        "{{name: slowcheck, type: fallback, proxies: [first, second], url: \"{}\", interval: 600, lazy: false}}",
        health_url()
    );
    let tp = start(
        &lab,
        &[first.proxy_yaml("first"), second.proxy_yaml("second")],
        &[safe, slowcheck],
        &["DST-PORT,81,slowcheck", "MATCH,safe"],
    );
    let api = Api::new(&lab, Some(SECRET));
    let (e_first, e_second) = (first.egress(Family::V4), second.egress(Family::V4));
    // The checks go through each member: the health server sees both hosts.
    let want: BTreeSet<IpAddr> = [e_first, e_second].into();
    let checked = poll(INTERVAL + SLACK, || {
        let seen: BTreeSet<IpAddr> = p.health.peers().iter().map(SocketAddr::ip).collect();
        want.is_subset(&seen).then_some(())
    });
    assert!(
        checked.is_some(),
        "health checks came from {:?}, wanted both members {want:?}",
        p.health.peers()
    );
    expect_route(&tp, &p.echo, e_first, "safe/first");
    expect_route(&tp, &echo81, e_first, "slowcheck/first");

    first.stop();
    let killed = Instant::now();
    // The failed-dial path: this very connection fails on `first`, is retried on `second`.
    let via = lan_tcp(&lab, &echo81, 1000);
    assert_via(via, e_second, "slowcheck right after first died");
    let line = tp.expect_flow("tcp", via.local, echo81.addr, "slowcheck/first");
    let retry = "retrying via slowcheck/second";
    tp.wait_for_line(Duration::from_secs(5), |l| {
        l.contains(&format!("tcp {} -> {}", via.local, echo81.addr)) && l.contains(retry)
    })
    .unwrap_or_else(|| panic!("no retry line after {line:?}; log:\n{}", tp.log_text()));
    // ... and the next one goes straight to `second`.
    expect_route(&tp, &echo81, e_second, "slowcheck/second");
    assert_eq!(api.now("slowcheck"), "second");

    // The health check path: no traffic through `safe` until it reports `second`.
    api.wait_now("safe", "second", INTERVAL + SLACK);
    let took = killed.elapsed();
    assert!(
        took <= INTERVAL + SLACK,
        "safe noticed the dead member after {took:?}"
    );
    let via = lan_tcp(&lab, &p.echo, 1000);
    assert_via(via, e_second, "safe after the check");
    tp.expect_flow("tcp", via.local, p.echo.addr, "safe/second");

    first.restart();
    api.wait_now("safe", "first", INTERVAL + SLACK);
    expect_route(&tp, &p.echo, e_first, "safe/first");
}

/// load-balance: consistent hashing spreads 24 destinations over both members and keeps
/// each destination on its member; round-robin alternates between them.
#[test]
fn load_balance_hashes_and_alternates() {
    let Some(lab) = Lab::with_wan_hosts("grplb", 2) else {
        return;
    };
    let p = peers(&lab);
    let a = ProcUpstream::start(&lab, 0, microsocks());
    let b = ProcUpstream::start(&lab, 1, microsocks());
    let hash = checked_group(
        "hash",
        "load-balance",
        &["a", "b"],
        ", strategy: consistent-hashing",
    );
    let rr = checked_group("rr", "load-balance", &["a", "b"], ", strategy: round-robin");
    let tp = start(
        &lab,
        &[a.proxy_yaml("a"), b.proxy_yaml("b")],
        &[hash, rr],
        &["DST-PORT,80,rr", "MATCH,hash"],
    );
    let name_of = |ip: IpAddr| {
        if ip == a.egress(Family::V4) {
            "a"
        } else if ip == b.egress(Family::V4) {
            "b"
        } else {
            panic!("a flow went out through {ip}, neither member")
        }
    };

    let dsts = lab.add_server_v4_addrs(24);
    let servers: Vec<TcpEchoServer> = dsts
        .iter()
        .map(|&ip| TcpEchoServer::start(&lab.server, SocketAddr::new(ip, 443)))
        .collect();
    let mut chosen = Vec::new();
    for round in 0..3 {
        for (i, server) in servers.iter().enumerate() {
            let via = lan_tcp(&lab, server, 100);
            let member = name_of(via.seen.ip());
            tp.expect_flow("tcp", via.local, server.addr, &format!("hash/{member}"));
            if round == 0 {
                chosen.push(member);
            } else {
                assert_eq!(
                    member, chosen[i],
                    "round {round}: {} moved from {} to {member}",
                    server.addr, chosen[i]
                );
            }
        }
    }
    let used: BTreeSet<&str> = chosen.iter().copied().collect();
    assert_eq!(
        used.len(),
        2,
        "24 destinations all hashed to one member: {chosen:?}"
    );

    let order: Vec<&str> = (0..6)
        .map(|_| {
            let via = lan_tcp(&lab, &p.echo, 100);
            let member = name_of(via.seen.ip());
            tp.expect_flow("tcp", via.local, p.echo.addr, &format!("rr/{member}"));
            member
        })
        .collect();
    for pair in order.windows(2) {
        assert_ne!(pair[0], pair[1], "round-robin repeated a member: {order:?}");
    }
}

/// relay: microsocks, then dante. The server sees dante's host; dante saw microsocks' host;
/// microsocks saw the gateway. Over IPv4 and IPv6 destinations, with a 1 MiB echo.
#[test]
fn relay_chains_two_real_proxies() {
    let Some(lab) = Lab::with_wan_hosts("grprelay", 2) else {
        return;
    };
    let first = ProcUpstream::start_delayed(&lab, 0, microsocks(), Duration::ZERO);
    let last = ProcUpstream::start_delayed(&lab, 1, ProcKind::Dante, Duration::ZERO);
    let tp = start(
        &lab,
        &[first.proxy_yaml("ms"), last.proxy_yaml("dante")],
        &["{name: chain, type: relay, proxies: [ms, dante]}".to_owned()],
        &["MATCH,chain"],
    );
    for family in [Family::V4, Family::V6] {
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(family.addrs().server, 80));
        let via = lan_tcp(&lab, &server, 1000);
        assert_via(via, last.egress(family), "relay: last hop");
        tp.expect_flow("tcp", via.local, server.addr, "chain(ms>dante)");
        let via = lan_tcp(&lab, &server, 1 << 20);
        assert_via(via, last.egress(family), "relay: 1 MiB");
    }
    let gw = Family::V4.addrs().gw_wan;
    let at_first = connected_from_elsewhere(&first);
    assert!(
        !at_first.is_empty() && at_first.iter().all(|&ip| ip == gw),
        "the first hop must see the gateway {gw}: {at_first:?}"
    );
    let hop = first.egress(Family::V4);
    let at_last = connected_from_elsewhere(&last);
    assert!(
        !at_last.is_empty() && at_last.iter().all(|&ip| ip == hop),
        "the last hop must see the first hop {hop} (not the gateway): {at_last:?}"
    );
}

/// relay into Shadowsocks: dante, then a 2022-cipher ss server; the server sees the ss host,
/// dante saw the gateway. (dante, not microsocks, as the first hop: microsocks copies both
/// directions in one thread with blocking writes, so a full-duplex bulk echo between it and
/// the ss server can fill both ways' buffers and wedge it, without tpgate in that hop.) A
/// 64 KiB echo on port 81, which is not sniffed: see the ignored test below for why.
#[test]
fn relay_into_shadowsocks() {
    relay_into_ss("grprelss", 81, 64 * 1024);
}

/// A 1 MiB echo through the same chain on port 80, where tpgate first reads the client's
/// first bytes (HTTP sniffing, on by default) and sends them on before relaying. With the
/// old relay (tokio's `copy_bidirectional`) this stalled about one run in two, the last
/// ~14 KB never coming back, as if the Shadowsocks stream had reported its end early; it
/// has not since the relay copies with its own loop, which reads only into an empty buffer
/// (12 of 12 runs, and 5 of 6 failing again with the old relay put back).
#[test]
fn relay_into_shadowsocks_bulk_on_a_sniffed_port() {
    relay_into_ss("grprelss80", 80, 1 << 20);
}

fn relay_into_ss(tag: &str, port: u16, len: usize) {
    let Some(lab) = Lab::with_wan_hosts(tag, 2) else {
        return;
    };
    let first = ProcUpstream::start_delayed(&lab, 0, ProcKind::Dante, Duration::ZERO);
    let ss = SsServer::start(&lab, 1, SS2022_METHOD, SS2022_PASSWORD);
    let tp = start(
        &lab,
        &[first.proxy_yaml("dante"), ss.proxy_yaml("ss")],
        &["{name: chain, type: relay, proxies: [dante, ss]}".to_owned()],
        &["MATCH,chain"],
    );
    let server = TcpEchoServer::start(
        &lab.server,
        SocketAddr::new(Family::V4.addrs().server, port),
    );
    let via = lan_tcp(&lab, &server, len);
    assert_via(via, ss.egress(Family::V4), "relay into ss");
    tp.expect_flow("tcp", via.local, server.addr, "chain(dante>ss)");
    let gw = Family::V4.addrs().gw_wan;
    let at_first = connected_from_elsewhere(&first);
    assert!(
        !at_first.is_empty() && at_first.iter().all(|&ip| ip == gw),
        "dante must see the gateway {gw}: {at_first:?}"
    );
}

/// UDP through a relay chain into Shadowsocks: [ss1, ss2], the last hop's packets sent to
/// ss2 through ss1's UDP. ss2's host drops UDP from the gateway, so only the chain can reach
/// it; its counter sees ss1's host; the destination sees ss2's host and the replies come
/// back from the address the client asked, both families. TCP through the same chain too.
#[test]
fn relay_carries_udp_into_shadowsocks() {
    let Some(lab) = Lab::with_wan_hosts("grprelssudp", 2) else {
        return;
    };
    let ss1 = SsServer::start(&lab, 0, SS2022_METHOD, SS2022_PASSWORD);
    let ss2 = SsServer::start(&lab, 1, SS2022_METHOD, SS2022_PASSWORD);
    let port = ss2.addr().port();
    let hop = ss1.egress(Family::V4);
    ss2.host.only_through(hop, &format!("udp dport {port}"));
    let tp = start(
        &lab,
        &[ss1.proxy_yaml("ss1"), ss2.proxy_yaml("ss2")],
        &["{name: chain, type: relay, proxies: [ss1, ss2]}".to_owned()],
        &["MATCH,chain"],
    );
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
        let via = lan_udp(&lab, family, &server, format!("udp {family:?}").as_bytes());
        assert_via(via, ss2.egress(family), "udp through ss1 into ss2");
        tp.expect_flow("udp", via.local, server.addr, "chain(ss1>ss2)");
        let tcp = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 81));
        assert_via(lan_tcp(&lab, &tcp, 4096), ss2.egress(family), "tcp");
    }
    assert!(
        ss2.host.through_count(hop) >= 2,
        "ss2 saw no UDP from ss1's host"
    );
}

/// UDP through a relay chain into SOCKS5: [ss, dante]. The UDP ASSOCIATE goes through ss
/// as a TCP stream, the datagrams to dante's relay through ss's UDP; dante's host drops
/// every UDP datagram from the gateway and counts those from the ss host. The destination
/// sees dante's host; TCP through the same chain too.
#[test]
fn relay_carries_udp_into_socks5() {
    let Some(lab) = Lab::with_wan_hosts("grprelsocksudp", 2) else {
        return;
    };
    let ss = SsServer::start(&lab, 0, SS2022_METHOD, SS2022_PASSWORD);
    let dante = ProcUpstream::start(&lab, 1, ProcKind::Dante);
    let hop = ss.egress(Family::V4);
    dante.host.only_through(hop, "meta l4proto udp");
    let tp = start(
        &lab,
        &[ss.proxy_yaml("ss"), dante.proxy_yaml("dante")],
        &["{name: chain, type: relay, proxies: [ss, dante]}".to_owned()],
        &["MATCH,chain"],
    );
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
        let via = lan_udp(&lab, family, &server, format!("udp {family:?}").as_bytes());
        assert_via(via, dante.egress(family), "udp through ss into dante");
        tp.expect_flow("udp", via.local, server.addr, "chain(ss>dante)");
        let tcp = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 81));
        assert_via(lan_tcp(&lab, &tcp, 4096), dante.egress(family), "tcp");
    }
    assert!(
        dante.host.through_count(hop) >= 2,
        "dante saw no UDP from the ss host"
    );
}

/// `dialer-proxy`: the ss proxy's server is reached through a select group holding dante,
/// as a relay of both would. The destination sees the ss host, dante saw the gateway, the
/// flow's line names the way (`ss[pick/dante]`), and the API shows the dialer.
#[test]
fn dialer_proxy_reaches_shadowsocks_through_a_group() {
    let Some(lab) = Lab::with_wan_hosts("grpdialer", 2) else {
        return;
    };
    let first = ProcUpstream::start_delayed(&lab, 0, ProcKind::Dante, Duration::ZERO);
    let ss = SsServer::start(&lab, 1, SS2022_METHOD, SS2022_PASSWORD);
    let ss_yaml = ss.proxy_yaml("ss");
    let ss_yaml = format!(
        "{}, dialer-proxy: pick}}",
        ss_yaml.strip_suffix('}').expect("a flow mapping")
    );
    let tp = start(
        &lab,
        &[first.proxy_yaml("dante"), ss_yaml],
        &["{name: pick, type: select, proxies: [dante]}".to_owned()],
        &["MATCH,ss"],
    );
    for family in [Family::V4, Family::V6] {
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(family.addrs().server, 81));
        let via = lan_tcp(&lab, &server, 64 * 1024);
        assert_via(via, ss.egress(family), "ss through its dialer");
        tp.expect_flow("tcp", via.local, server.addr, "ss[pick/dante]");
    }
    let gw = Family::V4.addrs().gw_wan;
    let at_first = connected_from_elsewhere(&first);
    assert!(
        !at_first.is_empty() && at_first.iter().all(|&ip| ip == gw),
        "dante must see the gateway {gw}: {at_first:?}"
    );
    let shown = Api::new(&lab, Some(SECRET))
        .request("GET", "/proxies/ss", None)
        .json();
    assert_eq!(shown["dialer-proxy"], "pick", "{shown}");
}

/// Who connected to a delayed upstream, leaving out its own host (the start-up probe that
/// waits until it accepts connections).
fn connected_from_elsewhere(up: &ProcUpstream<'_>) -> Vec<IpAddr> {
    let own = up.egress(Family::V4);
    up.front_peers()
        .iter()
        .map(|p| p.ip().to_canonical())
        .filter(|&ip| ip != own)
        .collect()
}

/// select: the first member by default; switched through the controller (also to a nested
/// url-test group, whose own choice then applies, and to DIRECT); bad requests are refused
/// and change nothing; the choice survives a restart through the state file.
#[test]
fn select_switches_persists_and_nests() {
    let Some(lab) = Lab::with_wan_hosts("grpsel", 3) else {
        return;
    };
    let p = peers(&lab);
    let plain = ProcUpstream::start(&lab, 0, microsocks());
    let slow = ProcUpstream::start_delayed(&lab, 1, microsocks(), SLOW);
    let fast = ProcUpstream::start(&lab, 2, ProcKind::Dante);
    let proxies = [
        plain.proxy_yaml("plain"),
        slow.proxy_yaml("slow"),
        fast.proxy_yaml("fast"),
    ];
    let groups = [
        checked_group("auto", "url-test", &["slow", "fast"], ""),
        "{name: pick, type: select, proxies: [plain, auto, DIRECT]}".to_owned(),
    ];
    let rules = ["MATCH,pick"];
    let mut tp = start(&lab, &proxies, &groups, &rules);
    let api = Api::new(&lab, Some(SECRET));
    let v4 = |up: &ProcUpstream<'_>| up.egress(Family::V4);

    let pick = api.proxy("pick");
    assert_eq!(pick["type"], "Selector", "{pick}");
    assert_eq!(pick["all"], serde_json::json!(["plain", "auto", "DIRECT"]));
    assert_eq!(pick["now"], "plain");
    expect_route(&tp, &p.echo, v4(&plain), "pick/plain");

    // Without the secret: refused, nothing changes.
    let anonymous = Api::new(&lab, None).select("pick", "auto");
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(api.now("pick"), "plain");

    // The nested url-test: its fast member once checked.
    let r = api.select("pick", "auto");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(api.now("pick"), "auto");
    api.wait_now("auto", "fast", INTERVAL + SLACK);
    expect_route(&tp, &p.echo, v4(&fast), "pick/auto/fast");

    // Bad requests: 4xx, the selection stays, the daemon goes on.
    let bad = [
        (Some("not json"), "/proxies/pick", 400),
        (Some("{\"name\": 3}"), "/proxies/pick", 400),
        (Some("{}"), "/proxies/pick", 400),
        (None, "/proxies/pick", 400),
        (Some("{\"name\": \"nobody\"}"), "/proxies/pick", 400),
        (Some("{\"name\": \"plain\"}"), "/proxies/plain", 400),
        (Some("{\"name\": \"plain\"}"), "/proxies/nosuchgroup", 404),
    ];
    for (body, path, want) in bad {
        let r = api.request("PUT", path, body);
        assert_eq!(r.status, want, "PUT {path} {body:?}: {r:?}");
        assert!(
            r.json()["message"].is_string(),
            "error answers carry a message: {r:?}"
        );
    }
    assert!(
        tp.try_status().is_none(),
        "tpgate exited after bad requests:\n{}",
        tp.log_text()
    );
    assert_eq!(api.now("pick"), "auto");
    expect_route(&tp, &p.echo, v4(&fast), "pick/auto/fast");

    // DIRECT: listed, answerable and testable like any member; selected, the server sees
    // the gateway, and UDP follows the selection too.
    assert_eq!(api.proxy("DIRECT")["type"], "Direct");
    let d = api.delay("DIRECT", &health_url(), 5000);
    assert!(d.is_ok(), "delay of DIRECT: {d:?}");
    assert_eq!(api.select("pick", "DIRECT").status, 204);
    expect_route(&tp, &p.echo, Family::V4.addrs().gw_wan, "pick/DIRECT");
    let udp = UdpEchoServer::start(
        &lab.server,
        SocketAddr::new(Family::V4.addrs().server, 7000),
    );
    let via = lan_udp(&lab, Family::V4, &udp, b"select udp");
    assert_via(via, Family::V4.addrs().gw_wan, "udp via DIRECT");
    tp.expect_flow("udp", via.local, udp.addr, "pick/DIRECT");

    // The last choice is saved and comes back after a restart.
    assert_eq!(api.select("pick", "auto").status, 204);
    let saved = std::fs::read_to_string(lab.state_file()).expect("state file written");
    let state: serde_json::Value = serde_json::from_str(&saved).expect("state file is JSON");
    assert_eq!(state["selected"]["pick"], "auto", "{saved}");
    let status = tp.terminate();
    assert!(status.success(), "tpgate exit: {status:?}");
    drop(tp);
    let tp = Tpgate::start(&lab, &lab.dir.join("tpgate.yaml"));
    assert_eq!(api.now("pick"), "auto", "selection after restart");
    api.wait_now("auto", "fast", INTERVAL + SLACK);
    expect_route(&tp, &p.echo, v4(&fast), "pick/auto/fast");
}

/// A UDP flow that picks a member without UDP (microsocks here) cannot go through it, but
/// that says nothing about the member's health: TCP must stay on it, not fail over.
#[test]
fn udp_on_a_tcp_only_member_does_not_fail_it_over() {
    let Some(lab) = Lab::with_wan_hosts("grpudp", 2) else {
        return;
    };
    let p = peers(&lab);
    let tcp_only = ProcUpstream::start(&lab, 0, microsocks());
    let with_udp = ProcUpstream::start(&lab, 1, ProcKind::Dante);
    // Checked only every 10 minutes: within the test only flows can change its view.
    let group = format!(
        "{{name: fb, type: fallback, proxies: [tcponly, withudp], url: \"{}\", interval: 600, lazy: false}}",
        health_url()
    );
    let tp = start(
        &lab,
        &[
            tcp_only.proxy_yaml("tcponly"),
            with_udp.proxy_yaml("withudp"),
        ],
        &[group],
        &["MATCH,fb"],
    );
    let api = Api::new(&lab, Some(SECRET));
    expect_route(&tp, &p.echo, tcp_only.egress(Family::V4), "fb/tcponly");

    let udp = UdpEchoServer::start(
        &lab.server,
        SocketAddr::new(Family::V4.addrs().server, 7000),
    );
    let x = lab::udp_exchange(
        &lab.client,
        Family::V4,
        udp.addr,
        b"no udp here",
        Duration::from_millis(500),
    )
    .expect("send udp");
    let local = SocketAddr::new(Family::V4.addrs().client, x.local.port());
    assert!(
        x.reply.is_none(),
        "a UDP reply through a member without UDP"
    );
    tp.wait_for_line(Duration::from_secs(5), |l| {
        l.contains(&format!("udp {local} -> {}", udp.addr)) && l.contains("failed")
    })
    .unwrap_or_else(|| panic!("no failure line for the UDP flow; log:\n{}", tp.log_text()));
    assert_eq!(
        api.now("fb"),
        "tcponly",
        "a UDP-less member was failed over"
    );
    expect_route(&tp, &p.echo, tcp_only.egress(Family::V4), "fb/tcponly");
}

/// UDP through fallback: when the first member dies, the flow whose association failed is
/// not black-holed until it idles out (60 s): the client's next datagram on the same socket
/// goes through the second member.
#[test]
fn udp_flow_through_fallback_recovers_from_a_dead_member() {
    let Some(lab) = Lab::with_wan_hosts("grpudpfb", 2) else {
        return;
    };
    let _health = Http204Server::start(&lab.server, health_addr());
    let mut first = ProcUpstream::start(&lab, 0, ProcKind::Dante);
    let second = ProcUpstream::start(&lab, 1, ProcKind::Dante);
    let group = format!(
        "{{name: fb, type: fallback, proxies: [first, second], url: \"{}\", interval: 600, lazy: false}}",
        health_url()
    );
    let tp = start(
        &lab,
        &[first.proxy_yaml("first"), second.proxy_yaml("second")],
        &[group],
        &["MATCH,fb"],
    );
    let a = Family::V4.addrs();
    let udp = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
    let via = lan_udp(&lab, Family::V4, &udp, b"before");
    assert_via(via, first.egress(Family::V4), "udp via first");

    first.stop();
    let socket = lab
        .client
        .enter(|| std::net::UdpSocket::bind(Family::V4.any()))
        .expect("bind client udp");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let mut sent = 0;
    let reply = poll(Duration::from_secs(5), || {
        sent += 1;
        socket.send_to(b"again", udp.addr).expect("send");
        socket.recv_from_patiently(&mut buf).ok()
    });
    let Some((n, from)) = reply else {
        panic!(
            "no UDP reply within 5 s ({sent} datagrams sent) after the first member died; \
             log:\n{}",
            tp.log_text()
        )
    };
    assert_eq!((from, &buf[..n]), (udp.addr, &b"again"[..]));
    let seen = udp.peers();
    assert_eq!(
        seen.last().map(SocketAddr::ip),
        Some(second.egress(Family::V4)),
        "{seen:?}"
    );
    eprintln!("UDP recovered after {sent} datagram(s)");
}
