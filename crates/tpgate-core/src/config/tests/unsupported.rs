//! `proxies:` that tpgate cannot honour: unsupported types, ciphers and transports skip the
//! proxy with one warning; fields it does not use are ignored with a warning.

use super::proxies::with_proxies;
use super::*;

#[test]
fn unsupported_types_and_ciphers_are_skipped_with_one_warning() {
    let text = with_proxies(&[
        "{name: v, type: snell, server: a, port: 1, uuid: x, alterId: 0, cipher: auto}",
        "{name: h2, type: Snell, server: a, port: 1}",
        "{name: w, type: sock5, server: a, port: 1}",
        "{name: c, type: ss, server: a, port: 1, cipher: aes-256-cfb, password: x}",
        "{name: n, type: ss, server: a, port: 1, cipher: none, password: x}",
        "{name: ok, type: ss, server: a, port: 1, cipher: aes-128-gcm, password: x}",
    ]);
    let l = ok(&text);
    assert_eq!(
        warnings(&l),
        [
            "2:21: proxies[0].type: type snell is not supported by tpgate; proxy `v` skipped",
            "3:22: proxies[1].type: type snell is not supported by tpgate; proxy `h2` skipped",
            "4:21: proxies[2].type: unknown type `sock5` (did you mean `socks5`?); proxy `w` skipped",
            "5:53: proxies[3].cipher: cipher aes-256-cfb is not supported by tpgate (supported: \
             aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305, 2022-blake3-aes-128-gcm, \
             2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305); proxy `c` skipped",
            "6:53: proxies[4].cipher: cipher none is not supported by tpgate (supported: \
             aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305, 2022-blake3-aes-128-gcm, \
             2022-blake3-aes-256-gcm, 2022-blake3-chacha20-poly1305); proxy `n` skipped",
        ]
    );
    let names: Vec<_> = l.config.proxies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["ok"]);
    // A skipped proxy still needs a name, and its name is taken.
    let m = error_at(&with_proxies(&["{type: snell}"]), 2, 5, "proxies[0]");
    assert!(m.ends_with("missing `name`"), "{m}");
}

#[test]
fn wire_changing_fields_skip_the_proxy() {
    let ss = "name: p, type: ss, server: a, port: 1, cipher: aes-128-gcm, password: x";
    let trojan = "name: p, type: trojan, server: a, port: 1, password: x";
    for (item, col, what) in [
        (
            format!("{{{ss}, plugin: restls, plugin-opts: {{host: a}}}}"),
            79,
            "plugin restls",
        ),
        (format!("{{{ss}, smux: {{enabled: true}}}}"), 79, "`smux`"),
        (
            format!("{{{ss}, udp-over-tcp: true}}"),
            79,
            "`udp-over-tcp`",
        ),
        (
            format!("{{{trojan}, flow: xtls-rprx-vision}}"),
            62,
            "flow xtls-rprx-vision",
        ),
        (
            format!("{{{trojan}, ss-opts: {{enabled: true}}}}"),
            62,
            "`ss-opts`",
        ),
        (
            format!("{{{trojan}, shadow-tls: {{}}}}"),
            62,
            "`shadow-tls`",
        ),
        (
            format!("{{{trojan}, obfs: salamander}}"),
            62,
            "obfs salamander",
        ),
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
    // A network tpgate does not carry skips the proxy; options of another network than
    // the chosen one are only warned about.
    let l = ok(&with_proxies(&[&format!(
        "{{{trojan}, network: h2, h2-opts: {{path: /}}}}"
    )]));
    assert_eq!(
        warnings(&l),
        [
            "2:62: proxies[0].network: network h2 is not supported by tpgate for trojan \
             (supported: tcp, ws, grpc); proxy `p` skipped"
        ]
    );
    assert!(l.config.proxies.is_empty());
    let l = ok(&with_proxies(&[&format!("{{{trojan}, grpc-opts: {{}}}}")]));
    assert_eq!(
        warnings(&l),
        ["2:62: proxies[0].grpc-opts: only used with `network: grpc`; ignored"]
    );
    assert_eq!(l.config.proxies.len(), 1);
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
            "10:5: proxies[0].cipher: not a field of trojan proxies; ignored",
            "11:5: proxies[0].skip-cert-verfy: unknown field (did you mean `skip-cert-verify`?); \
             ignored",
            "12:5: proxies[0].colour: unknown field; ignored",
            "13:58: proxies[1].sni: only used with `tls: true`; ignored",
            "13:66: proxies[1].headers: not used by tpgate; ignored",
            "14:79: proxies[2].plugin-opts: no `plugin`; ignored",
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
