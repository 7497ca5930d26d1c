//! End-to-end: subscriptions (`proxy-providers` of type http) served from the server's
//! namespace, once as a base64 URI list (`ss://` SIP002, `trojan://`, `socks5://`), once
//! as Clash YAML, with the country database from `geox-url`. tpgate starts from a config of
//! only providers, downloads them, builds groups with `use` + `filter`/`exclude-filter`, and
//! a LAN client's traffic leaves through real upstreams from the subscriptions (a
//! Shadowsocks server, a Trojan server, microsocks): the destination sees the upstream's
//! address. A refresh leaves an open connection alone; a subscription that answers
//! garbage, never answers, stalls mid-body or is 100 MB keeps its cached nodes working and
//! logs one line per failed refresh. A provider's `proxy` downloads through that proxy, and
//! its `health-check` marks a dead node so a url-test group avoids it.

mod lab;
#[path = "lab/ss_server.rs"]
mod ss_server;
#[path = "lab/trojan_server.rs"]
mod trojan_server;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lab::*;
use ss_server::{SsServer, SS_AEAD_METHOD, SS_AEAD_PASSWORD, SS_PORT};
use trojan_server::{TrojanServer, TROJAN_PASSWORD, TROJAN_PORT, TROJAN_SNI};

/// Where the subscriptions and the geodata are served (the server's IPv4 address).
const FILES_PORT: u16 = 8000;

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The SIP002 link of a lab Shadowsocks server.
fn ss_uri(ss: &SsServer, name: &str) -> String {
    let user = base64(format!("{}:{}", ss.method, ss.password).as_bytes());
    format!("ss://{user}@{}:{SS_PORT}#{name}", ss.host.v4)
}

fn trojan_uri(t: &TrojanServer, name: &str) -> String {
    format!(
        "trojan://{TROJAN_PASSWORD}@{}:{TROJAN_PORT}?sni={TROJAN_SNI}&allowInsecure=1#{name}",
        t.host.v4
    )
}

/// A subscription body in the base64 form most services serve.
fn uri_list(links: &[String]) -> Reply {
    Reply::Body(base64((links.join("\n") + "\n").as_bytes()).into_bytes())
}

fn provider(name: &str, path: &str, extra: &str) -> String {
    let v4 = Family::V4.addrs();
    format!(
        "  {name}:\n    type: http\n    url: http://{}:{FILES_PORT}{path}\n    path: ./subs/{name}.yaml\n{extra}",
        v4.server
    )
}

/// Log lines at WARN level naming provider `name`.
fn warnings_of(tp: &Tpgate, name: &str) -> Vec<String> {
    tp.lines()
        .into_iter()
        .filter(|l| l.contains("WARN") && has_field(l, "provider", name))
        .collect()
}

/// How many downloads of provider `name` succeeded so far.
fn updates_of(tp: &Tpgate, name: &str) -> usize {
    tp.lines()
        .iter()
        .filter(|l| l.contains("proxy provider updated") && has_field(l, "provider", name))
        .count()
}

fn wait_updates(tp: &Tpgate, name: &str, n: usize, limit: Duration) {
    assert!(
        poll(limit, || (updates_of(tp, name) >= n).then_some(())).is_some(),
        "provider {name}: fewer than {n} updates within {limit:?}:\n{}",
        tp.log_text()
    );
}

