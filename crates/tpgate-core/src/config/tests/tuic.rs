//! `type: tuic`: mihomo's keys into [`TuicOpts`], its defaults, v4 skipped, errors at their
//! node.

use std::time::Duration;

use super::*;

#[test]
fn tuic_proxies_read_mihomo_keys() {
    let l = ok("proxies:
  - {name: a, type: tuic, server: t.example, port: 443, uuid: 6f1c2a55-8d3e-4b7a-9c10-2e4f6a8b0c1d, password: pw}
  - name: b
    type: tuic
    server: 192.0.2.9
    port: 8443
    uuid: 6f1c2a55-8d3e-4b7a-9c10-2e4f6a8b0c1d
    password: 123
    congestion-controller: bbr
    udp-relay-mode: quic
    reduce-rtt: true
    disable-sni: true
    heartbeat-interval: 5000
    sni: front.example
    skip-cert-verify: true
    alpn: [h3]
");
    assert_eq!(warnings(&l), Vec::<String>::new());
    let opts = |i: usize| match &l.config.proxies[i].kind {
        ProxyKind::Tuic(o) => o.clone(),
        other => panic!("{other:?}"),
    };
    let a = opts(0);
    assert!(l.config.proxies[0].udp, "UDP always, as mihomo");
    assert_eq!(l.config.proxies[0].kind.adapter_type(), "Tuic");
    assert_eq!(a.congestion, CongestionControl::Cubic);
    assert_eq!(a.udp_relay_mode, UdpRelayMode::Native);
    assert_eq!(a.heartbeat, Duration::from_secs(10));
    assert_eq!(a.tls.alpn, vec!["h3".to_owned()]);
    assert!(!a.reduce_rtt && !a.disable_sni);
    let b = opts(1);
    assert_eq!(b.password, "123");
    assert_eq!(b.congestion, CongestionControl::Bbr);
    assert_eq!(b.udp_relay_mode, UdpRelayMode::Quic);
    assert!(b.reduce_rtt && b.disable_sni);
    assert_eq!(b.heartbeat, Duration::from_secs(5));
    assert_eq!(b.tls.sni.as_deref(), Some("front.example"));
}

#[test]
fn tuic_v4_is_skipped_and_mistakes_are_errors() {
    let l = ok("proxies:\n  - {name: v4, type: tuic, server: t, port: 1, token: secret}\n");
    assert!(l.config.proxies.is_empty());
    let w = warnings(&l);
    assert!(w.iter().any(|w| w.contains("TUIC v4")), "{w:?}");
    let text = "proxies:\n  - {name: a, type: tuic, server: t, port: 1, uuid: 6f1c2a55-8d3e-4b7a-9c10-2e4f6a8b0c1d, password: p, udp-relay-mode: fast}\n";
    let m = error_at(
        text,
        2,
        text.lines().nth(1).unwrap().find("fast").unwrap() + 1,
        "proxies[0].udp-relay-mode",
    );
    assert!(m.contains("native, quic"), "{m}");
    let text = "proxies:\n  - {name: a, type: tuic, server: t, port: 1, uuid: x, password: p}\n";
    let m = error_at(
        text,
        2,
        text.lines().nth(1).unwrap().find(" x,").unwrap() + 2,
        "proxies[0].uuid",
    );
    assert!(m.to_lowercase().contains("uuid"), "{m}");
}
