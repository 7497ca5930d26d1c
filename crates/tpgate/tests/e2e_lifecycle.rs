//! Lifecycle of tpgate in a namespace lab: what `run` installs, that SIGTERM/SIGINT remove
//! exactly that (and nothing of anyone else's), that after SIGKILL the kernel drops the
//! owned nftables table so traffic flows uninterrupted and `down` cleans the rest, and that
//! a bad config installs nothing. Also `check`, `plan` and `down` as one-shot commands.

mod lab;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use lab::{
    poll, tcp_connect, tcp_echo, tpgate_oneshot, Family, Lab, PatientRead, TcpEchoServer, Tpgate,
};

/// Things in the gateway that are not tpgate's and must survive it untouched.
struct Bystanders {
    nft: String,
    table142_v4: String,
    table142_v6: String,
}

fn add_bystanders(lab: &Lab) -> Bystanders {
    let keep = "table inet tpgtest_keep {\n\
                  chain input {\n\
                    type filter hook input priority 10; policy accept;\n\
                    tcp dport 9999 counter accept\n\
                  }\n\
                }\n";
    let file = lab.write_file("keep.nft", keep);
    lab.gw
        .sh("nft", &["-f", file.to_str().expect("utf-8 path")]);
    let g = &lab.gw;
    g.ip(&[
        "-4",
        "rule",
        "add",
        "from",
        "192.0.2.99",
        "lookup",
        "142",
        "pref",
        "8500",
    ]);
    g.ip(&[
        "-6",
        "rule",
        "add",
        "from",
        "2001:db8:3::99",
        "lookup",
        "142",
        "pref",
        "8500",
    ]);
    g.ip(&[
        "-4",
        "route",
        "add",
        "192.0.2.0/25",
        "via",
        "203.0.113.2",
        "table",
        "142",
    ]);
    g.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:3::/80",
        "via",
        "2001:db8:2::2",
        "table",
        "142",
    ]);
    bystanders_now(lab)
}

fn bystanders_now(lab: &Lab) -> Bystanders {
    Bystanders {
        nft: lab.gw.sh("nft", &["list", "table", "inet", "tpgtest_keep"]),
        table142_v4: lab.gw.routes_in_table(Family::V4, 142),
        table142_v6: lab.gw.routes_in_table(Family::V6, 142),
    }
}

fn assert_bystanders_unchanged(lab: &Lab, before: &Bystanders) {
    let now = bystanders_now(lab);
    assert_eq!(now.nft, before.nft, "another nftables table was changed");
    assert_eq!(
        now.table142_v4, before.table142_v4,
        "another IPv4 route table was changed"
    );
    assert_eq!(
        now.table142_v6, before.table142_v6,
        "another IPv6 route table was changed"
    );
}

fn assert_installed(lab: &Lab) {
    let s = lab.gw_state();
    assert!(
        s.has_tpgate_table(),
        "no `table inet tpgate` while running:\n{}",
        s.tables
    );
    assert_eq!(
        s.fwmark_rules(),
        (true, true),
        "fwmark rules (v4, v6):\n{s:#?}"
    );
    assert_eq!(
        s.local_routes(),
        (true, true),
        "local routes in table 100 (v4, v6):\n{s:#?}"
    );
}

fn stop_removes_everything(sig: Signal, tag: &str) {
    let Some(lab) = Lab::new(tag) else { return };
    let bystanders = add_bystanders(&lab);
    let before = lab.gw_state();
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));

    let mut tp = Tpgate::start(&lab, &lab.write_config());
    assert_installed(&lab);
    let x = tcp_echo(&lab.client, server.addr, b"before stop").expect("traffic while running");
    assert_eq!(
        server.wait_peers(1)[0].ip(),
        a.gw_wan,
        "intercepted while running"
    );
    drop(x);

    tp.signal(sig);
    let status = tp
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("tpgate ignored {sig} for 10 s; log:\n{}", tp.log_text()));
    assert_eq!(
        status.code(),
        Some(0),
        "exit after {sig}; log:\n{}",
        tp.log_text()
    );

    let after = lab.gw_state();
    assert!(
        !after.has_tpgate_table(),
        "table left after {sig}:\n{}",
        after.tables
    );
    assert_eq!(
        after, before,
        "the gateway after {sig} differs from before start"
    );
    assert_bystanders_unchanged(&lab, &bystanders);
}