/// The subscriptions alone (plus `geox-url`) make a working gateway: GEOIP sends port 80 to
/// the Shadowsocks node, the other ports go to the Trojan and microsocks nodes picked by
/// filters, and to the YAML subscription's node. While the URI subscription refreshes
/// every 2 s (and changes), a connection through its Shadowsocks node keeps echoing.
#[test]
fn a_config_of_only_subscriptions_carries_lan_traffic_through_their_nodes() {
    let Some(lab) = Lab::with_wan_hosts("subs", 3) else {
        return;
    };
    let v4 = Family::V4.addrs();
    let ss = SsServer::start(&lab, 0, SS_AEAD_METHOD, SS_AEAD_PASSWORD);
    let trojan = TrojanServer::start(&lab, 1);
    let socks = ProcUpstream::start(&lab, 2, ProcKind::Microsocks { auth: None });
    let files = FileServer::start(&lab.server, SocketAddr::new(v4.server, FILES_PORT));
    let socks_uri = |name: &str| format!("socks5://{}#{name}", socks.addr());
    let v1 = [
        ss_uri(&ss, "HK-ss-a"),
        trojan_uri(&trojan, "US-trojan"),
        socks_uri("JP-socks"),
    ];
    files.put("/uris", uri_list(&v1));
    files.put(
        "/clash.yaml",
        Reply::Body(
            format!(
                "proxies:\n  - {}\n  - {}\n",
                ss.proxy_yaml("Y-ss"),
                socks.proxy_yaml("Y-socks")
            )
            .into_bytes(),
        ),
    );
    files.put(
        "/Country.mmdb",
        Reply::Body(country_db(&[("203.0.113.0/24", "US")])),
    );
    let groups = [
        "{name: SS, type: select, use: [uris], filter: ss}".to_owned(),
        "{name: Others, type: select, use: [uris], exclude-filter: 'ss|socks'}".to_owned(),
        "{name: Socks, type: select, use: [uris], filter: socks}".to_owned(),
        "{name: Yaml, type: select, use: [clash], exclude-filter: ss}".to_owned(),
    ];
    let rules = [
        "DST-PORT,81,Others",
        "DST-PORT,82,Socks",
        "DST-PORT,83,Yaml",
        "GEOIP,US,SS",
        "MATCH,DIRECT",
    ];
    let text = lab.proxy_config_text(&[], &groups, &rules)
        + "proxy-providers:\n"
        + &provider("uris", "/uris", "    interval: 2\n")
        + &provider("clash", "/clash.yaml", "    interval: 3600\n")
        + &format!(
            "geox-url:\n  mmdb: http://{}:{FILES_PORT}/Country.mmdb\n",
            v4.server
        );
    let path = lab.write_file("tpgate.yaml", &text);
    let tp = Tpgate::start(&lab, &path);
    tp.wait_for_line(Duration::from_secs(30), |l| l.contains("config reloaded"))
        .unwrap_or_else(|| panic!("no reload after the geodata download:\n{}", tp.log_text()));
    wait_updates(&tp, "uris", 1, Duration::from_secs(30));
    wait_updates(&tp, "clash", 1, Duration::from_secs(30));
    assert!(lab.dir.join("Country.mmdb").exists());
    let cached = std::fs::read(lab.dir.join("subs/uris.yaml")).expect("the cache is written");
    assert!(!cached.is_empty());

    let server = |port| TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, port));
    let (s80, s81, s82, s83) = (server(80), server(81), server(82), server(83));
    let via = |s: &TcpEchoServer| {
        poll(Duration::from_secs(20), || {
            try_lan_tcp(&lab, s, 64 << 10).ok()
        })
        .unwrap_or_else(|| panic!("no echo via {}:\n{}", s.addr, tp.log_text()))
    };
    assert_via(via(&s80), ss.egress(Family::V4), "GEOIP -> SS -> HK-ss-a");
    assert_via(
        via(&s81),
        trojan.egress(Family::V4),
        "exclude-filter -> US-trojan",
    );
    assert_via(via(&s82), socks.egress(Family::V4), "filter -> JP-socks");
    assert_via(
        via(&s83),
        socks.egress(Family::V4),
        "YAML subscription -> Y-socks",
    );

    // A connection through the Shadowsocks node stays up while the subscription refreshes,
    // also when the list changes (the Trojan node is renamed).
    let held = tcp_connect(&lab.client, s80.addr).expect("connect through SS");
    let seed = u64::from(held.local_addr().expect("local").port());
    assert_eq!(
        echo_exact(&held, &pattern(4096, seed)).unwrap(),
        pattern(4096, seed)
    );
    let before = updates_of(&tp, "uris");
    let v2 = [
        v1[0].clone(),
        trojan_uri(&trojan, "US-trojan-2"),
        v1[2].clone(),
    ];
    files.put("/uris", uri_list(&v2));
    let until = Instant::now() + Duration::from_secs(40);
    let mut round = 0u64;
    while updates_of(&tp, "uris") < before + 3 {
        assert!(Instant::now() < until, "no refreshes:\n{}", tp.log_text());
        round += 1;
        let data = pattern(16 << 10, seed + round);
        let got = echo_exact(&held, &data)
            .unwrap_or_else(|e| panic!("the held connection broke in round {round}: {e}"));
        assert!(got == data, "round {round}: the echo differs");
        std::thread::sleep(Duration::from_millis(300));
    }
    let data = pattern(256 << 10, seed + 1000);
    assert!(echo_exact(&held, &data).expect("after the refreshes") == data);
    let api = Api::new(&lab, None);
    let others = api.request("GET", "/proxies/Others", None).json();
    assert_eq!(
        others["all"],
        serde_json::json!(["US-trojan-2"]),
        "{others}"
    );
    assert_via(via(&s81), trojan.egress(Family::V4), "the renamed node");
    assert!(s80.peers().iter().all(|p| p.ip() == ss.egress(Family::V4)));
}

