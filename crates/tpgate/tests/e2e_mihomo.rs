//! End-to-end: a realistic mihomo (Clash.Meta) config, as a subscription ships it (ports
//! tpgate does not open, a `dns` section, vmess (http obfuscation), vless (vision) and anytls proxies,
//! groups that name them, DOMAIN/GEOIP rules, and `Country.mmdb` beside it as mihomo keeps
//! it in its home directory), plus tpgate's `intercept` section pointing at the lab.
//! `tpgate check` accepts it with exactly the expected warnings (text, line and column), and
//! `tpgate run` carries the LAN's traffic through the upstream the groups choose: the select
//! group's first member is a url-test group that, with its unsupported members dropped,
//! uses the lab's SOCKS5 server; switching the select group through the controller moves
//! TCP and UDP to the lab's Shadowsocks server; a group whose every member was skipped
//! rejects.

mod lab;
#[path = "lab/ss_server.rs"]
mod ss_server;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use lab::{
    assert_via, health_addr, health_url, lan_tcp, lan_udp, tcp_connect, tpgate_oneshot, Api,
    Family, Http204Server, Lab, PatientRead, ProcKind, ProcUpstream, TcpEchoServer, Tpgate,
    UdpEchoServer, BYPASS_V4, BYPASS_V6,
};
use ss_server::{SsServer, SS2022_METHOD, SS2022_PASSWORD};

const SECRET: &str = "mihomo-lab";

/// The config; `@NAME@` placeholders are filled in by [`config_text`].
const TEMPLATE: &str = r#"# A mihomo config as a provider ships it, plus tpgate's own keys at the end.
mixed-port: 7890
allow-lan: true
bind-address: "*"
mode: rule
log-level: info
ipv6: true
unified-delay: true
external-controller: 127.0.0.1:9090
secret: "@SECRET@"
profile:
  store-selected: true
dns:
  enable: true
  listen: 0.0.0.0:1053
  ipv6: true
  enhanced-mode: fake-ip
  fake-ip-range: 198.18.0.1/16
  # The lab's server stands in for the public resolvers a real config lists here.
  nameserver:
    - https://@NS@/dns-query
    - tls://@NS@

proxies:
  - name: "HK vmess"
    type: vmess
    server: hk.example.org
    port: 443
    uuid: 0b4a1c55-3c2e-4d6f-9a70-1f2e3d4c5b6a
    alterId: 0
    cipher: auto
    tls: true
    network: http
    http-opts:
      path: [/ray]
      headers:
        Host: [hk.example.org]
  - name: "JP vless"
    type: vless
    server: jp.example.org
    port: 443
    uuid: 0b4a1c55-3c2e-4d6f-9a70-1f2e3d4c5b6a
    flow: xtls-rprx-vision
    tls: true
    servername: jp.example.org
    client-fingerprint: chrome
    reality-opts:
      public-key: 9Kq3m5r2bXvT0JdYkZcW1hLpN8sG4fA7eU6iO2yRtQw
      short-id: 6ba85179e30d4fc2
  - name: "SG anytls"
    type: anytls
    server: sg.example.org
    port: 8443
    password: anytls-secret
    client-fingerprint: chrome
  - name: lab-socks
    type: socks5
    server: @SOCKS@
    port: 1080
    tfo: true
  - name: lab-ss
    type: ss
    server: @SS@
    port: 8388
    cipher: @SS_METHOD@
    password: "@SS_PASSWORD@"
    udp: true
  - name: lab-http
    type: http
    server: @HTTP@
    port: 8888

proxy-groups:
  - name: Proxy
    type: select
    icon: https://example.org/proxy.png
    proxies: [Auto, lab-ss, "HK vmess", "JP vless", DIRECT]
  - name: Auto
    type: url-test
    proxies: ["SG anytls", lab-socks, lab-http]
    url: "@HEALTH@"
    interval: 300
    tolerance: 50
  - name: Overseas
    type: fallback
    proxies: ["SG anytls"]
    url: "@HEALTH@"
    interval: 300
  - name: "🎬 Streaming"
    type: select
    proxies: [Proxy, lab-ss, DIRECT]

