//! `proxies:`: every supported type into the model, every error at its node, and what is
//! skipped or ignored with a warning.

use super::*;

const K16: &str = "AAAAAAAAAAAAAAAAAAAAAA==";
const K32: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// A config whose `proxies` are the given flow mappings, one per line from line 2.
fn with_proxies(items: &[&str]) -> String {
    let mut text = "proxies:\n".to_owned();
    for item in items {
        text.push_str(&format!("  - {item}\n"));
    }
    text
}

fn proxy(name: &str, server: &str, port: u16, udp: bool, kind: ProxyKind) -> ProxyDef {
    ProxyDef {
        name: name.to_owned(),
        server: server.to_owned(),
        port,
        udp,
        kind,
    }
}

fn creds(username: &str, password: &str) -> Option<Credentials> {
    Some(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

fn tls(sni: Option<&str>, skip_cert_verify: bool) -> Tls {
    Tls {
        sni: sni.map(str::to_owned),
        skip_cert_verify,
    }
}

#[test]
fn every_type_parses_into_the_model() {
    let l = ok(&format!(
        "proxies:
  - {{name: s1, type: socks5, server: 192.0.2.1, port: 1080}}
  - name: s2
    type: SOCKS5
    server: socks.example.com
    port: '1081'
    username: me
    password: 123456
    tls: true
    sni: front.example.com
    skip-cert-verify: true
    udp: true
  - {{name: h1, type: http, server: 2001:db8::1, port: 3128, udp: true}}
  - {{name: h2, type: http, server: h.example, port: 443, username: u, password: p, tls: true}}
  - {{name: ss1, type: ss, server: 192.0.2.2, port: 8388, cipher: chacha20-ietf-poly1305, password: pw}}
  - {{name: ss2, type: ss, server: 192.0.2.3, port: 8389, cipher: 2022-blake3-aes-256-gcm, password: '{K32}', udp: true}}
  - {{name: ss3, type: ss, server: 192.0.2.4, port: 8390, cipher: 2022-blake3-aes-128-gcm, password: '{K16}:{K16}'}}
  - {{name: t1, type: trojan, server: t.example.com, port: 443, password: pw}}
  - {{name: t2, type: trojan, server: 192.0.2.5, port: 8443, password: pw, servername: t.example.net, skip-cert-verify: true, udp: true, network: tcp}}
  - {{name: 7, type: ss, server: 192.0.2.6, port: 1, cipher: AES-256-GCM, password: pw}}
"
    ));
    assert_eq!(warnings(&l), Vec::<String>::new());
    let c = &l.config;
    let expected = [
        proxy(
            "s1",
            "192.0.2.1",
            1080,
            false,
            ProxyKind::Socks5 {
                auth: None,
                tls: None,
            },
        ),
        proxy(
            "s2",
            "socks.example.com",
            1081,
            true,
            ProxyKind::Socks5 {
                auth: creds("me", "123456"),
                tls: Some(tls(Some("front.example.com"), true)),
            },
        ),
        proxy(
            "h1",
            "2001:db8::1",
            3128,
            false,
            ProxyKind::Http {
                auth: None,
                tls: None,
            },
        ),
        proxy(
            "h2",
            "h.example",
            443,
            false,
            ProxyKind::Http {
                auth: creds("u", "p"),
                tls: Some(tls(None, false)),
            },
        ),
        proxy(
            "ss1",
            "192.0.2.2",
            8388,
            false,
            ProxyKind::Shadowsocks {
                cipher: Cipher::Chacha20IetfPoly1305,
                password: "pw".into(),
            },
        ),
        proxy(
            "ss2",
            "192.0.2.3",
            8389,
            true,
            ProxyKind::Shadowsocks {
                cipher: Cipher::Blake3Aes256Gcm2022,
                password: K32.into(),
            },
        ),
        proxy(
            "ss3",
            "192.0.2.4",
            8390,
            false,
            ProxyKind::Shadowsocks {
                cipher: Cipher::Blake3Aes128Gcm2022,
                password: format!("{K16}:{K16}"),
            },
        ),
        proxy(
            "t1",
            "t.example.com",
            443,
            false,
            ProxyKind::Trojan {
                password: "pw".into(),
                tls: tls(None, false),
            },
        ),
        proxy(
            "t2",
            "192.0.2.5",
            8443,
            true,
            ProxyKind::Trojan {
                password: "pw".into(),
                tls: tls(Some("t.example.net"), true),
            },
        ),
        proxy(
            "7",
            "192.0.2.6",
            1,
            false,
            ProxyKind::Shadowsocks {
                cipher: Cipher::Aes256Gcm,
                password: "pw".into(),
            },
        ),
    ];
    assert_eq!(c.proxies, expected);
    assert!(c.groups.is_empty());
    assert_eq!(c.target_name(TargetId(1)), Some("s2"));
    assert_eq!(c.target(TargetId(10)), None);
    assert_eq!(c.global_action(), Action::Proxy(TargetId(0)));
}

#[test]
fn field_errors_point_at_the_node() {
    let at = |item: &str, col: usize, path: &str| error_at(&with_proxies(&[item]), 2, col, path);
    let base = "name: p, type: socks5, server: 192.0.2.1";
    let m = at(&format!("{{{base}, port: abc}}"), 53, "proxies[0].port");
    assert!(m.contains("found `abc`"), "{m}");
    let m = at(&format!("{{{base}, port: 0}}"), 53, "proxies[0].port");
    assert!(m.contains("1-65535"), "{m}");
    let m = at(&format!("{{{base}, port: 70000}}"), 53, "proxies[0].port");
    assert!(m.contains("out of range"), "{m}");
    let m = at(&format!("{{{base}, port: 1, udp: 'yes'}}"), 61, "proxies[0].udp");
    assert!(m.contains("true or false"), "{m}");
    let m = at(&format!("{{{base}, port: 1, tls: 1}}"), 61, "proxies[0].tls");
    assert!(m.contains("true or false"), "{m}");
    let m = at("{name: p, type: socks5, port: 1}", 5, "proxies[0]");
    assert!(m.ends_with("missing `server`"), "{m}");
    let m = at("{name: p, type: socks5, server: 'a b', port: 1}", 33, "proxies[0].server");
    assert!(m.contains("not an IP address or a host name"), "{m}");
    let m = at("{name: p, type: socks5, server: '[::1]', port: 1}", 33, "proxies[0].server");
    assert!(m.contains("without brackets"), "{m}");
    let m = at("{type: socks5, server: a, port: 1}", 5, "proxies[0]");
    assert!(m.ends_with("missing `name`"), "{m}");
    let m = at("{name: '', type: socks5, server: a, port: 1}", 12, "proxies[0].name");
    assert!(m.contains("empty"), "{m}");
    let m = at("{name: Direct, type: socks5, server: a, port: 1}", 12, "proxies[0].name");
    assert!(m.contains("built-in DIRECT"), "{m}");
    let m = at("{name: GLOBAL, type: socks5, server: a, port: 1}", 12, "proxies[0].name");
    assert!(m.contains("reserved"), "{m}");
    let m = at("{name: p, server: a, port: 1}", 5, "proxies[0]");
    assert!(m.ends_with("missing `type`"), "{m}");
    let m = at("{name: p, type: [ss], server: a, port: 1}", 17, "proxies[0].type");
    assert!(m.contains("expected a string"), "{m}");
    let m = at("[p, ss]", 5, "proxies[0]");
    assert!(m.contains("a proxy is a mapping"), "{m}");
    let m = at("{name: p, name: q, type: socks5, server: a, port: 1}", 11, "proxies[0].name");
    assert!(m.contains("duplicate key"), "{m}");
}

#[test]
fn type_specific_errors() {
    let at = |item: &str, col: usize, path: &str| error_at(&with_proxies(&[item]), 2, col, path);
    let base = "name: p, server: a, port: 1";
    let m = at(&format!("{{{base}, type: socks5, password: x}}"), 53, "proxies[0].password");
    assert!(m.contains("needs a `username`"), "{m}");
    let long = "u".repeat(256);
    let m = at(&format!("{{{base}, type: socks5, username: {long}}}"), 53, "proxies[0].username");
    assert!(m.contains("at most 255 bytes"), "{m}");
    let m = at(&format!("{{{base}, type: ss, password: x}}"), 5, "proxies[0]");
    assert!(m.ends_with("missing `cipher`"), "{m}");
    let m = at(&format!("{{{base}, type: ss, cipher: aes-128-gcm}}"), 5, "proxies[0]");
    assert!(m.ends_with("missing `password`"), "{m}");
    let m = at(&format!("{{{base}, type: ss, cipher: aes-128-gcm, password: ''}}"), 70, "proxies[0].password");
    assert!(m.contains("empty"), "{m}");
    let m = at(
        &format!("{{{base}, type: ss, cipher: 2022-blake3-aes-256-gcm, password: '{K16}'}}"),
        82,
        "proxies[0].password",
    );
    assert!(m.contains("32 bytes, this one has 16"), "{m}");
    let m = at(
        &format!("{{{base}, type: ss, cipher: 2022-blake3-aes-128-gcm, password: 'hunter2'}}"),
        82,
        "proxies[0].password",
    );
    assert!(m.contains("not base64"), "{m}");
    let m = at(&format!("{{{base}, type: trojan}}"), 5, "proxies[0]");
    assert!(m.ends_with("missing `password`"), "{m}");
    let m = at(
        &format!("{{{base}, type: trojan, password: x, sni: a, servername: b}}"),
        77,
        "proxies[0].servername",
    );
    assert!(m.contains("not both"), "{m}");
}

#[test]
fn names_are_unique_across_proxies_and_groups() {
    let text = "proxies:
  - {name: a, type: socks5, server: a, port: 1}
  - {name: a, type: vmess}
proxy-groups:
  - {name: b, type: select, proxies: [a]}
  - {name: a, type: select, proxies: [b]}
";
    assert_eq!(
        error_lines(text),
        [
            "3:12: proxies[1].name: the name `a` is already taken (first at 2:12)",
            "6:12: proxy-groups[1].name: the name `a` is already taken (first at 2:12)",
        ]
    );
}

#[test]
fn unsupported_types_and_ciphers_are_skipped_with_one_warning() {
    let text = with_proxies(&[
        "{name: v, type: vmess, server: a, port: 1, uuid: x, alterId: 0, cipher: auto}",
        "{name: h2, type: Hysteria2, server: a, port: 1}",
        "{name: w, type: sock5, server: a, port: 1}",
        "{name: c, type: ss, server: a, port: 1, cipher: aes-256-cfb, password: x}",
        "{name: n, type: ss, server: a, port: 1, cipher: none, password: x}",
        "{name: ok, type: ss, server: a, port: 1, cipher: aes-128-gcm, password: x}",
    ]);
    let l = ok(&text);
    assert_eq!(
        warnings(&l),
        [
            "2:17: proxies[0].type: type vmess is not supported by tpgate; proxy `v` skipped",
            "3:18: proxies[1].type: type hysteria2 is not supported by tpgate; proxy `h2` skipped",
            "4:17: proxies[2].type: unknown type `sock5` (did you mean `socks5`?); proxy `w` skipped",
            "5:50: proxies[3].cipher: cipher aes-256-cfb is not supported by tpgate (supported: \
             aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305, 2022-blake3-aes-128-gcm, \
             2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305); proxy `c` skipped",
            "6:50: proxies[4].cipher: cipher none is not supported by tpgate (supported: \
             aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305, 2022-blake3-aes-128-gcm, \
             2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305); proxy `n` skipped",
        ]
    );
    let names: Vec<_> = l.config.proxies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["ok"]);
    // A skipped proxy still needs a name, and its name is taken.
    let m = error_at(&with_proxies(&["{type: vmess}"]), 2, 5, "proxies[0]");
    assert!(m.ends_with("missing `name`"), "{m}");
}

#[test]
fn wire_changing_fields_skip_the_proxy() {
    let ss = "name: p, type: ss, server: a, port: 1, cipher: aes-128-gcm, password: x";
    let trojan = "name: p, type: trojan, server: a, port: 1, password: x";
    for (item, col, what) in [
        (format!("{{{ss}, plugin: obfs, plugin-opts: {{mode: tls}}}}"), 75, "plugin obfs"),
        (format!("{{{ss}, smux: {{enabled: true}}}}"), 75, "`smux`"),
        (format!("{{{ss}, udp-over-tcp: true}}"), 75, "`udp-over-tcp`"),
        (format!("{{{trojan}, network: ws, ws-opts: {{path: /}}}}"), 57, "network ws"),
        (format!("{{{trojan}, grpc-opts: {{}}}}"), 57, "`grpc-opts`"),
        (format!("{{{trojan}, reality-opts: {{public-key: k}}}}"), 57, "`reality-opts`"),
        (format!("{{{trojan}, flow: xtls-rprx-vision}}"), 57, "flow xtls-rprx-vision"),
        (format!("{{{trojan}, ss-opts: {{enabled: true}}}}"), 57, "`ss-opts`"),
        (format!("{{{trojan}, shadow-tls: {{}}}}"), 57, "`shadow-tls`"),
        (format!("{{{trojan}, obfs: salamander}}"), 57, "obfs salamander"),
    ] {
        let l = ok(&with_proxies(&[&item]));
        let key = what.trim_matches('`').split(' ').next().unwrap_or_default();
        assert_eq!(
            warnings(&l),
            [format!(
                "2:{col}: proxies[0].{key}: {what} is not supported by tpgate; proxy `p` skipped"
            )],
            "{item}"
        );
        assert!(l.config.proxies.is_empty(), "{item}");
    }
    // Written but off: the proxy is kept, silently.
    for item in [
        format!("{{{ss}, plugin: '', smux: {{enabled: false}}, udp-over-tcp: false}}"),
        format!("{{{trojan}, network: tcp, flow: ''}}"),
    ] {
        let l = ok(&with_proxies(&[&item]));
        assert_eq!(warnings(&l), Vec::<String>::new(), "{item}");
        assert_eq!(l.config.proxies.len(), 1, "{item}");
    }
}

#[test]
fn other_fields_warn_and_are_ignored() {
    let text = "proxies:
  - name: t
    type: trojan
    server: a
    port: 443
    password: x
    tfo: true
    client-fingerprint: chrome
    alpn: [h2]
    cipher: aes-128-gcm
    skip-cert-verfy: true
    colour: blue
  - {name: h, type: http, server: a, port: 1, udp: true, sni: x, headers: {A: b}}
  - {name: s, type: ss, server: a, port: 1, cipher: aes-128-gcm, password: x, plugin-opts: {}}
";
    let l = ok(text);
    assert_eq!(
        warnings(&l),
        [
            "7:5: proxies[0].tfo: not used by tpgate; ignored",
            "8:5: proxies[0].client-fingerprint: not used by tpgate; ignored",
            "9:5: proxies[0].alpn: not used by tpgate; ignored",
            "10:5: proxies[0].cipher: not a field of trojan proxies; ignored",
            "11:5: proxies[0].skip-cert-verfy: unknown field (did you mean `skip-cert-verify`?); \
             ignored",
            "12:5: proxies[0].colour: unknown field; ignored",
            "13:59: proxies[1].sni: only used with `tls: true`; ignored",
            "13:67: proxies[1].headers: not used by tpgate; ignored",
            "14:78: proxies[2].plugin-opts: not used by tpgate; ignored",
        ]
    );
    assert_eq!(l.config.proxies.len(), 3);
    assert!(!l.config.proxies[0].udp);
    assert_eq!(
        l.config.proxies[1].kind,
        ProxyKind::Http {
            auth: None,
            tls: None
        }
    );
}

#[test]
fn merge_keys_share_fields() {
    let text = "proxies:
  - &base {name: a, type: ss, server: 192.0.2.1, port: 8388, cipher: aes-128-gcm, password: x}
  - <<: *base
    name: b
    port: 8389
";
    let c = ok(text).config;
    assert_eq!(c.proxies.len(), 2);
    assert_eq!((c.proxies[1].name.as_str(), c.proxies[1].port), ("b", 8389));
    assert_eq!(c.proxies[1].server, "192.0.2.1");
}
