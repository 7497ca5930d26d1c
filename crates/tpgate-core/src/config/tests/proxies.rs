//! `proxies:`: every supported type into the model and every error at its node. What is
//! skipped or ignored with a warning is in `unsupported`.

use super::*;

const K16: &str = "AAAAAAAAAAAAAAAAAAAAAA==";
const K32: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// A config whose `proxies` are the given flow mappings, one per line from line 2.
pub(super) fn with_proxies(items: &[&str]) -> String {
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
        dialer: None,
        dialer_name: None,
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
        alpn: Vec::new(),
        fingerprint: None,
        reality: None,
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
                plugin: None,
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
                plugin: None,
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
                plugin: None,
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
                network: ProxyNetwork::Tcp,
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
                network: ProxyNetwork::Tcp,
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
                plugin: None,
            },
        ),
    ];
    assert_eq!(c.proxies, expected);
    assert!(c.groups.is_empty());
    assert_eq!(c.target_name(TargetId(1)), Some("s2"));
    assert_eq!(c.target(TargetId(10)), None);
    assert_eq!(c.global_action(), Verdict::Proxy(TargetId(0)));
}

#[test]
fn field_errors_point_at_the_node() {
    let at = |item: &str, col: usize, path: &str| error_at(&with_proxies(&[item]), 2, col, path);
    let base = "name: p, type: socks5, server: 192.0.2.1";
    let m = at(&format!("{{{base}, port: abc}}"), 54, "proxies[0].port");
    assert!(m.contains("found `abc`"), "{m}");
    let m = at(&format!("{{{base}, port: 0}}"), 54, "proxies[0].port");
    assert!(m.contains("1-65535"), "{m}");
    let m = at(&format!("{{{base}, port: 70000}}"), 54, "proxies[0].port");
    assert!(m.contains("out of range"), "{m}");
    let m = at(
        &format!("{{{base}, port: 1, udp: 'yes'}}"),
        62,
        "proxies[0].udp",
    );
    assert!(m.contains("true or false"), "{m}");
    let m = at(
        &format!("{{{base}, port: 1, tls: 1}}"),
        62,
        "proxies[0].tls",
    );
    assert!(m.contains("true or false"), "{m}");
    let m = at("{name: p, type: socks5, port: 1}", 5, "proxies[0]");
    assert!(m.ends_with("missing `server`"), "{m}");
    let m = at(
        "{name: p, type: socks5, server: 'a b', port: 1}",
        37,
        "proxies[0].server",
    );
    assert!(m.contains("not an IP address or a host name"), "{m}");
    let m = at(
        "{name: p, type: socks5, server: '[::1]', port: 1}",
        37,
        "proxies[0].server",
    );
    assert!(m.contains("without brackets"), "{m}");
    let m = at("{type: socks5, server: a, port: 1}", 5, "proxies[0]");
    assert!(m.ends_with("missing `name`"), "{m}");
    let m = at(
        "{name: '', type: socks5, server: a, port: 1}",
        12,
        "proxies[0].name",
    );
    assert!(m.contains("empty"), "{m}");
    let m = at(
        "{name: DIRECT, type: socks5, server: a, port: 1}",
        12,
        "proxies[0].name",
    );
    assert!(m.contains("built-in DIRECT"), "{m}");
    // Names are case-sensitive (mihomo's): `Direct` is a name of its own, and a `type:
    // direct` proxy is a real way out that rules and groups may name.
    let l = ok(&with_proxies(&[
        "{name: Direct, type: socks5, server: a, port: 1}",
        "{name: 直连, type: direct, udp: true}",
    ]));
    assert_eq!(l.config.proxies[1].kind, ProxyKind::Direct);
    let l = ok("proxies:\n  - {name: 直连, type: direct}\nproxy-groups:\n  - {name: G, type: select, proxies: [直连, DIRECT]}\nrules:\n  - MATCH,直连\n");
    assert_eq!(l.config.rules[0].verdict, Verdict::Proxy(TargetId(0)));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let m = at(
        "{name: GLOBAL, type: socks5, server: a, port: 1}",
        12,
        "proxies[0].name",
    );
    assert!(m.contains("reserved"), "{m}");
    let m = at("{name: p, server: a, port: 1}", 5, "proxies[0]");
    assert!(m.ends_with("missing `type`"), "{m}");
    let m = at(
        "{name: p, type: [ss], server: a, port: 1}",
        21,
        "proxies[0].type",
    );
    assert!(m.contains("expected a string"), "{m}");
    let m = at("[p, ss]", 5, "proxies[0]");
    assert!(m.contains("a proxy is a mapping"), "{m}");
    let m = at(
        "{name: p, name: q, type: socks5, server: a, port: 1}",
        15,
        "proxies[0].name",
    );
    assert!(m.contains("duplicate key"), "{m}");
}