rules:
  - DOMAIN-SUFFIX,google.com,Proxy
  - DOMAIN-KEYWORD,adservice,REJECT
  - GEOIP,CN,DIRECT
  - IP-CIDR,192.168.0.0/16,DIRECT,no-resolve
  - IP-CIDR,@REJECTED@/32,Overseas,no-resolve
  - DST-PORT,8443,🎬 Streaming
  - MATCH,Proxy

# tpgate
tproxy-port: 7893
routing-mark: 255
state-file: @STATE@
intercept:
  lan-interfaces: [@LAN@]
  local: true
  udp: true
  bypass: [@BYPASS_V4@, "@BYPASS_V6@"]
"#;

/// The lab's upstreams: SOCKS5 (microsocks), Shadowsocks, and a slow HTTP proxy (so the
/// url-test group's choice between the two it can use is never a coin toss).
struct Upstreams<'l> {
    socks: ProcUpstream<'l>,
    ss: SsServer<'l>,
    http: ProcUpstream<'l>,
}

fn upstreams(lab: &Lab) -> Upstreams<'_> {
    Upstreams {
        socks: ProcUpstream::start(lab, 0, ProcKind::Microsocks { auth: None }),
        ss: SsServer::start(lab, 1, SS2022_METHOD, SS2022_PASSWORD),
        http: ProcUpstream::start_delayed(lab, 2, ProcKind::Tinyproxy, Duration::from_millis(150)),
    }
}

/// The destination the `Overseas` rule sends to a group with no usable member.
fn rejected_dst() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 100], 80))
}

fn config_text(lab: &Lab, up: &Upstreams<'_>) -> String {
    let fills = [
        ("@SECRET@", SECRET.to_owned()),
        ("@NS@", Family::V4.addrs().server.to_string()),
        ("@SOCKS@", up.socks.addr().ip().to_string()),
        ("@SS@", up.ss.addr().ip().to_string()),
        ("@SS_METHOD@", SS2022_METHOD.to_owned()),
        ("@SS_PASSWORD@", SS2022_PASSWORD.to_owned()),
        ("@HTTP@", up.http.addr().ip().to_string()),
        ("@HEALTH@", health_url()),
        ("@REJECTED@", rejected_dst().ip().to_string()),
        ("@STATE@", lab.state_file().display().to_string()),
        ("@LAN@", lab.lan_if.clone()),
        ("@BYPASS_V4@", BYPASS_V4.to_owned()),
        ("@BYPASS_V6@", BYPASS_V6.to_owned()),
    ];
    let mut text = TEMPLATE.to_owned();
    for (key, value) in fills {
        text = text.replace(key, &value);
    }
    assert!(!text.contains('@'), "unfilled placeholder in:\n{text}");
    text
}

/// `Country.mmdb` beside the config, where tpgate (like mihomo in its home directory) looks
/// for the database of `GEOIP` rules: a MaxMind-format file written for the test, with one
/// "CN" network that no test traffic goes to (so `GEOIP,CN,DIRECT` is read and never taken).
fn write_country_db(lab: &Lab) {
    let mut w = mmdb_writer::Writer::new("GeoLite2-Country");
    let record: BTreeMap<&str, BTreeMap<&str, &str>> =
        [("country", [("iso_code", "CN")].into())].into();
    let net: ipnet::IpNet = "198.18.0.0/15".parse().expect("net");
    w.insert(net, &record).expect("insert");
    std::fs::write(lab.dir.join("Country.mmdb"), w.to_bytes().expect("mmdb")).expect("write");
}

