//! End-to-end: `RULE-SET` rules backed by rule providers. A `file` provider is read at start
//! (and a broken one is reported by `tpgate check` with its own FILE:LINE:COL); an `http`
//! provider is downloaded by the gateway over a marked DIRECT connection from a server in
//! the lab, cached to its `path`, and its set decides flows as soon as it arrives.

mod lab;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lab::{
    has_field, lan_request_for, tpgate_oneshot, Family, Lab, PatientRead, TcpEchoServer, Tpgate,
};

/// Serves `body` to every GET on `addr` (in the lab's server namespace), counting requests.
fn serve_list(lab: &Lab, addr: SocketAddr, body: &'static str) -> Arc<AtomicUsize> {
    let listener = lab.server.enter(|| TcpListener::bind(addr)).expect("bind");
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 2048];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.read_patiently(&mut buf).unwrap_or(0) == 0 {
                continue;
            }
            count.fetch_add(1, Ordering::SeqCst);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    hits
}

#[test]
fn file_and_http_providers_drive_rule_set_rules() {
    let Some(lab) = Lab::new("ruleset") else {
        return;
    };
    let v4 = Family::V4.addrs();
    lab.write_file(
        "blocked.yaml",
        "# a community-style domain list\npayload:\n  - '+.blocked.example'\n  - exact.example\n",
    );
    let list_at = SocketAddr::new(v4.server, 8000);
    let hits = serve_list(&lab, list_at, "# ipcidr\n203.0.113.0/24\n2001:db8:2::/64\n");
    let base = lab.proxy_config_text(
        &[],
        &[],
        &[
            "RULE-SET,blocked,REJECT",
            "AND,((RULE-SET,remote),(DST-PORT,9000)),REJECT",
            "MATCH,DIRECT",
        ],
    );
    let config = format!(
        "{base}rule-providers:\n  \
           blocked: {{type: file, behavior: domain, path: ./blocked.yaml}}\n  \
           remote: {{type: http, behavior: ipcidr, format: text, url: 'http://{list_at}/list.txt', path: ./cache/remote.txt, interval: 3600}}\n"
    );
    let path = lab.write_file("tpgate.yaml", &config);
    let check = tpgate_oneshot(&lab.gw, &["check", "-c", &path.display().to_string()]);
    assert!(check.success(), "check: {}", check.stderr);

    let tp = Tpgate::start(&lab, &path);
    let updated = tp.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("rule provider updated") && l.contains("remote")
    });
    assert!(updated.is_some(), "no download:\n{}", tp.log_text());
    assert_eq!(hits.load(Ordering::SeqCst), 1, "downloaded once");
    let cached = std::fs::read_to_string(lab.dir.join("cache/remote.txt")).expect("cache file");
    assert!(cached.contains("203.0.113.0/24"));

    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let web = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        let other = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 9000));
        assert!(!lan_request_for(&lab, "www.allowed.example", web.addr).is_empty());
        assert!(lan_request_for(&lab, "cdn.blocked.example", web.addr).is_empty());
        assert!(lan_request_for(&lab, "exact.example", web.addr).is_empty());
        let line = tp
            .wait_for_line(Duration::from_secs(5), |l| {
                l.contains(&format!(" -> {} ", web.addr))
                    && has_field(l, "host", "cdn.blocked.example")
            })
            .expect("flow line");
        assert!(line.contains("rule=\"RULE-SET,blocked,REJECT\""), "{line}");
        // The downloaded ipcidr set rejects port 9000 to the server's network.
        assert!(lan_request_for(&lab, "x.test", other.addr).is_empty());
        assert_eq!(
            other.peers().len(),
            0,
            "{family:?}: reached despite the set"
        );
    }
    drop(tp);

    // Restart with the server gone: the cached copy is used at once.
    let tp = Tpgate::start(&lab, &path);
    let a = Family::V4.addrs();
    let other = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 9000));
    assert!(
        lan_request_for(&lab, "x.test", other.addr).is_empty(),
        "cache not used"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "a cached provider waits for its interval"
    );
    drop(tp);
}

#[test]
fn a_broken_provider_file_is_reported_with_its_position() {
    let Some(lab) = Lab::new("rulesetbad") else {
        return;
    };
    lab.write_file("lan.txt", "192.0.2.0/24\n\n  not-a-cidr\n");
    let base = lab.proxy_config_text(&[], &[], &["RULE-SET,lan,DIRECT", "MATCH,DIRECT"]);
    let config = format!(
        "{base}rule-providers:\n  lan: {{type: file, behavior: ipcidr, format: text, path: lan.txt}}\n"
    );
    let path = lab.write_file("tpgate.yaml", &config);
    let out = tpgate_oneshot(&lab.gw, &["check", "-c", &path.display().to_string()]);
    assert_eq!(out.code, Some(2), "{out:?}");
    let want = format!("{}:3:3:", lab.dir.join("lan.txt").display());
    assert!(
        out.stderr.contains(&want),
        "expected `{want}` in:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("not-a-cidr"), "{}", out.stderr);
}