#[test]
fn sigterm_removes_table_rules_and_routes_only() {
    stop_removes_everything(Signal::SIGTERM, "sigterm");
}

#[test]
fn sigint_removes_table_rules_and_routes_only() {
    stop_removes_everything(Signal::SIGINT, "sigint");
}

/// An open, idle relayed connection must not keep tpgate from stopping.
#[test]
fn sigterm_with_open_connection_exits_promptly() {
    let Some(lab) = Lab::new("sigtermopen") else {
        return;
    };
    let before = lab.gw_state();
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let mut tp = Tpgate::start(&lab, &lab.write_config());
    let open = tcp_connect(&lab.client, server.addr).expect("connect");
    server.wait_peers(1);

    let status = tp.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", tp.log_text());
    assert_eq!(lab.gw_state(), before);
    drop(open);
}

#[test]
fn sigkill_drops_table_at_once_and_down_removes_the_rest() {
    let Some(lab) = Lab::new("sigkill") else {
        return;
    };
    let bystanders = add_bystanders(&lab);
    let before = lab.gw_state();
    let config = lab.write_config();
    let mut tp = Tpgate::start(&lab, &config);
    assert_installed(&lab);

    tp.signal(Signal::SIGKILL);
    assert!(
        tp.wait_exit(Duration::from_secs(2)).is_some(),
        "SIGKILLed tpgate still running"
    );
    let left = if lab.backend.is_iptables() {
        // iptables has no owner flag: the chains stay until `tpgate down` (below).
        let left = lab.gw_state();
        assert!(
            left.has_tpgate_table(),
            "iptables chains vanished: {left:#?}"
        );
        left
    } else {
        let gone = poll(Duration::from_secs(2), || {
            Some(()).filter(|()| !lab.gw_state().has_tpgate_table())
        });
        assert!(
            gone.is_some(),
            "`table inet tpgate` (owner flag) outlived its process by 2 s"
        );
        lab.gw_state()
    };

    // Rules and routes stay, but without the table nothing is marked: traffic flows plainly.
    assert_eq!(
        left.fwmark_rules(),
        (true, true),
        "rules are not tied to the process"
    );
    assert_eq!(
        left.local_routes(),
        (true, true),
        "routes are not tied to the process"
    );
    // With nftables traffic flows unproxied at once. With iptables TPROXY finds no listener
    // and drops until `down` (the unit's ExecStopPost), after which it must flow.
    if !lab.backend.is_iptables() {
        assert_unproxied_traffic(&lab, "after kill");
    }

    let config_arg = config.to_str().expect("utf-8 path");
    for round in ["first", "second"] {
        let out = tpgate_oneshot(&lab.gw, &["down", "-c", config_arg]);
        assert!(out.success(), "{round} `tpgate down` failed: {out:#?}");
        assert_eq!(
            lab.gw_state(),
            before,
            "gateway after the {round} `tpgate down`"
        );
    }
    assert_unproxied_traffic(&lab, "after down");
    assert_bystanders_unchanged(&lab, &bystanders);
}

/// A LAN client's TCP connection reaches the server with its own address and port, over
/// IPv4 and IPv6: nothing intercepts it, and nothing drops it.
fn assert_unproxied_traffic(lab: &Lab, when: &str) {
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        let x = tcp_echo(&lab.client, server.addr, when.as_bytes())
            .unwrap_or_else(|e| panic!("{family:?}: no traffic {when}: {e}"));
        assert_eq!(x.echoed, when.as_bytes());
        assert_eq!(
            server.wait_peers(1),
            vec![x.local],
            "{family:?} {when}: not intercepted any more"
        );
    }
}