/// `line:col` of the first occurrence of `needle` at or after the line starting with
/// `after` (1-based, as tpgate reports them); the column is that of `needle` itself.
fn at(text: &str, after: &str, needle: &str) -> String {
    let start = text
        .lines()
        .position(|l| l.trim_start().starts_with(after))
        .unwrap_or_else(|| panic!("no line starting with {after:?}"));
    for (i, line) in text.lines().enumerate().skip(start) {
        if let Some(col) = line.find(needle) {
            return format!("{}:{}", i + 1, col + 1);
        }
    }
    panic!("no {needle:?} after {after:?}")
}

/// The warnings `tpgate check` must print for [`TEMPLATE`], each `FILE:LINE:COL: warning: ...`.
fn expected_warnings(text: &str) -> Vec<String> {
    let w = |after: &str, needle: &str, message: &str| {
        format!("{}: warning: {message}", at(text, after, needle))
    };
    let ignored = |key: &str| w(key, key, &format!("{key}: not used by tpgate yet; ignored"));
    vec![
        ignored("mixed-port"),
        ignored("allow-lan"),
        ignored("bind-address"),
        ignored("unified-delay"),
        ignored("profile"),
        w(
            "type: vless",
            "client-fingerprint",
            "proxies[1].client-fingerprint: not used by tpgate; ignored",
        ),
        w(
            "type: anytls",
            "anytls",
            "proxies[2].type: type anytls is not supported by tpgate; proxy `SG anytls` skipped",
        ),
        w(
            "- name: lab-socks",
            "tfo",
            "proxies[3].tfo: not used by tpgate; ignored",
        ),
        w(
            "- name: Overseas",
            "Overseas",
            "proxy-groups[2].name: group `Overseas` has no member tpgate can use (every member \
             was skipped); it rejects all traffic",
        ),
    ]
}

#[test]
fn mihomo_config_checks_with_the_expected_warnings() {
    let Some(lab) = Lab::with_wan_hosts("mihomochk", 3) else {
        return;
    };
    let up = upstreams(&lab);
    let text = config_text(&lab, &up);
    let path = lab.write_file("mihomo.yaml", &text);
    write_country_db(&lab);
    let path_text = path.display().to_string();
    let out = tpgate_oneshot(&lab.gw, &["check", "-c", &path_text]);
    assert!(
        out.success(),
        "tpgate check refused the config: {}\n{}",
        out.stderr,
        text
    );
    let got: Vec<String> = out
        .stderr
        .lines()
        .map(|l| {
            l.strip_prefix(&format!("{path_text}:"))
                .unwrap_or_else(|| panic!("warning without the file name: {l}"))
                .to_owned()
        })
        .collect();
    assert_eq!(
        got,
        expected_warnings(&text),
        "tpgate check's warnings (stderr):\n{}",
        out.stderr
    );
}

