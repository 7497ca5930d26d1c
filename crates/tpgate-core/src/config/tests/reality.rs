//! `reality-opts`: the key and short id read as mihomo reads them, REALITY on every stream
//! proxy type and transport that carries it, and each bad value an error at its place.

use super::proxies::with_proxies;
use super::*;

/// bytes 0..32 as unpadded base64url.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const VLESS: &str =
    "name: p, type: vless, server: a, port: 443, uuid: 3b5e1c2a-7d4f-4e8a-9b6c-1f2e3d4c5b6a";

fn key() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

fn tls_of(kind: &ProxyKind) -> Option<&Tls> {
    match kind {
        ProxyKind::Vless { tls, .. } | ProxyKind::Vmess { tls, .. } => tls.as_ref(),
        ProxyKind::Trojan { tls, .. } => Some(tls),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reality_opts_load_on_vless_vmess_and_trojan() {
    let vmess = "name: p, type: vmess, server: a, port: 443, uuid: 3b5e1c2a-7d4f-4e8a-9b6c-1f2e3d4c5b6a, alterId: 0, cipher: auto, tls: true";
    let trojan = "name: p, type: trojan, server: a, port: 443, password: x";
    for (item, short_id) in [
        (
            format!("{{{VLESS}, tls: true, flow: xtls-rprx-vision, servername: www.example.com, reality-opts: {{public-key: {KEY}, short-id: 0123456789abcdef}}}}"),
            [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
        ),
        // A short id shorter than 8 bytes is padded with zeros, as the server pads its list.
        (
            format!("{{{VLESS}, tls: true, network: grpc, grpc-opts: {{grpc-service-name: g}}, reality-opts: {{public-key: {KEY}, short-id: 'a1b2'}}}}"),
            [0xa1, 0xb2, 0, 0, 0, 0, 0, 0],
        ),
        (
            format!("{{{vmess}, reality-opts: {{public-key: {KEY}}}}}"),
            [0; 8],
        ),
        (
            format!("{{{trojan}, reality-opts: {{public-key: '{KEY}', short-id: ''}}}}"),
            [0; 8],
        ),
    ] {
        let l = ok(&with_proxies(&[&item]));
        assert_eq!(warnings(&l), Vec::<String>::new(), "{item}");
        let tls = tls_of(&l.config.proxies[0].kind).expect("tls");
        assert_eq!(
            tls.reality,
            Some(Reality {
                public_key: key(),
                short_id
            }),
            "{item}"
        );
    }
}

#[test]
fn an_empty_public_key_leaves_reality_off() {
    let l = ok(&with_proxies(&[&format!(
        "{{{VLESS}, tls: true, reality-opts: {{public-key: '', short-id: ab}}}}"
    )]));
    assert_eq!(warnings(&l), Vec::<String>::new());
    assert_eq!(
        tls_of(&l.config.proxies[0].kind).expect("tls").reality,
        None
    );
}

#[test]
fn bad_reality_values_are_errors_at_their_place() {
    let prefix = format!("{{{VLESS}, tls: true, reality-opts: {{");
    let col = |key: &str, item: &str| item.rfind(key).expect("key") + 5;
    for (opts, key, why) in [
        ("public-key: k".to_owned(), "k", "found `k`"),
        (
            format!("public-key: {}", &KEY[..40]),
            &KEY[..40],
            "30 bytes, not 32",
        ),
        (
            format!("public-key: {KEY}, short-id: 0123456789abcdef01"),
            "0123456789abcdef01",
            "longer than 8 bytes",
        ),
        (
            format!("public-key: {KEY}, short-id: abc"),
            "abc",
            "an odd number of digits",
        ),
        (format!("public-key: {KEY}, short-id: zz"), "zz", "not hex"),
    ] {
        let item = format!("{prefix}{opts}}}}}");
        let path = if key.len() < 30 && opts.contains("short-id") {
            "proxies[0].reality-opts.short-id"
        } else {
            "proxies[0].reality-opts.public-key"
        };
        // Columns are 1-based; the item starts after "  - " on line 2.
        let at = col(key, &item);
        let message = error_at(&with_proxies(&[&item]), 2, at, path);
        assert!(message.contains(why), "{message}");
    }
}

#[test]
fn reality_without_tls_skips_the_proxy_and_other_keys_warn() {
    let l = ok(&with_proxies(&[&format!(
        "{{{VLESS}, reality-opts: {{public-key: {KEY}}}}}"
    )]));
    let w = warnings(&l);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].ends_with("proxies[0].reality-opts: REALITY needs `tls: true`; proxy `p` skipped"),
        "{w:?}"
    );
    assert!(l.config.proxies.is_empty());

    let l = ok(&with_proxies(&[&format!(
        "{{{VLESS}, tls: true, reality-opts: {{public-key: {KEY}, support-x25519mlkem768: true, spider-x: /}}}}"
    )]));
    let w = warnings(&l);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("support-x25519mlkem768: not used by tpgate"),
        "{w:?}"
    );
    assert!(w[1].contains("reality-opts.spider-x: unknown"), "{w:?}");
    assert!(tls_of(&l.config.proxies[0].kind)
        .expect("tls")
        .reality
        .is_some());
}
