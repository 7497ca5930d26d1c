//! mihomo/Clash configs: ignored keys warn once each, unsupported rules, proxies and groups
//! are skipped, and a realistic config loads with exactly the warnings expected.

use std::time::Duration;

use super::*;

#[test]
fn mihomo_keys_warn_once_each() {
    let l = ok("port: 7890\nsocks-port: 7891\nallow-lan: true\nexternal-controller: 127.0.0.1:9090\nsecret: ''\ntproxy-port: 7893\n");
    let w: Vec<_> = l
        .warnings
        .iter()
        .map(|w| (w.line, w.col, w.path.as_str(), w.message.as_str()))
        .collect();
    assert_eq!(
        w,
        [
            (1, 1, "port", "port: not used by tpgate yet; ignored"),
            (
                2,
                1,
                "socks-port",
                "socks-port: not used by tpgate yet; ignored"
            ),
            (
                3,
                1,
                "allow-lan",
                "allow-lan: not used by tpgate yet; ignored"
            ),
        ]
    );
    assert_eq!(
        l.config.external_controller,
        Some("127.0.0.1:9090".parse().unwrap())
    );
    assert_eq!(l.config.secret, None);
}

const MIHOMO: &str = r#"# A typical mihomo config with tpgate's section added.
mixed-port: 7890
tproxy-port: 7893
allow-lan: true
mode: rule
log-level: warning
ipv6: true
routing-mark: 6666
external-controller: 127.0.0.1:9090
secret: hunter2
find-process-mode: off
unified-delay: true
global-client-fingerprint: chrome
profile:
  store-selected: true
sniffer:
  enable: true
  sniff: {TLS: {ports: [443]}}