#[test]
fn mihomo_config_carries_traffic() {
    let Some(lab) = Lab::with_wan_hosts("mihomorun", 3) else {
        return;
    };
    let up = upstreams(&lab);
    let text = config_text(&lab, &up);
    let path = lab.write_file("mihomo.yaml", &text);
    write_country_db(&lab);
    let a = Family::V4.addrs();
    let echo = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 443));
    let _health = Http204Server::start(&lab.server, health_addr());
    lab.add_server_v4_addrs(1);
    let rejected = TcpEchoServer::start(&lab.server, rejected_dst());
    let tp = Tpgate::start(&lab, &path);
    let api = Api::new(&lab, Some(SECRET));

    // Proxy -> Auto (its first member) -> lab-socks: the usable member that answers first.
    assert_eq!(api.now("Proxy"), "Auto");
    let auto = api.proxy("Auto");
    assert_eq!(
        auto["all"],
        serde_json::json!(["lab-socks", "lab-http"]),
        "unsupported members are dropped"
    );
    let echo6 = TcpEchoServer::start(&lab.server, SocketAddr::new(Family::V6.addrs().server, 443));
    for (family, server) in [(Family::V4, &echo), (Family::V6, &echo6)] {
        let via = lan_tcp(&lab, server, 100_000);
        assert_via(via, up.socks.egress(family), "MATCH,Proxy via Auto");
        let line = tp.expect_flow("tcp", via.local, server.addr, "Proxy/Auto/lab-socks");
        assert!(line.contains("rule=\"MATCH,Proxy\""), "{line}");
    }

    // A group whose members were all skipped rejects: reset, nothing reaches the server.
    expect_reset(&lab, rejected_dst());
    assert!(rejected.peers().is_empty(), "{:?}", rejected.peers());

    // Skipped proxies are not in the API, the REALITY and HTTP-header nodes are; the
    // emoji-named group follows `Proxy` until switched on its own (a percent-encoded name
    // in the path).
    let all = api.request("GET", "/proxies", None).json();
    assert!(
        all["proxies"].get("SG anytls").is_none(),
        "SG anytls listed"
    );
    for loaded in ["HK vmess", "JP vless"] {
        assert!(
            all["proxies"].get(loaded).is_some(),
            "{loaded} is not listed"
        );
    }
    let streaming = "🎬 Streaming";
    let echo8443 = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 8443));
    let via = lan_tcp(&lab, &echo8443, 1000);
    assert_via(via, up.socks.egress(Family::V4), "Streaming -> Proxy");
    expect_line(
        &tp,
        via.local,
        echo8443.addr,
        "🎬 Streaming/Proxy/Auto/lab-socks",
    );
    assert_eq!(api.select(streaming, "lab-ss").status, 204);
    assert_eq!(api.now(streaming), "lab-ss");
    let via = lan_tcp(&lab, &echo8443, 1000);
    assert_via(via, up.ss.egress(Family::V4), "Streaming -> lab-ss");
    expect_line(&tp, via.local, echo8443.addr, "🎬 Streaming/lab-ss");
    assert_eq!(
        api.now("Proxy"),
        "Auto",
        "switching one group moved another"
    );

    // Switch the select group to Shadowsocks: TCP and UDP go there.
    let r = api.select("Proxy", "lab-ss");
    assert_eq!(r.status, 204, "{r:?}");
    let via = lan_tcp(&lab, &echo, 100_000);
    assert_via(via, up.ss.egress(Family::V4), "Proxy -> lab-ss");
    tp.expect_flow("tcp", via.local, echo.addr, "Proxy/lab-ss");
    let udp = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
    let via = lan_udp(&lab, Family::V4, &udp, b"mihomo udp");
    assert_via(via, up.ss.egress(Family::V4), "udp Proxy -> lab-ss");
    tp.expect_flow("udp", via.local, udp.addr, "Proxy/lab-ss");
}

/// Connects from the LAN client and expects a reset (or EOF) without any data.
fn expect_reset(lab: &Lab, dst: SocketAddr) {
    let mut s = match tcp_connect(&lab.client, dst) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
        Err(e) => panic!("connect {dst}: {e}"),
        Ok(s) => s,
    };
    let _ = s.write_all(b"hello?");
    let mut buf = [0u8; 16];
    match s.read_patiently(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected a reset from {dst}, got {other:?}"),
    }
}

/// Waits for the flow line of `src -> dst` ending in `action=<route>` (a route with a space,
/// which the lab's `key=value` matcher does not take).
fn expect_line(tp: &Tpgate<'_>, src: SocketAddr, dst: SocketAddr, route: &str) {
    let flow = format!("tcp {src} -> {dst} ");
    let action = format!("action={route}");
    tp.wait_for_line(Duration::from_secs(5), |l| {
        l.contains(&flow)
            && l.split_once(&action)
                .is_some_and(|(_, rest)| rest.is_empty() || rest.starts_with(' '))
    })
    .unwrap_or_else(|| panic!("no `{flow}... {action}` line; log:\n{}", tp.log_text()));
}