/// Five providers, all first downloaded fine (one SS node each). Then one keeps working,
/// and the others answer garbage, never answer, stall mid-body, or send 100 MB (over a
/// `size-limit` of 1 MiB). Each keeps its node (traffic still flows through it) and says
/// why in one warning line per failed refresh; the good one goes on updating.
#[test]
fn failed_refreshes_keep_the_cached_nodes_and_say_why() {
    let Some(lab) = Lab::with_wan_hosts("subfail", 1) else {
        return;
    };
    let v4 = Family::V4.addrs();
    let ss = SsServer::start(&lab, 0, SS_AEAD_METHOD, SS_AEAD_PASSWORD);
    let files = FileServer::start(&lab.server, SocketAddr::new(v4.server, FILES_PORT));
    let names = ["good", "garbage", "silent", "stall", "huge"];
    let mut groups = Vec::new();
    let mut rules = Vec::new();
    let mut providers = String::from("proxy-providers:\n");
    for (i, n) in names.iter().enumerate() {
        files.put(
            &format!("/{n}"),
            uri_list(&[ss_uri(&ss, &format!("{n}-ss"))]),
        );
        groups.push(format!("{{name: G-{n}, type: select, use: [{n}]}}"));
        rules.push(format!("DST-PORT,{},G-{n}", 81 + i));
        providers += &provider(
            n,
            &format!("/{n}"),
            "    interval: 2\n    size-limit: 1048576\n",
        );
    }
    rules.push("MATCH,DIRECT".to_owned());
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let text = lab.proxy_config_text(&[], &groups, &rules) + &providers;
    let tp = Tpgate::start(&lab, &lab.write_file("tpgate.yaml", &text));
    for n in names {
        wait_updates(&tp, n, 1, Duration::from_secs(30));
    }
    let servers: Vec<TcpEchoServer> = (0..names.len())
        .map(|i| {
            let port = 81 + u16::try_from(i).unwrap();
            TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, port))
        })
        .collect();
    for (n, s) in names.iter().zip(&servers) {
        let v = poll(Duration::from_secs(20), || try_lan_tcp(&lab, s, 8192).ok())
            .unwrap_or_else(|| panic!("no echo via {n}:\n{}", tp.log_text()));
        assert_via(v, ss.egress(Family::V4), n);
    }

    // Entries that each would be a warning of their own, and binary noise.
    let mut garbage = b"<html>\nss://not-a-node\nvmess://zzz\n".to_vec();
    garbage.extend((0..=255u8).cycle().take(3000));
    files.put("/garbage", Reply::Body(garbage));
    files.put("/silent", Reply::Silent);
    files.put(
        "/stall",
        Reply::StallMidBody(base64(ss_uri(&ss, "stall-new").repeat(20).as_bytes()).into_bytes()),
    );
    files.put("/huge", Reply::Huge(100 << 20));
    let hits_at_switch: Vec<usize> = names.iter().map(|n| files.hits(&format!("/{n}"))).collect();
    let good_before = updates_of(&tp, "good");
    // The silent and stalled downloads end at their 20 s timeout.
    let reasons = [
        ("garbage", "no proxy tpgate can use"),
        ("silent", "timed out"),
        ("stall", "timed out"),
        ("huge", "at most 1048576 bytes"),
    ];
    let failed = |n: &str, why: &str| {
        warnings_of(&tp, n)
            .iter()
            .any(|l| l.contains("download") && l.contains(why))
    };
    let all_failed = poll(Duration::from_secs(60), || {
        reasons.iter().all(|(n, why)| failed(n, why)).then_some(())
    });
    assert!(all_failed.is_some(), "missing warnings:\n{}", tp.log_text());
    assert!(
        updates_of(&tp, "good") > good_before,
        "the good provider stopped updating"
    );
    assert!(
        warnings_of(&tp, "good").is_empty(),
        "{:?}",
        warnings_of(&tp, "good")
    );
    for (i, (n, why)) in reasons.iter().enumerate() {
        let lines = warnings_of(&tp, n);
        for l in &lines {
            assert!(
                l.contains(&format!(
                    "proxy provider download from http://{}:{FILES_PORT}/{n} failed",
                    v4.server
                )) && l.contains(why)
                    && l.contains("keeping the 1 proxies"),
                "one line per failed refresh, naming the provider and why: {l}"
            );
        }
        // One line per try: every request after the switch but one still in flight.
        let tries = files.hits(&format!("/{n}")) - hits_at_switch[i + 1];
        assert!(
            (tries.saturating_sub(1)..=tries).contains(&lines.len()),
            "{n}: {} warning lines for {tries} tries:\n{lines:#?}",
            lines.len()
        );
    }
    for (n, s) in names.iter().zip(&servers) {
        let v = try_lan_tcp(&lab, s, 64 << 10)
            .unwrap_or_else(|e| panic!("{n}: the cached node no longer works: {e}"));
        assert_via(v, ss.egress(Family::V4), n);
    }
    let api = Api::new(&lab, None);
    let g = api.request("GET", "/proxies/G-stall", None).json();
    assert_eq!(g["all"], serde_json::json!(["stall-ss"]), "{g}");
}