#[test]
fn type_specific_errors() {
    let at = |item: &str, col: usize, path: &str| error_at(&with_proxies(&[item]), 2, col, path);
    let base = "name: p, server: a, port: 1";
    let m = at(
        &format!("{{{base}, type: socks5, password: x}}"),
        59,
        "proxies[0].password",
    );
    assert!(m.contains("needs a `username`"), "{m}");
    let long = "u".repeat(256);
    let m = at(
        &format!("{{{base}, type: socks5, username: {long}}}"),
        59,
        "proxies[0].username",
    );
    assert!(m.contains("at most 255 bytes"), "{m}");
    let m = at(
        &format!("{{{base}, type: ss, password: x}}"),
        5,
        "proxies[0]",
    );
    assert!(m.ends_with("missing `cipher`"), "{m}");
    let m = at(
        &format!("{{{base}, type: ss, cipher: aes-128-gcm}}"),
        5,
        "proxies[0]",
    );
    assert!(m.ends_with("missing `password`"), "{m}");
    let m = at(
        &format!("{{{base}, type: ss, cipher: aes-128-gcm, password: ''}}"),
        76,
        "proxies[0].password",
    );
    assert!(m.contains("empty"), "{m}");
    let m = at(
        &format!("{{{base}, type: ss, cipher: 2022-blake3-aes-256-gcm, password: '{K16}'}}"),
        88,
        "proxies[0].password",
    );
    assert!(m.contains("32 bytes, this one has 16"), "{m}");
    let m = at(
        &format!("{{{base}, type: ss, cipher: 2022-blake3-aes-128-gcm, password: 'hunter2'}}"),
        88,
        "proxies[0].password",
    );
    assert!(m.contains("not base64"), "{m}");
    let m = at(&format!("{{{base}, type: trojan}}"), 5, "proxies[0]");
    assert!(m.ends_with("missing `password`"), "{m}");
    let m = at(
        &format!("{{{base}, type: trojan, password: x, sni: a, servername: b}}"),
        82,
        "proxies[0].servername",
    );
    assert!(m.contains("not both"), "{m}");
}

