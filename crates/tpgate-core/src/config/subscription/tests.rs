//! Share links and subscription bodies, field by field.

use base64::Engine as _;

use super::*;

fn field<'a>(f: &'a [(&'static str, Field)], key: &str) -> Option<&'a Field> {
    f.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn s(text: &str) -> Field {
    Field::Str(text.to_owned())
}

#[test]
fn ss_links_in_every_form() {
    // SIP002: base64url(method:password), no padding.
    let f = parse_uri("ss://YWVzLTEyOC1nY206dGVzdA@192.0.2.1:8388#HK%201").unwrap();
    assert_eq!(field(&f, "cipher"), Some(&s("aes-128-gcm")));
    assert_eq!(field(&f, "password"), Some(&s("test")));
    assert_eq!(field(&f, "server"), Some(&s("192.0.2.1")));
    assert_eq!(field(&f, "port"), Some(&Field::Int(8388)));
    assert_eq!(field(&f, "name"), Some(&s("HK 1")));
    // SIP022: plain method and percent-encoded base64 key.
    let f =
        parse_uri("ss://2022-blake3-aes-128-gcm:MTIzNDU2Nzg5MDEyMzQ1Ng%3D%3D@[2001:db8::1]:443#x")
            .unwrap();
    assert_eq!(field(&f, "cipher"), Some(&s("2022-blake3-aes-128-gcm")));
    assert_eq!(field(&f, "password"), Some(&s("MTIzNDU2Nzg5MDEyMzQ1Ng==")));
    assert_eq!(field(&f, "server"), Some(&s("2001:db8::1")));
    // Legacy: everything base64.
    let inner = base64::engine::general_purpose::STANDARD
        .encode("chacha20-ietf-poly1305:pw@198.51.100.2:1234");
    let f = parse_uri(&format!("ss://{inner}#old")).unwrap();
    assert_eq!(field(&f, "cipher"), Some(&s("chacha20-ietf-poly1305")));
    assert_eq!(field(&f, "port"), Some(&Field::Int(1234)));
    assert_eq!(field(&f, "name"), Some(&s("old")));
    // A plugin is carried, with its options in mihomo's keys.
    let f = parse_uri("ss://YWVzLTEyOC1nY206dGVzdA@192.0.2.1:8388/?plugin=obfs-local%3Bobfs%3Dhttp%3Bobfs-host%3Da.example#p").unwrap();
    assert_eq!(field(&f, "plugin"), Some(&s("obfs")));
    assert!(parse_uri("ss://garbage#x").is_err());
}

#[test]
fn other_schemes() {
    let f = parse_uri("trojan://pass@203.0.113.9:443?sni=t.example&allowInsecure=1#T").unwrap();
    assert_eq!(field(&f, "password"), Some(&s("pass")));
    assert_eq!(field(&f, "sni"), Some(&s("t.example")));
    assert_eq!(field(&f, "skip-cert-verify"), Some(&Field::Bool(true)));
    let f = parse_uri("trojan://p@t.example:443?type=ws&path=%2Fws#W").unwrap();
    assert_eq!(field(&f, "network"), Some(&s("ws")));
    let f = parse_uri("vless://u@v.example:443?type=ws&path=%2Fws&ed=2048#W").unwrap();
    let Some(Field::Map(ws)) = field(&f, "ws-opts") else {
        panic!("ws-opts")
    };
    assert!(ws.contains(&("max-early-data".into(), Field::Int(2048))));
    assert!(ws.contains(&("early-data-header-name".into(), s("Sec-WebSocket-Protocol"))));
    // Xray's `type=http` is HTTP/2.
    let f = parse_uri("vless://u@v.example:443?type=http&host=a.example&path=%2Fh#H").unwrap();
    assert_eq!(field(&f, "network"), Some(&s("h2")));
    let Some(Field::Map(h2)) = field(&f, "h2-opts") else {
        panic!("h2-opts")
    };
    assert_eq!(
        h2,
        &vec![
            ("path".to_owned(), s("/h")),
            ("host".to_owned(), Field::List(vec!["a.example".into()]))
        ]
    );
    let json = r#"{"v":"2","ps":"vm","add":"v.example","port":"443","id":"uuid","aid":"0","net":"ws","tls":"tls","path":"/p"}"#;
    let link = format!(
        "vmess://{}",
        base64::engine::general_purpose::STANDARD.encode(json)
    );
    let f = parse_uri(&link).unwrap();
    assert_eq!(field(&f, "type"), Some(&s("vmess")));
    assert_eq!(field(&f, "port"), Some(&Field::Int(443)));
    assert_eq!(field(&f, "tls"), Some(&Field::Bool(true)));
    let f = parse_uri(
        "vless://uuid@v.example:443?security=reality&pbk=k&sni=a.example&flow=xtls-rprx-vision#V",
    )
    .unwrap();
    assert_eq!(field(&f, "flow"), Some(&s("xtls-rprx-vision")));
    assert!(field(&f, "reality-opts").is_some());
    let f = parse_uri("hy2://secret@h.example?insecure=1#H").unwrap();
    assert_eq!(field(&f, "type"), Some(&s("hysteria2")));
    assert_eq!(field(&f, "port"), Some(&Field::Int(443)));
    // Port hopping, in the authority or as `mport`; a pinned certificate.
    let f = parse_uri("hysteria2://pw@h.example:443,20000-30000/?sni=a.example#P").unwrap();
    assert_eq!(field(&f, "server"), Some(&s("h.example")));
    assert_eq!(field(&f, "port"), Some(&Field::Int(443)));
    assert_eq!(field(&f, "ports"), Some(&s("443,20000-30000")));
    let f = parse_uri("hy2://pw@[2001:db8::1]:8443?mport=9000-9010&pinSHA256=ab#M").unwrap();
    assert_eq!(field(&f, "server"), Some(&s("2001:db8::1")));
    assert_eq!(field(&f, "port"), Some(&Field::Int(8443)));
    assert_eq!(field(&f, "ports"), Some(&s("9000-9010")));
    assert_eq!(field(&f, "fingerprint"), Some(&s("ab")));
    assert!(parse_uri("hy2://pw@h.example:x-y#B").is_err());
    let f = parse_uri("tuic://uuid:pw@t.example:443?congestion_control=bbr#U").unwrap();
    assert_eq!(field(&f, "uuid"), Some(&s("uuid")));
    let f = parse_uri("socks5://u:p@192.0.2.3:1080#S").unwrap();
    assert_eq!(field(&f, "username"), Some(&s("u")));
    let user = base64::engine::general_purpose::STANDARD.encode("a:b");
    let f = parse_uri(&format!("socks://{user}@192.0.2.3:1080#S2")).unwrap();
    assert_eq!(field(&f, "password"), Some(&s("b")));
    let f = parse_uri("https://u:p@proxy.example:8443#H").unwrap();
    assert_eq!(field(&f, "tls"), Some(&Field::Bool(true)));
    assert!(parse_uri("ftp://x").is_err());
}

#[test]
fn bodies_yaml_base64_and_plain() {
    let yaml = b"proxies:\n  - {name: a, type: socks5, server: 192.0.2.1, port: 1080}\n";
    assert_eq!(entries(yaml).unwrap().proxies.len(), 1);
    let list = "ss://YWVzLTEyOC1nY206dGVzdA@192.0.2.1:8388#A\nss://YWVzLTEyOC1nY206dGVzdA@192.0.2.2:8388#A\nfoo://x\n";
    let e = entries(list.as_bytes()).unwrap();
    assert_eq!(e.proxies.len(), 2);
    assert_eq!(e.skipped.len(), 1);
    // Duplicate names get mihomo's -01 suffix.
    let Value::Map(m) = &e.proxies[1].value else {
        panic!()
    };
    assert!(m.iter().any(|(_, v)| v.value == Value::Str("A-01".into())));
    let b64 = base64::engine::general_purpose::STANDARD.encode(list);
    assert_eq!(entries(b64.as_bytes()).unwrap().proxies.len(), 2);
    assert!(entries(b"hello world").is_err());
    assert!(entries(b"a: 1\n").is_err());
}

#[test]
fn userinfo_header() {
    let i = SubscriptionInfo::parse("upload=1; download=2.5; Total=30; expire=1700000000; x=y");
    assert_eq!(
        i,
        SubscriptionInfo {
            upload: 1,
            download: 2,
            total: 30,
            expire: 1_700_000_000
        }
    );
    assert_eq!(
        SubscriptionInfo::parse("garbage"),
        SubscriptionInfo::default()
    );
}
