//! `type: hysteria2`: mihomo's keys into [`Hysteria2Opts`], its defaults, and its errors at
//! their nodes.

use std::time::Duration;

use super::*;

fn opts(l: &Loaded, i: usize) -> (&ProxyDef, &Hysteria2Opts) {
    let p = &l.config.proxies[i];
    match &p.kind {
        ProxyKind::Hysteria2(o) => (p, o),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hysteria2_proxies_read_mihomo_keys() {
    let l = ok("proxies:
  - {name: a, type: hysteria2, server: hy.example, port: 8443, password: pw}
  - name: b
    type: hy2
    server: 2001:db8::7
    ports: 20000-20002,443
    hop-interval: 2
    password: 123
    up: 30 Mbps
    down: 100
    obfs: salamander
    obfs-password: salt
    sni: front.example
    skip-cert-verify: true
    alpn: [h3, h3-29]
");
    assert_eq!(warnings(&l), Vec::<String>::new());
    let (p, o) = opts(&l, 0);
    assert_eq!((p.port, p.udp), (8443, true), "UDP always, as mihomo");
    assert_eq!(p.kind.adapter_type(), "Hysteria2");
    assert_eq!(o.tls.alpn, vec!["h3".to_owned()]);
    assert_eq!((o.up, o.down, o.obfs.as_deref()), (0, 0, None));
    assert!(o.ports.is_empty());
    assert_eq!(o.hop_interval, Duration::from_secs(30));
    let (p, o) = opts(&l, 1);
    assert_eq!(p.port, 20000, "no `port`: the first of `ports`");
    assert_eq!(o.ports, vec![20000, 20001, 20002, 443]);
    assert_eq!(o.hop_interval, Duration::from_secs(5), "mihomo's floor");
    assert_eq!(o.password, "123");
    assert_eq!((o.up, o.down), (30 << 17, 100 << 17));
    assert_eq!(o.obfs.as_deref(), Some("salt"));
    assert_eq!(o.tls.sni.as_deref(), Some("front.example"));
    assert!(o.tls.skip_cert_verify);
    assert_eq!(o.tls.alpn, vec!["h3".to_owned(), "h3-29".to_owned()]);
}

/// The 1-based column of `value` on the second line of `text`.
fn col(text: &str, value: &str) -> usize {
    let line = text.lines().nth(1).unwrap_or_default();
    line.find(value).map_or(0, |i| i + 1)
}

#[test]
fn hysteria2_mistakes_are_errors_at_their_node() {
    let text = "proxies:\n  - {name: a, type: hysteria2, server: h, port: 1, password: p, obfs: salamander}\n";
    let m = error_at(text, 2, col(text, "salamander"), "proxies[0].obfs");
    assert!(m.contains("obfs-password"), "{m}");
    let text =
        "proxies:\n  - {name: a, type: hysteria2, server: h, port: 1, password: p, obfs: xor}\n";
    let m = error_at(text, 2, col(text, "xor"), "proxies[0].obfs");
    assert!(m.contains("salamander"), "{m}");
    let text =
        "proxies:\n  - {name: a, type: hysteria2, server: h, port: 1, password: p, up: fast}\n";
    let m = error_at(text, 2, col(text, "fast"), "proxies[0].up");
    assert!(m.contains("100 Mbps"), "{m}");
    let text = "proxies:\n  - {name: a, type: hysteria2, server: h, password: p, ports: 9-3}\n";
    let m = error_at(text, 2, col(text, "9-3"), "proxies[0].ports");
    assert!(m.contains("backwards"), "{m}");
}

#[test]
fn fingerprint_pins_a_certificate_by_sha256() {
    let hex = "AB:".repeat(31) + "AB";
    let l = ok(&format!(
        "proxies:\n  - {{name: a, type: hysteria2, server: h, port: 1, password: p, fingerprint: \"{hex}\"}}\n  - {{name: t, type: trojan, server: h, port: 1, password: p, fingerprint: \"{}\"}}\n",
        "cd".repeat(32)
    ));
    assert_eq!(warnings(&l), Vec::<String>::new());
    let (_, o) = opts(&l, 0);
    assert_eq!(o.tls.fingerprint, Some([0xab; 32]));
    match &l.config.proxies[1].kind {
        ProxyKind::Trojan { tls, .. } => assert_eq!(tls.fingerprint, Some([0xcd; 32])),
        other => panic!("{other:?}"),
    }
    let text = "proxies:\n  - {name: a, type: hysteria2, server: h, port: 1, password: p, fingerprint: chrome}\n";
    let m = error_at(text, 2, col(text, "chrome"), "proxies[0].fingerprint");
    assert!(m.contains("SHA-256"), "{m}");
}