dns:
  enable: true
  enhanced-mode: fake-ip
  nameserver: [https://doh.pub/dns-query]
tun:
  enable: false
  stack: system
proxies:
  - {name: hk-ss, type: ss, server: hk.example.com, port: 8388, cipher: aes-128-gcm, password: pw, udp: true}
  - name: jp-2022
    type: ss
    server: 198.51.100.3
    port: 8389
    cipher: 2022-blake3-aes-128-gcm
    password: AAAAAAAAAAAAAAAAAAAAAA==
  - name: us-trojan
    type: trojan
    server: us.example.com
    port: 443
    password: secret
    sni: cdn.example.com
    skip-cert-verify: false
    udp: true
    client-fingerprint: chrome
  - {name: sg-vmess, type: snell, server: sg.example.com, port: 443, uuid: 0, alterId: 0, cipher: auto}
  - {name: http-vmess, type: vmess, server: h.example.com, port: 80, uuid: b831381d-6324-4d53-ad4f-8cda48b30811, network: xhttp}
  - {name: old-ss, type: ss, server: 203.0.113.7, port: 8388, cipher: aes-256-cfb, password: x}
  - {name: home-socks, type: socks5, server: 192.0.2.5, port: 1080, username: me, password: 123456, udp: true}
  - {name: office-http, type: http, server: proxy.example.org, port: 3128, tls: true, udp: true}
proxy-groups:
  - name: Proxy
    type: select
    proxies: [Auto, Fallback, hk-ss, us-trojan, sg-vmess, DIRECT]
  - {name: Auto, type: url-test, proxies: [hk-ss, jp-2022, us-trojan, sg-vmess], url: 'https://www.gstatic.com/generate_204', interval: 300, tolerance: 50}
  - {name: Fallback, type: fallback, proxies: [us-trojan, hk-ss], interval: 0}
  - {name: Balance, type: load-balance, proxies: [hk-ss, jp-2022], strategy: round-robin, lazy: false}
  - {name: Chain, type: relay, proxies: [home-socks, us-trojan]}
  - {name: Streaming, type: select, use: [provider-a], icon: 'https://example.com/i.png'}
  - {name: Smart, type: smart, proxies: [hk-ss]}
  - {name: Old, type: select, proxies: [old-ss, http-vmess]}
  - {name: GLOBAL, type: select, proxies: [Proxy, Chain, office-http, DIRECT]}
intercept:
  lan-interfaces: [br-lan]
  bypass: [203.0.113.0/24]
rules:
  - DOMAIN-SUFFIX,google.com,Proxy
  - DOMAIN-KEYWORD,ads,REJECT
  - GEOSITE,cn,DIRECT
  - IP-CIDR,192.168.0.0/16,DIRECT,no-resolve
  - IP-CIDR,198.18.0.0/15,Chain,no-resolve
  - DST-PORT,22,Balance
  - NETWORK,udp,Auto
  - SRC-IP-CIDR,192.168.1.50/32,Smart
  - GEOIP,CN,DIRECT
  - MATCH,Proxy
proxy-providers:
  provider-a:
    type: http
    url: https://sub.example/clash.yaml
    interval: 3600
"#;

#[test]
fn realistic_mihomo_config_loads_with_warnings() {
    let l = ok(MIHOMO);
    assert_eq!(
        warnings(&l),
        [
            "2:1: mixed-port: not used by tpgate yet; ignored",
            "4:1: allow-lan: not used by tpgate yet; ignored",
            "11:1: find-process-mode: not used by tpgate yet; ignored",
            "12:1: unified-delay: not used by tpgate yet; ignored",
            "13:1: global-client-fingerprint: not used by tpgate yet; ignored",
            "14:1: profile: not used by tpgate yet; ignored",
            "19:1: dns: no `listen` (fake-ip configs written for a TUN have none): the DNS \
             server listens on [::]:1053 and every port-53 query from the LAN interfaces and \
             this machine is redirected to it (intercept.dns-hijack: false turns that off)",
            "23:1: tun: not used by tpgate yet; ignored",
            "42:5: proxies[2].client-fingerprint: not used by tpgate; ignored",
            "43:28: proxies[3].type: type snell is not supported by tpgate; proxy `sg-vmess` \
             skipped",
            "44:114: proxies[4].network: network xhttp is not supported by tpgate for vmess \
             (supported: tcp, ws, grpc, h2, http); proxy `http-vmess` skipped",
            "45:71: proxies[5].cipher: cipher aes-256-cfb is not supported by tpgate \
             (supported: aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305, \
             2022-blake3-aes-128-gcm, 2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305); \
             proxy `old-ss` skipped",
            "57:25: proxy-groups[6].type: type smart is not supported by tpgate; group `Smart` \
             skipped",
            "58:12: proxy-groups[7].name: group `Old` has no member tpgate can use (every \
             member was skipped); it rejects all traffic",
            "71:5: rules[7]: target `Smart` was skipped (see its warning); rule skipped, so \
             its traffic falls through to the rules below",
        ]
    );

    let c = &l.config;
    assert_eq!(
        (c.tproxy_port, c.routing_mark, c.log_level),
        (7893, 6666, LogLevel::Warning)
    );
    assert_eq!(c.intercept.lan_interfaces, ["br-lan"]);
    assert_eq!(
        c.external_controller,
        Some("127.0.0.1:9090".parse().unwrap())
    );
    assert_eq!(c.secret.as_deref(), Some("hunter2"));
    assert_eq!(c.state_file, DEFAULT_STATE_FILE);

    // Proxies 0..5 as written, minus the skipped ones.
    let proxies: Vec<_> = c.proxies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        proxies,
        ["hk-ss", "jp-2022", "us-trojan", "home-socks", "office-http"]
    );
    assert_eq!(
        c.proxies[3].kind,
        ProxyKind::Socks5 {
            auth: Some(Credentials {
                username: "me".into(),
                password: "123456".into()
            }),
            tls: None
        }
    );
    assert!(!c.proxies[4].udp, "http never relays UDP");

    // Groups 5.. in file order, minus Smart.
    let t = |id| Member::Target(TargetId(id));
    let groups: Vec<_> = c
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.members.clone()))
        .collect();
    assert_eq!(
        groups,
        [
            ("Proxy", vec![t(6), t(7), t(0), t(2), Member::Direct]),
            ("Auto", vec![t(0), t(1), t(2)]),
            ("Fallback", vec![t(2), t(0)]),
            ("Balance", vec![t(0), t(1)]),
            ("Chain", vec![t(3), t(2)]),
            ("Streaming", vec![]),
            ("Old", vec![Member::Reject]),
            ("GLOBAL", vec![t(5), t(9), t(4), Member::Direct]),
        ]
    );
    assert_eq!(
        c.groups[1].kind,
        GroupKind::UrlTest {
            tolerance: Duration::from_millis(50)
        }
    );
    assert_eq!(
        c.groups[2].health.as_ref().map(|h| h.interval),
        Some(Duration::ZERO)
    );
    assert_eq!(c.groups[3].health.as_ref().map(|h| h.lazy), Some(false));
    assert_eq!(c.groups[4].health, None);
    assert_eq!(c.global_target, Some(TargetId(12)));

    assert!(c.sniffer.enable);
    assert_eq!(
        c.sniffer.tls_ports,
        [tpgate_core_ports(443, 443)],
        "sniff: {{TLS: {{ports: [443]}}}} sniffs TLS on 443 only"
    );
    assert!(c.sniffer.http_ports.is_empty() && c.sniffer.quic_ports.is_empty());
    let rules: Vec<_> = c
        .rules
        .iter()
        .map(|r| (r.text.as_str(), r.verdict))
        .collect();
    assert_eq!(
        rules,
        [
            (
                "DOMAIN-SUFFIX,google.com,Proxy",
                Verdict::Proxy(TargetId(5))
            ),
            ("DOMAIN-KEYWORD,ads,REJECT", Verdict::Reject),
            ("GEOSITE,cn,DIRECT", Verdict::Direct),
            ("IP-CIDR,192.168.0.0/16,DIRECT,no-resolve", Verdict::Direct),
            (
                "IP-CIDR,198.18.0.0/15,Chain,no-resolve",
                Verdict::Proxy(TargetId(9))
            ),
            ("DST-PORT,22,Balance", Verdict::Proxy(TargetId(8))),
            ("NETWORK,udp,Auto", Verdict::Proxy(TargetId(6))),
            ("GEOIP,CN,DIRECT", Verdict::Direct),
            ("MATCH,Proxy", Verdict::Proxy(TargetId(5))),
        ]
    );
    assert!(c
        .rules
        .iter()
        .any(|r| r.matcher == Matcher::Network(Network::Udp)));
}

