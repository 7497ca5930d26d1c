//! `plugin` and `plugin-opts` of Shadowsocks proxies: mihomo's defaults, the plugins tpgate
//! carries, the ones it skips with one warning, and invalid options as errors.

use super::proxies::with_proxies;
use super::*;

const SS: &str = "name: p, type: ss, server: a, port: 1, cipher: aes-128-gcm, password: x";

fn plugin_of(extra: &str) -> (Option<SsPlugin>, Vec<String>) {
    let l = ok(&with_proxies(&[&format!("{{{SS}, {extra}}}")]));
    let w = warnings(&l);
    match &l.config.proxies[..] {
        [p] => match &p.kind {
            ProxyKind::Shadowsocks { plugin, .. } => (plugin.clone(), w),
            other => panic!("{other:?}"),
        },
        other => panic!("{extra}: {other:?} {w:?}"),
    }
}

#[test]
fn obfs_modes_and_default_host() {
    let (p, w) = plugin_of("plugin: obfs, plugin-opts: {mode: tls}");
    assert_eq!(
        p,
        Some(SsPlugin::Obfs {
            mode: ObfsMode::Tls,
            host: "bing.com".into()
        })
    );
    assert!(w.is_empty(), "{w:?}");
    let (p, _) = plugin_of("plugin: obfs, plugin-opts: {mode: http, host: cdn.example}");
    assert_eq!(
        p,
        Some(SsPlugin::Obfs {
            mode: ObfsMode::Http,
            host: "cdn.example".into()
        })
    );
    let m = error_at(
        &with_proxies(&[&format!(
            "{{{SS}, plugin: obfs, plugin-opts: {{mode: ws}}}}"
        )]),
        2,
        113,
        "proxies[0].plugin-opts.mode",
    );
    assert!(m.contains("http"), "{m}");
    let m = error_at(
        &with_proxies(&[&format!("{{{SS}, plugin: obfs}}")]),
        2,
        87,
        "proxies[0].plugin-opts.mode",
    );
    assert!(m.contains("needs `mode"), "{m}");
}

#[test]
fn v2ray_plugin_websocket() {
    let (p, w) = plugin_of(
        "plugin: v2ray-plugin, plugin-opts: {mode: websocket, tls: true, host: h.example, \
         path: ray, skip-cert-verify: true, headers: {X-A: b}}",
    );
    let Some(SsPlugin::V2ray { ws, tls, mux }) = p else {
        panic!("{p:?}")
    };
    assert!(mux);
    assert_eq!(ws.path, "/ray");
    assert_eq!(
        ws.headers,
        [
            ("Host".to_owned(), "h.example".to_owned()),
            ("X-A".to_owned(), "b".to_owned())
        ]
    );
    let tls = tls.unwrap();
    assert_eq!(tls.sni.as_deref(), Some("h.example"));
    assert!(tls.skip_cert_verify);
    assert!(w.is_empty(), "{w:?}");
    // A Host header wins over `host`, for the request and the TLS name; no TLS by default.
    let (p, w) = plugin_of(
        "plugin: v2ray-plugin, plugin-opts: {mode: websocket, mux: false, headers: {Host: x.example}}",
    );
    let Some(SsPlugin::V2ray { ws, tls, mux }) = p else {
        panic!("{p:?}")
    };
    assert!(!mux);
    assert_eq!(ws.host_header(), Some("x.example"));
    assert_eq!(ws.path, "/");
    assert!(tls.is_none());
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn shadow_tls_versions_2_and_3() {
    for (version, want) in [
        ("", ShadowTlsVersion::V2),
        (", version: 2", ShadowTlsVersion::V2),
        (", version: 3", ShadowTlsVersion::V3),
    ] {
        let (p, w) = plugin_of(&format!(
            "plugin: shadow-tls, plugin-opts: {{host: www.example.com, password: pw{version}}}"
        ));
        assert_eq!(
            p,
            Some(SsPlugin::ShadowTls {
                host: "www.example.com".into(),
                password: "pw".into(),
                skip_cert_verify: false,
                version: want,
            })
        );
        assert!(w.is_empty(), "{w:?}");
    }
    let m = error_at(
        &with_proxies(&[&format!(
            "{{{SS}, plugin: shadow-tls, plugin-opts: {{host: h, version: 2}}}}"
        )]),
        2,
        112,
        "proxies[0].plugin-opts",
    );
    assert!(m.contains("needs `password`"), "{m}");
}

#[test]
fn unsupported_plugins_skip_the_proxy() {
    for (extra, what) in [
        (
            "plugin: shadow-tls, plugin-opts: {host: h, password: p, version: 1}",
            "shadow-tls version 1",
        ),
        (
            "plugin: v2ray-plugin, plugin-opts: {mode: quic}",
            "v2ray-plugin mode quic",
        ),
        ("plugin: kcptun", "plugin kcptun"),
    ] {
        let l = ok(&with_proxies(&[&format!("{{{SS}, {extra}}}")]));
        assert_eq!(
            warnings(&l),
            [format!(
                "2:79: proxies[0].plugin: {what} is not supported by tpgate; proxy `p` skipped"
            )],
            "{extra}"
        );
        assert!(l.config.proxies.is_empty(), "{extra}");
    }
}