#[test]
fn names_are_unique_across_proxies_and_groups() {
    let text = "proxies:
  - {name: a, type: socks5, server: a, port: 1}
  - {name: a, type: snell}
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

#[test]
fn vless_parses_into_the_model() {
    const ID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";
    let l = ok(&with_proxies(&[
        &format!("{{name: v1, type: vless, server: 192.0.2.7, port: 443, uuid: {ID}, network: tcp, flow: ''}}"),
        &format!("{{name: v2, type: vless, server: v.example, port: 8443, uuid: {ID}, tls: true, servername: s.example, skip-cert-verify: true, udp: true}}"),
    ]));
    assert_eq!(warnings(&l), Vec::<String>::new());
    let uuid: Uuid = ID.parse().unwrap();
    assert_eq!(
        l.config.proxies,
        [
            proxy(
                "v1",
                "192.0.2.7",
                443,
                false,
                ProxyKind::Vless {
                    uuid,
                    tls: None,
                    network: ProxyNetwork::Tcp,
                    flow: None,
                }
            ),
            proxy(
                "v2",
                "v.example",
                8443,
                true,
                ProxyKind::Vless {
                    uuid,
                    tls: Some(tls(Some("s.example"), true)),
                    network: ProxyNetwork::Tcp,
                    flow: None,
                }
            ),
        ]
    );

    let vision =
        format!("{{name: p, type: vless, server: a, port: 1, uuid: {ID}, flow: xtls-rprx-vision}}");
    let l = ok(&with_proxies(&[&vision]));
    assert_eq!(
        warnings(&l),
        ["2:92: proxies[0].flow: flow xtls-rprx-vision needs `tls: true`; proxy `p` skipped"]
    );
    assert!(l.config.proxies.is_empty());

    let plain_sni = format!("{{name: p, type: vless, server: a, port: 1, uuid: {ID}, sni: x}}");
    let l = ok(&with_proxies(&[&plain_sni]));
    assert_eq!(
        warnings(&l),
        ["2:92: proxies[0].sni: only used with `tls: true`; ignored"]
    );

    let m = error_at(
        &with_proxies(&["{name: p, type: vless, server: a, port: 1, uuid: nope}"]),
        2,
        54,
        "proxies[0].uuid",
    );
    assert!(m.contains("not a UUID"), "{m}");
    let m = error_at(
        &with_proxies(&["{name: p, type: vless, server: a, port: 1}"]),
        2,
        5,
        "proxies[0]",
    );
    assert!(m.contains("missing `uuid`"), "{m}");
}

#[test]
fn vmess_parses_into_the_model() {
    const ID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";
    let l = ok(&with_proxies(&[
        &format!("{{name: m1, type: vmess, server: 192.0.2.8, port: 443, uuid: {ID}, alterId: 0, cipher: auto}}"),
        &format!("{{name: m2, type: vmess, server: m.example, port: 8443, uuid: {ID}, cipher: none, tls: true, servername: s.example}}"),
    ]));
    assert_eq!(warnings(&l), Vec::<String>::new());
    let uuid: Uuid = ID.parse().unwrap();
    assert_eq!(
        l.config.proxies,
        [
            proxy(
                "m1",
                "192.0.2.8",
                443,
                false,
                ProxyKind::Vmess {
                    uuid,
                    cipher: VmessCipher::Aes128Gcm,
                    tls: None,
                    network: ProxyNetwork::Tcp
                }
            ),
            proxy(
                "m2",
                "m.example",
                8443,
                false,
                ProxyKind::Vmess {
                    uuid,
                    cipher: VmessCipher::None,
                    tls: Some(tls(Some("s.example"), false)),
                    network: ProxyNetwork::Tcp
                }
            ),
        ]
    );
    for (extra, key, message) in [
        ("alterId: 64", "alterId", "alterId other than 0 (the legacy header) is not supported by tpgate; proxy `p` skipped"),
        ("cipher: zero", "cipher", "cipher zero is not supported by tpgate for vmess (supported: auto, aes-128-gcm, chacha20-poly1305, none); proxy `p` skipped"),
    ] {
        let item = format!("{{name: p, type: vmess, server: a, port: 1, uuid: {ID}, {extra}}}");
        let l = ok(&with_proxies(&[&item]));
        let w = warnings(&l);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].ends_with(&format!("proxies[0].{key}: {message}")), "{w:?}");
        assert!(l.config.proxies.is_empty());
    }
    let item = format!("{{name: p, type: vmess, server: a, port: 1, uuid: {ID}, udp: true}}");
    let l = ok(&with_proxies(&[&item]));
    assert_eq!(warnings(&l), Vec::<String>::new());
    assert!(l.config.proxies[0].udp);
}

