//! mihomo/Clash configs: ignored keys warn once each, unsupported rules are skipped.

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
            (
                4,
                1,
                "external-controller",
                "external-controller: not used by tpgate yet; ignored"
            ),
            (5, 1, "secret", "secret: not used by tpgate yet; ignored"),
        ]
    );
}

const MIHOMO: &str = r#"# A typical mihomo config with tpgate's section added.
mixed-port: 7890
tproxy-port: 7893
allow-lan: true
mode: rule
log-level: warning
ipv6: true
routing-mark: 6666
find-process-mode: off
geodata-mode: true
unified-delay: true
tcp-concurrent: true
global-client-fingerprint: chrome
external-controller: 127.0.0.1:9090
profile:
  store-selected: true
sniffer:
  enable: true
dns:
  enable: true
  enhanced-mode: fake-ip
  nameserver: [https://doh.pub/dns-query]
tun:
  enable: false
p: &common {udp: true, skip-cert-verify: false}
proxies:
  - {name: hk-1, type: ss, server: 192.0.2.10, port: 8388, cipher: aes-128-gcm, password: x}
  - name: "jp-1"
    type: trojan
    server: 198.51.100.3
    port: 443
    password: x
proxy-groups:
  - name: Proxy
    type: select
    proxies: [hk-1, jp-1, DIRECT]
  - {name: Auto, type: url-test, proxies: [hk-1, jp-1], url: 'https://www.gstatic.com/generate_204', interval: 300}
intercept:
  lan-interfaces: [br-lan]
  bypass: [203.0.113.0/24]
rules:
  - DOMAIN-SUFFIX,google.com,Proxy
  - DOMAIN-KEYWORD,ads,REJECT
  - GEOSITE,cn,DIRECT
  - IP-CIDR,192.168.0.0/16,DIRECT,no-resolve
  - IP-CIDR6,fe80::/10,DIRECT,no-resolve
  - DST-PORT,25,REJECT
  - NETWORK,udp,Auto
  - GEOIP,CN,DIRECT
  - MATCH,DIRECT
"#;

#[test]
fn realistic_mihomo_config_loads_with_warnings() {
    let l = load(MIHOMO).map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>());
    // `p` (an anchor holder) is not a mihomo key: it is rejected, like any unknown key.
    assert_eq!(l.unwrap_err(), ["25:1: p: unknown key `p`"]);

    let l = ok(&MIHOMO.replace("p: &common {udp: true, skip-cert-verify: false}\n", ""));
    let c = &l.config;
    assert_eq!(
        (c.tproxy_port, c.routing_mark, c.log_level),
        (7893, 6666, LogLevel::Warning)
    );
    assert_eq!(c.intercept.lan_interfaces, ["br-lan"]);
    let kept: Vec<_> = c.rules.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(
        kept,
        [
            "IP-CIDR,192.168.0.0/16,DIRECT,no-resolve",
            "IP-CIDR6,fe80::/10,DIRECT,no-resolve",
            "DST-PORT,25,REJECT",
            "MATCH,DIRECT"
        ]
    );
    let w: Vec<_> = l.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        [
            "2:1: mixed-port: not used by tpgate yet; ignored",
            "4:1: allow-lan: not used by tpgate yet; ignored",
            "9:1: find-process-mode: not used by tpgate yet; ignored",
            "10:1: geodata-mode: not used by tpgate yet; ignored",
            "11:1: unified-delay: not used by tpgate yet; ignored",
            "12:1: tcp-concurrent: not used by tpgate yet; ignored",
            "13:1: global-client-fingerprint: not used by tpgate yet; ignored",
            "14:1: external-controller: not used by tpgate yet; ignored",
            "15:1: profile: not used by tpgate yet; ignored",
            "17:1: sniffer: not used by tpgate yet; ignored",
            "19:1: dns: not used by tpgate yet; ignored",
            "23:1: tun: not used by tpgate yet; ignored",
            "25:1: proxies: not used by tpgate yet; ignored",
            "32:1: proxy-groups: not used by tpgate yet; ignored",
            "41:5: rules[0]: DOMAIN-SUFFIX rules are not supported yet; rule skipped",
            "42:5: rules[1]: DOMAIN-KEYWORD rules are not supported yet; rule skipped",
            "43:5: rules[2]: GEOSITE rules are not supported yet; rule skipped",
            "47:5: rules[6]: target `Auto` is a proxy or proxy group; proxy targets arrive with upstream support; rule skipped",
            "48:5: rules[7]: GEOIP rules are not supported yet; rule skipped",
        ]
    );
    assert!(c
        .rules
        .iter()
        .all(|r| r.matcher != Matcher::Network(Network::Udp)));
}
