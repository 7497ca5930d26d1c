//! `dialer-proxy`: resolved to the proxy or group named, `DIRECT` as none, a skipped one
//! making the proxy reject, an unknown one and a loop errors at the field.

use super::proxies::with_proxies;
use super::*;

const A: &str = "name: a, type: socks5, server: 192.0.2.1, port: 1080";
const B: &str =
    "name: b, type: ss, server: 192.0.2.2, port: 8388, cipher: aes-128-gcm, password: x";

fn dialer_of(l: &Loaded, name: &str) -> Option<Member> {
    l.config
        .proxies
        .iter()
        .find(|p| p.name == name)
        .expect("proxy")
        .dialer
}

#[test]
fn dialer_proxy_names_a_proxy_a_group_or_direct() {
    let text = format!(
        "{}proxy-groups:\n  - {{name: G, type: select, proxies: [a]}}\n",
        with_proxies(&[
            &format!("{{{A}}}"),
            &format!("{{{B}, dialer-proxy: a}}"),
            "{name: c, type: trojan, server: 192.0.2.3, port: 443, password: p, dialer-proxy: G}",
            "{name: d, type: trojan, server: 192.0.2.4, port: 443, password: p, dialer-proxy: DIRECT}",
            "{name: e, type: trojan, server: 192.0.2.5, port: 443, password: p}",
        ])
    );
    let l = ok(&text);
    assert_eq!(warnings(&l), Vec::<String>::new());
    assert_eq!(dialer_of(&l, "a"), None);
    assert_eq!(dialer_of(&l, "b"), Some(Member::Target(TargetId(0))));
    // Group G comes after the five proxies.
    assert_eq!(dialer_of(&l, "c"), Some(Member::Target(TargetId(5))));
    assert_eq!(dialer_of(&l, "d"), None);
    assert_eq!(dialer_of(&l, "e"), None);
}

#[test]
fn a_skipped_dialer_makes_the_proxy_reject() {
    let l = ok(&with_proxies(&[
        "{name: w, type: wireguard, server: 192.0.2.9, port: 51820}",
        &format!("{{{B}, dialer-proxy: w}}"),
    ]));
    assert_eq!(dialer_of(&l, "b"), Some(Member::Reject));
    let w = warnings(&l);
    assert!(
        w.iter().any(|w| w.starts_with("3:")
            && w.contains("proxies[1].dialer-proxy: `w` was skipped, so proxy `b` cannot be reached through it: it rejects its traffic")),
        "{w:?}"
    );
}

#[test]
fn an_unknown_dialer_and_a_loop_are_errors_at_the_field() {
    let item = format!("{{{B}, dialer-proxy: aa}}");
    let col = item.find("aa}").expect("at") + 5;
    let m = error_at(
        &with_proxies(&[&format!("{{{A}}}"), &item]),
        3,
        col,
        "proxies[1].dialer-proxy",
    );
    assert!(
        m.contains("unknown proxy or group `aa`; did you mean `a`?"),
        "{m}"
    );

    // b is dialed through G, which contains b.
    let item = format!("{{{B}, dialer-proxy: G}}");
    let col = item.find("G}").expect("at") + 5;
    let text = format!(
        "{}proxy-groups:\n  - {{name: G, type: select, proxies: [a, b]}}\n",
        with_proxies(&[&format!("{{{A}}}"), &item])
    );
    let m = error_at(&text, 3, col, "proxies[1].dialer-proxy");
    assert!(
        m.contains("proxy `b` would be dialed through itself: `G` leads back to it"),
        "{m}"
    );
    // Two proxies dialing each other.
    let text = with_proxies(&[
        &format!("{{{A}, dialer-proxy: b}}"),
        &format!("{{{B}, dialer-proxy: a}}"),
    ]);
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
}

#[test]
fn a_direct_proxy_ignores_dialer_proxy() {
    let l = ok(&with_proxies(&[
        &format!("{{{A}}}"),
        "{name: dd, type: direct, dialer-proxy: a}",
    ]));
    assert_eq!(dialer_of(&l, "dd"), None);
    let w = warnings(&l);
    assert!(
        w.iter()
            .any(|w| w
                .contains("proxies[1].dialer-proxy: a direct proxy connects directly; ignored")),
        "{w:?}"
    );
}