#[test]
fn down_on_a_clean_gateway_does_nothing() {
    let Some(lab) = Lab::new("downclean") else {
        return;
    };
    let bystanders = add_bystanders(&lab);
    let before = lab.gw_state();
    let config = lab.write_config();
    let out = tpgate_oneshot(
        &lab.gw,
        &["down", "-c", config.to_str().expect("utf-8 path")],
    );
    assert!(
        out.success(),
        "`tpgate down` with nothing installed: {out:#?}"
    );
    assert_eq!(lab.gw_state(), before);
    assert_bystanders_unchanged(&lab, &bystanders);
}

/// Two bad configs, each with its error on line 3.
const BAD_CONFIGS: [(&str, &str); 2] = [
    // An unknown key is only a warning now (mihomo ignores them too); a proxy without
    // `server` is broken for both.
    (
        "no-server.yaml",
        "tproxy-port: 7893\nrouting-mark: 255\nproxies: [{name: a, type: socks5, port: 1080}]\nrules:\n  - MATCH,DIRECT\n",
    ),
    (
        "bad-port.yaml",
        "# a comment\nrouting-mark: 255\ntproxy-port: abc\nrules:\n  - MATCH,DIRECT\n",
    ),
];

/// Whether `text` has `FILE:3:COL:` for this file.
fn has_position(text: &str, file: &Path) -> bool {
    let prefix = format!("{}:3:", file.display());
    text.match_indices(&prefix).any(|(i, _)| {
        let rest = &text[i + prefix.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(':')
    })
}

#[test]
fn run_with_bad_config_exits_2_and_installs_nothing() {
    let Some(lab) = Lab::new("badrun") else {
        return;
    };
    let before = lab.gw_state();
    for (name, text) in BAD_CONFIGS {
        let file = lab.write_file(name, text);
        let out = tpgate_oneshot(&lab.gw, &["run", "-c", file.to_str().expect("utf-8 path")]);
        assert_eq!(out.code, Some(2), "`run` with {name}: {out:#?}");
        assert!(
            has_position(&out.stderr, &file),
            "no `{}:3:COL:` in stderr: {out:#?}",
            file.display()
        );
        assert_eq!(
            lab.gw_state(),
            before,
            "`run` with {name} changed the gateway"
        );
    }
}

#[test]
fn check_accepts_good_and_reports_bad_config_positions() {
    let Some(lab) = Lab::new("check") else { return };
    let before = lab.gw_state();
    let good = lab.write_config();
    let out = tpgate_oneshot(
        &lab.gw,
        &["check", "-c", good.to_str().expect("utf-8 path")],
    );
    assert!(out.success(), "`check` of the lab config: {out:#?}");
    for (name, text) in BAD_CONFIGS {
        let file = lab.write_file(name, text);
        let out = tpgate_oneshot(
            &lab.gw,
            &["check", "-c", file.to_str().expect("utf-8 path")],
        );
        assert_eq!(out.code, Some(2), "`check` of {name}: {out:#?}");
        let both = format!("{}\n{}", out.stdout, out.stderr);
        assert!(
            has_position(&both, &file),
            "no `{}:3:COL:` in output: {out:#?}",
            file.display()
        );
    }
    assert_eq!(lab.gw_state(), before, "`check` changed the gateway");
}

#[test]
fn plan_prints_the_plan_and_changes_nothing() {
    let Some(lab) = Lab::new("plan") else { return };
    let before = lab.gw_state();
    let config = lab.write_config();
    let out = tpgate_oneshot(
        &lab.gw,
        &["plan", "-c", config.to_str().expect("utf-8 path")],
    );
    assert!(out.success(), "`plan`: {out:#?}");
    assert!(
        out.stdout.contains(&lab.lan_if),
        "plan does not mention the LAN interface: {out:#?}"
    );
    assert!(
        out.stdout.contains("7893"),
        "plan does not mention the tproxy port: {out:#?}"
    );
    assert_eq!(lab.gw_state(), before, "`plan` changed the gateway");
}

/// `kill -9` during a bulk transfer with 1,000 more connections open (nftables): every
/// relayed connection ends at once (nothing hangs), new LAN and local connections flow
/// unproxied immediately, and a new instance started right after intercepts again.
#[test]
fn sigkill_under_load_leaves_traffic_flowing_and_a_new_instance_takes_over() {
    use std::io::{Read as _, Write as _};
    let Some(mut lab) = Lab::new("killload") else {
        return;
    };
    lab.backend = lab::Backend::Nftables;
    // 1,000 client sockets here, as many in the echo server: the test's own limit.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise the test's open-files limit");
    let a = Family::V4.addrs();
    // One LAN host opens them all: its per-source cap must allow it on any fd limit.
    let config = lab.write_file(
        "tpgate.yaml",
        &(lab.config_text() + "limits:\n  max-connections: 4000\n  per-source: 4000\n"),
    );
    let mut tp = Tpgate::start(&lab, &config);
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));

    // Opened 100 at a time, each batch waited for at the server: tpgate dials the server as
    // fast as the client connects, and a burst of 1,000 overflows the echo server's accept
    // queue; with SYN cookies on, a dial whose last ACK finds it full is never accepted (the
    // lab, not tpgate, would then lose it).
    let mut idle = Vec::with_capacity(1000);
    for i in 0..1000 {
        let s =
            tcp_connect(&lab.client, server.addr).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        idle.push(s);
        if i % 100 == 99 {
            let seen = poll(Duration::from_secs(10), || {
                Some(()).filter(|()| server.peers().len() > i)
            });
            assert!(
                seen.is_some(),
                "after {} connections the server saw {}",
                i + 1,
                server.peers().len()
            );
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bulk = {
        let mut s = tcp_connect(&lab.client, server.addr).expect("bulk connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || -> (u64, std::io::Result<()>) {
            let chunk = lab::pattern(64 * 1024, 3);
            let mut back = vec![0u8; chunk.len()];
            let mut moved = 0u64;
            // Bounded: 100k rounds, or until the relay breaks (the point of this test).
            for _ in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return (moved, Ok(()));
                }
                if let Err(e) = s.write_all(&chunk).and_then(|()| s.read_exact(&mut back)) {
                    return (moved, Err(e));
                }
                moved += chunk.len() as u64;
            }
            (moved, Ok(()))
        })
    };
    assert!(
        poll(Duration::from_secs(10), || Some(())
            .filter(|()| server.peers().len() >= 1001))
        .is_some(),
        "the server saw {} connections",
        server.peers().len()
    );
    assert!(
        server.peers().iter().all(|p| p.ip() == a.gw_wan),
        "every connection was relayed"
    );
    std::thread::sleep(Duration::from_millis(300));

    tp.signal(Signal::SIGKILL);
    assert!(
        tp.wait_exit(Duration::from_secs(5)).is_some(),
        "still running"
    );
    // The bulk transfer ends with an error instead of hanging (its read timeout is 10 s).
    let (moved, end) = bulk.join().expect("bulk thread");
    assert!(moved > 0, "the transfer ran before the kill");
    assert!(end.is_err(), "the relay's sockets died with it");
    // So do the idle ones: each reads an end (EOF or reset), none hangs.
    for (i, s) in idle.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        match s.read_patiently(&mut b) {
            Ok(0) | Err(_) => {}
            Ok(_) => panic!("idle connection {i} got data"),
        }
    }
    drop(idle);
    // New connections, from the LAN and from the gateway itself, flow unproxied at once.
    let x = tcp_echo(&lab.client, server.addr, b"after").expect("LAN traffic after the kill");
    assert_eq!(x.echoed, b"after");
    assert_eq!(server.peers().last(), Some(&x.local), "forwarded untouched");
    let own = tcp_echo(&lab.gw, server.addr, b"own").expect("local traffic after the kill");
    assert_eq!(own.echoed, b"own");

    // A new instance started right after takes over.
    let started = std::time::Instant::now();
    let tp2 = Tpgate::start(&lab, &config);
    let x = tcp_echo(&lab.client, server.addr, b"again").expect("through the new instance");
    eprintln!(
        "killload: a new instance relayed after {:?}",
        started.elapsed()
    );
    assert_eq!(x.echoed, b"again");
    assert_eq!(
        server.peers().last().map(|p| p.ip()),
        Some(a.gw_wan),
        "intercepted again"
    );
    tp2.expect_flow("tcp", x.local, server.addr, "DIRECT");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
}