/// `proxy: Boot` downloads the subscription through microsocks (the subscription server
/// sees microsocks' address); the provider's `health-check` (every 2 s, not lazy) finds
/// its first node dead: the API shows it not alive, and a url-test group using the provider
/// (checking itself only hourly) sends traffic to the live node.
#[test]
fn a_provider_downloads_through_its_proxy_and_health_checks_its_nodes() {
    let Some(lab) = Lab::with_wan_hosts("subvia", 2) else {
        return;
    };
    let v4 = Family::V4.addrs();
    let socks = ProcUpstream::start(&lab, 0, ProcKind::Microsocks { auth: None });
    let ss = SsServer::start(&lab, 1, SS_AEAD_METHOD, SS_AEAD_PASSWORD);
    let files = FileServer::start(&lab.server, SocketAddr::new(v4.server, FILES_PORT));
    // Nothing listens on port 9 of the Shadowsocks host: a refused node.
    let dead = format!(
        "ss://{}@{}:9#A-dead",
        base64(format!("{SS_AEAD_METHOD}:{SS_AEAD_PASSWORD}").as_bytes()),
        ss.host.v4
    );
    files.put("/via", uri_list(&[dead, ss_uri(&ss, "B-live")]));
    files.put("/ping", Reply::Body(b"pong".to_vec()));
    files.put("/auto", Reply::Body(b"pong".to_vec()));
    let groups = [
        "{name: Boot, type: select, proxies: [ms]}".to_owned(),
        "{name: Pick, type: select, use: [via]}".to_owned(),
        format!(
            "{{name: Auto, type: url-test, use: [via], url: 'http://{}:{FILES_PORT}/auto', interval: 3600}}",
            v4.server
        ),
    ];
    let text = lab.proxy_config_text(&[socks.proxy_yaml("ms")], &groups, &["DST-PORT,80,Auto", "MATCH,DIRECT"])
        + "proxy-providers:\n"
        + &provider(
            "via",
            "/via",
            &format!(
                "    interval: 3600\n    proxy: Boot\n    health-check: {{enable: true, url: 'http://{}:{FILES_PORT}/ping', interval: 2, lazy: false}}\n",
                v4.server
            ),
        );
    let tp = Tpgate::start(&lab, &lab.write_file("tpgate.yaml", &text));
    wait_updates(&tp, "via", 1, Duration::from_secs(30));
    let hits = files.hits_of("/via");
    assert!(!hits.is_empty());
    for h in &hits {
        assert_eq!(
            h.peer.ip(),
            socks.egress(Family::V4),
            "the download must come through microsocks, not from the gateway {}",
            v4.gw_wan
        );
    }

    let api = Api::new(&lab, None);
    let alive = |name: &str| -> Option<bool> {
        let p = api.request("GET", "/providers/proxies/via", None).json();
        p["proxies"]
            .as_array()?
            .iter()
            .find(|x| x["name"] == name)?["alive"]
            .as_bool()
    };
    let marked = poll(Duration::from_secs(20), || {
        (alive("A-dead") == Some(false) && alive("B-live") == Some(true)).then_some(())
    });
    assert!(
        marked.is_some(),
        "health verdicts not shown:\n{}",
        tp.log_text()
    );
    // Periodic: more checks arrive through the live node.
    let pings = |f: &FileServer| {
        f.hits_of("/ping")
            .iter()
            .filter(|h| h.peer.ip() == ss.egress(Family::V4))
            .count()
    };
    let first = pings(&files);
    assert!(
        poll(Duration::from_secs(20), || (pings(&files) >= first + 2)
            .then_some(()))
        .is_some(),
        "the provider's checks are not periodic (pings {first} -> {})",
        pings(&files)
    );
    assert!(tp
        .lines()
        .iter()
        .any(|l| l.contains("provider via: proxy A-dead failed its health check")));

    let s80 = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, 80));
    for _ in 0..3 {
        let v = try_lan_tcp(&lab, &s80, 8192).unwrap_or_else(|e| panic!("{e}\n{}", tp.log_text()));
        assert_via(v, ss.egress(Family::V4), "url-test avoids the dead node");
    }
    assert_eq!(api.now("Auto"), "B-live");
}