#[test]
fn transports_parse_into_the_model() {
    const ID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";
    let l = ok(&with_proxies(&[
        &format!("{{name: w, type: vless, server: a, port: 443, uuid: {ID}, tls: true, network: ws, ws-opts: {{path: 'ray?ed=2048', headers: {{Host: cdn.example}}}}}}"),
        &format!("{{name: e, type: vmess, server: a, port: 80, uuid: {ID}, network: ws, ws-opts: {{max-early-data: 100, early-data-header-name: X-Ed, v2ray-http-upgrade: true, v2ray-http-upgrade-fast-open: true}}}}"),
        "{name: t, type: trojan, server: a, port: 443, password: x, alpn: [h2, http/1.1], network: grpc, grpc-opts: {grpc-service-name: svc}}",
        "{name: g, type: trojan, server: a, port: 443, password: x, network: grpc}",
        &format!("{{name: u, type: vless, server: a, port: 80, uuid: {ID}, network: httpupgrade}}"),
    ]));
    assert_eq!(warnings(&l), Vec::<String>::new());
    let net = |i: usize| match &l.config.proxies[i].kind {
        ProxyKind::Vless { network, .. }
        | ProxyKind::Vmess { network, .. }
        | ProxyKind::Trojan { network, .. } => network.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        net(0),
        ProxyNetwork::Ws(WsOpts {
            path: "/ray".into(),
            headers: vec![("Host".into(), "cdn.example".into())],
            early_data: Some(EarlyData {
                max: 2048,
                header: Some("Sec-WebSocket-Protocol".into())
            }),
            http_upgrade: false,
            fast_open: false,
        })
    );
    assert_eq!(
        net(1),
        ProxyNetwork::Ws(WsOpts {
            path: "/".into(),
            headers: Vec::new(),
            early_data: Some(EarlyData {
                max: 100,
                header: Some("X-Ed".into())
            }),
            http_upgrade: true,
            fast_open: true,
        })
    );
    assert_eq!(
        net(2),
        ProxyNetwork::Grpc(GrpcOpts {
            service_name: "svc".into()
        })
    );
    let ProxyKind::Trojan { tls, .. } = &l.config.proxies[2].kind else {
        panic!("trojan")
    };
    assert_eq!(tls.alpn, ["h2", "http/1.1"]);
    assert_eq!(
        net(3),
        ProxyNetwork::Grpc(GrpcOpts {
            service_name: "GunService".into()
        })
    );
    assert!(matches!(net(4), ProxyNetwork::Ws(w) if w.http_upgrade));

    let l = ok(&with_proxies(&[
        &format!("{{name: a, type: vmess, server: a, port: 443, uuid: {ID}, network: h2, h2-opts: {{host: [x.example, y.example], path: h2}}}}"),
        &format!("{{name: b, type: vless, server: a, port: 443, uuid: {ID}, tls: true, network: h2}}"),
    ]));
    assert_eq!(warnings(&l), Vec::<String>::new());
    let h2 = |i: usize| match &l.config.proxies[i].kind {
        ProxyKind::Vless { network, .. } | ProxyKind::Vmess { network, .. } => network.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h2(0),
        ProxyNetwork::H2(H2Opts {
            hosts: vec!["x.example".into(), "y.example".into()],
            path: "/h2".into()
        })
    );
    assert_eq!(
        h2(1),
        ProxyNetwork::H2(H2Opts {
            hosts: vec!["www.example.com".into()],
            path: "/".into()
        })
    );

    // Early data is not sent for trojan (as mihomo); a bad header is an error.
    let l = ok(&with_proxies(&[
        "{name: t, type: trojan, server: a, port: 1, password: x, network: ws, ws-opts: {max-early-data: 9, colour: 1}}",
    ]));
    assert_eq!(
        warnings(&l),
        [
            "2:85: proxies[0].ws-opts.max-early-data: mihomo does not send early data for trojan; ignored",
            "2:104: proxies[0].ws-opts.colour: unknown key `colour`; ignored",
        ]
    );
    let m = error_at(
        &with_proxies(&[&format!(
            "{{name: p, type: vless, server: a, port: 1, uuid: {ID}, network: ws, ws-opts: {{headers: {{X: \"a\\nb\"}}}}}}"
        )]),
        2,
        128,
        "proxies[0].ws-opts.headers.X",
    );
    assert!(m.contains("CR, LF"), "{m}");
}