#[test]
fn unknown_top_level_keys_warn_and_anchor_holders_are_silent() {
    // A key that only holds an anchor is how mihomo configs share settings.
    let text = format!("p: &common {{udp: true}}\n{MIHOMO}");
    assert_eq!(warnings(&ok(&text)).len(), warnings(&ok(MIHOMO)).len());
    // Any other unknown key is a warning, an error under --strict.
    let text = format!("p: 1\n{MIHOMO}");
    assert_eq!(warnings(&ok(&text))[0], "1:1: p: unknown key `p`; ignored");
    assert_eq!(
        strict_errors(&text)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["1:1: p: unknown key `p`; ignored"]
    );
    let r = load_with(&text, &Options::default());
    assert_eq!(
        r.summary.downloads,
        [(
            "proxy provider provider-a".to_owned(),
            "https://sub.example/clash.yaml".to_owned(),
            Some("proxies/provider-a.yaml".to_owned())
        )]
    );
    assert_eq!(r.summary.waiting_groups, ["Streaming"]);
    assert_eq!(r.summary.empty_groups, ["Old"]);
    assert_eq!(r.summary.proxies, 5);
    assert_eq!(
        r.summary.skipped_types.len(),
        3,
        "{:?}",
        r.summary.skipped_types
    );
}

fn tpgate_core_ports(start: u16, end: u16) -> PortRange {
    PortRange { start, end }
}