#[test]
fn vless_vision_needs_tls_over_tcp() {
    const ID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";
    let base = format!("name: p, type: vless, server: a, port: 1, uuid: {ID}");
    for (extra, flow) in [
        ("flow: xtls-rprx-vision", VlessFlow::Vision),
        (
            "network: tcp, flow: xtls-rprx-vision-udp443",
            VlessFlow::VisionUdp443,
        ),
    ] {
        let l = ok(&with_proxies(&[&format!("{{{base}, tls: true, {extra}}}")]));
        assert_eq!(warnings(&l), Vec::<String>::new());
        match &l.config.proxies[0].kind {
            ProxyKind::Vless { flow: got, tls, .. } => {
                assert_eq!((*got, tls.is_some()), (Some(flow), true));
            }
            other => panic!("{other:?}"),
        }
    }
    for (extra, why) in [
        (
            "tls: true, network: ws, flow: xtls-rprx-vision",
            "flow xtls-rprx-vision runs over `network: tcp` only; proxy `p` skipped",
        ),
        (
            "tls: true, flow: xtls-rprx-direct",
            "flow xtls-rprx-direct is not supported by tpgate (supported: xtls-rprx-vision); proxy `p` skipped",
        ),
    ] {
        let l = ok(&with_proxies(&[&format!("{{{base}, {extra}}}")]));
        let w = warnings(&l);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].ends_with(why), "{w:?}");
        assert!(l.config.proxies.is_empty());
    }
}

#[test]
fn network_http_reads_method_paths_and_header_lists() {
    const ID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";
    let base = format!(
        "name: p, type: vmess, server: a, port: 80, uuid: {ID}, alterId: 0, cipher: auto, network: http"
    );
    let l = ok(&with_proxies(&[&format!(
        "{{{base}, http-opts: {{method: post, path: [/a, b], headers: {{Host: [x.example, y.example], Connection: keep-alive}}}}}}"
    )]));
    assert_eq!(warnings(&l), Vec::<String>::new());
    let ProxyKind::Vmess { network, .. } = &l.config.proxies[0].kind else {
        panic!("{:?}", l.config.proxies[0].kind)
    };
    assert_eq!(
        network,
        &ProxyNetwork::Http(HttpOpts {
            method: "POST".into(),
            paths: vec!["/a".into(), "/b".into()],
            headers: vec![
                ("Host".into(), vec!["x.example".into(), "y.example".into()]),
                ("Connection".into(), vec!["keep-alive".into()]),
            ],
        })
    );
    // Without http-opts: GET /.
    let l = ok(&with_proxies(&[&format!("{{{base}}}")]));
    let ProxyKind::Vmess { network, .. } = &l.config.proxies[0].kind else {
        panic!()
    };
    assert_eq!(
        network,
        &ProxyNetwork::Http(HttpOpts {
            method: "GET".into(),
            paths: vec!["/".into()],
            headers: Vec::new(),
        })
    );
    // Bad values are errors at their place; trojan has no `network: http`.
    for (opts, why) in [
        ("{method: 'GE T'}", "is not an HTTP method"),
        ("{path: ['/a b']}", "cannot hold spaces"),
        ("{headers: {'X:Y': [v]}}", "not a valid HTTP header name"),
    ] {
        let e = errors(&with_proxies(&[&format!("{{{base}, http-opts: {opts}}}")]));
        assert!(e.iter().any(|e| e.message.contains(why)), "{opts}: {e:#?}");
    }
    let l = ok(&with_proxies(&[
        "{name: t, type: trojan, server: a, port: 443, password: x, network: http}",
    ]));
    assert!(l.config.proxies.is_empty());
}
