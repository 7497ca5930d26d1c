//! `tpgate doctor` against live setups in the namespace lab: a healthy tpgate reports
//! healthy; each classic mistake, written by hand in the gateway the way a Clash TPROXY
//! guide would (its exact `iptables -t mangle`, `ip rule`, `ip route` commands with one
//! piece wrong or missing), is found with its id and the command that fixes it; `--json`
//! says the same as the human report; `--trace` names the rule that intercepted a flow.

mod doctor_cli;
mod lab;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use doctor_cli::{apply_guide, doctor, doctor_json, expect_finding, Found};
use lab::{kill_and_reap, tcp_echo, tpgate_bin, wait_timeout, Family, Lab, TcpEchoServer, Tpgate};

#[test]
fn healthy_tpgate_and_json_agree() {
    let Some(lab) = Lab::new("dochealthy") else {
        return;
    };
    let config = lab.write_config();
    let _tp = Tpgate::start(&lab, &config);
    let cfg = config.to_str().expect("utf-8 path");

    let human = doctor(&lab, &["-c", cfg]);
    assert_eq!(human.code, Some(0), "{}\n{}", human.stdout, human.stderr);
    assert!(
        human.stdout.starts_with("tpgate doctor: healthy"),
        "{}",
        human.stdout
    );
    assert!(
        !human.stdout.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );

    let (code, fs) = doctor_json(&lab, &["-c", cfg]);
    assert_eq!(code, Some(0));
    let bad: Vec<&Found> = fs
        .iter()
        .filter(|f| f.severity == "warn" || f.severity == "error")
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    for id in [
        "halves",
        "loop-guard",
        "reply-direction",
        "fwmark-rule",
        "route-local",
        "mark-collision",
        "listener",
        "ip-forward",
        "rp-filter",
        "tproxy-hook",
    ] {
        assert!(
            fs.iter().any(|f| f.id == id && f.severity == "ok"),
            "{id} not ok: {fs:#?}"
        );
        assert!(
            fs.iter().filter(|f| f.id == id).all(|f| f.severity == "ok"),
            "{id}: {fs:#?}"
        );
    }
    // The human report lists the same checks as the JSON.
    let human_ids: BTreeSet<String> = human
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|id| id.strip_suffix(':'))
        .map(str::to_owned)
        .collect();
    let json_ids: BTreeSet<String> = fs.iter().map(|f| f.id.clone()).collect();
    assert_eq!(human_ids, json_ids);
}

#[test]
fn fwmark_table_routes_via_wan() {
    let Some(lab) = Lab::new("docroute") else {
        return;
    };
    let server = Family::V4.addrs().server;
    apply_guide(&lab, |l| {
        Some(if l.starts_with("ip route add local") {
            format!(
                "ip route add default via {server} dev {} table 100",
                lab.wan_if
            )
        } else {
            l.to_owned()
        })
    });
    let (code, fs) = doctor_json(&lab, &[]);
    assert_eq!(code, Some(1));
    let f = expect_finding(&fs, "route-local", "error");
    assert!(
        f.title
            .contains(&format!("default via {server} dev {}", lab.wan_if)),
        "{}",
        f.title
    );
    assert_eq!(f.fix, "ip -4 route replace local default dev lo table 100");
    // The fix works: after running it, the finding is gone.
    lab.gw.sh("sh", &["-c", &f.fix]);
    let (_, fs) = doctor_json(&lab, &[]);
    expect_finding(&fs, "route-local", "ok");
}

#[test]
fn output_mark_without_ip_rule() {
    let Some(lab) = Lab::new("docnorule") else {
        return;
    };
    apply_guide(&lab, |l| (!l.starts_with("ip rule")).then(|| l.to_owned()));
    let (code, fs) = doctor_json(&lab, &[]);
    assert_eq!(code, Some(1));
    let f = expect_finding(&fs, "fwmark-rule", "error");
    assert!(f.title.contains("mark 0x1"), "{}", f.title);
    assert!(
        f.fix.starts_with("ip -4 rule add fwmark 0x1 lookup 100"),
        "{}",
        f.fix
    );
}

#[test]
fn only_the_output_half() {
    let Some(lab) = Lab::new("dochalf") else {
        return;
    };
    apply_guide(&lab, |l| {
        (!l.contains(" CLASH ") && !l.ends_with(" CLASH")).then(|| l.to_owned())
    });
    let (code, fs) = doctor_json(&lab, &[]);
    assert_eq!(code, Some(1));
    let f = expect_finding(&fs, "halves", "error");
    assert!(f.title.contains("CLASH_SELF"), "{}", f.title);
}

#[test]
fn no_loop_guard() {
    let Some(lab) = Lab::new("docloop") else {
        return;
    };
    apply_guide(&lab, |l| (!l.contains("--mark 0xff")).then(|| l.to_owned()));
    let (code, fs) = doctor_json(&lab, &[]);
    assert_eq!(code, Some(1));
    let f = expect_finding(&fs, "loop-guard", "error");
    assert!(f.title.contains("-A CLASH_SELF -p tcp"), "{}", f.title);
    assert!(f.fix.contains("-m mark --mark 0xff -j RETURN"), "{}", f.fix);
}

#[test]
fn wireguard_rule_collides_with_tpgate_mark() {
    let Some(lab) = Lab::new("docwg") else { return };
    let config = lab.write_config();
    let _tp = Tpgate::start(&lab, &config);
    // A WireGuard tunnel configured with `FwMark = 0x1` and `Table = 51820`.
    lab.gw.ip(&[
        "-4", "rule", "add", "fwmark", "0x1", "lookup", "51820", "pref", "8000",
    ]);
    let (code, fs) = doctor_json(&lab, &["-c", config.to_str().expect("utf-8 path")]);
    assert_eq!(code, Some(1));
    let f = expect_finding(&fs, "mark-collision", "error");
    assert!(
        f.title.contains("WireGuard") && f.title.contains("IPv4"),
        "{}",
        f.title
    );
    assert!(f.fix.contains("fwmark: 0x2"), "{}", f.fix);
}

#[test]
fn strict_rp_filter_on_lan() {
    let Some(lab) = Lab::new("docrp") else { return };
    let config = lab.write_config();
    let _tp = Tpgate::start(&lab, &config);
    let key = format!("net.ipv4.conf.{}.rp_filter=1", lab.lan_if);
    lab.gw.sh("sysctl", &["-qw", &key]);
    let (code, fs) = doctor_json(&lab, &["-c", config.to_str().expect("utf-8 path")]);
    assert_eq!(code, Some(1));
    let f = expect_finding(&fs, "rp-filter", "warn");
    assert!(f.title.contains(&lab.lan_if), "{}", f.title);
    assert_eq!(
        f.fix,
        format!("sysctl -w net.ipv4.conf.{}.rp_filter=2", lab.lan_if)
    );
}

#[test]
fn trace_names_the_tproxy_rule() {
    let Some(lab) = Lab::new("doctrace") else {
        return;
    };
    let config = lab.write_config();
    let _tp = Tpgate::start(&lab, &config);
    let server = TcpEchoServer::start(
        &lab.server,
        SocketAddr::new(Family::V4.addrs().server, 8080),
    );
    let dst = server.addr.to_string();
    let out = doctor(&lab, &["--trace", "tcp", &dst]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let matched = out
        .stdout
        .lines()
        .find(|l| l.contains("inet tpgate prerouting") && l.contains("tproxy to :7893"))
        .unwrap_or_else(|| panic!("no tproxy step in:\n{}\n{}", out.stdout, out.stderr));
    assert!(matched.contains("accept"), "{matched}");
    assert!(
        out.stdout
            .contains("result: intercepted by TPROXY: inet tpgate prerouting"),
        "{}",
        out.stdout
    );
    // The local connection left through OUTPUT, where tpgate's chain marked it.
    assert!(out.stdout.contains("inet tpgate output"), "{}", out.stdout);
    // Only doctor's own table was added, and it is gone.
    assert!(!lab.gw.nft_tables().contains("tpgate_doctor_trace"));
    // Bad arguments are a usage error.
    assert_eq!(doctor(&lab, &["--trace", "icmp", &dst]).code, Some(2));
}

#[test]
fn src_valid_mark_breaks_interception_and_the_fix_restores_it() {
    let Some(lab) = Lab::new("docvmark") else {
        return;
    };
    let config = lab.write_config();
    let _tp = Tpgate::start(&lab, &config);
    let server = TcpEchoServer::start(
        &lab.server,
        SocketAddr::new(Family::V4.addrs().server, 8081),
    );
    let cfg = config.to_str().expect("utf-8 path");
    // Loose rp_filter alone is fine; src_valid_mark makes the reverse-path check use the
    // TPROXY mark and drop every intercepted LAN packet.
    lab.gw.sh(
        "sysctl",
        &["-qw", &format!("net.ipv4.conf.{}.rp_filter=2", lab.lan_if)],
    );
    assert_eq!(
        tcp_echo(&lab.client, server.addr, b"loose")
            .expect("loose rp_filter")
            .echoed,
        b"loose"
    );
    lab.gw.sh(
        "sysctl",
        &[
            "-qw",
            &format!("net.ipv4.conf.{}.src_valid_mark=1", lab.lan_if),
        ],
    );
    assert!(
        tcp_echo(&lab.client, server.addr, b"dropped").is_err(),
        "the kernel drops it"
    );
    let (code, fs) = doctor_json(&lab, &["-c", cfg]);
    assert_eq!(code, Some(1));
    let f = expect_finding(&fs, "src-valid-mark", "error");
    lab.gw.sh("sh", &["-c", &f.fix]);
    assert_eq!(
        tcp_echo(&lab.client, server.addr, b"fixed")
            .expect("after the fix")
            .echoed,
        b"fixed"
    );
    let (code, _) = doctor_json(&lab, &["-c", cfg]);
    assert_eq!(code, Some(0));
}

#[test]
fn trace_from_a_lan_host_waits_for_its_packet() {
    let Some(lab) = Lab::new("doctracefrom") else {
        return;
    };
    let config = lab.write_config();
    let _tp = Tpgate::start(&lab, &config);
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 8082));
    let (dst, src) = (server.addr.to_string(), a.client.to_string());
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.gw.name, &tpgate_bin()])
        .args([
            "doctor", "--trace", "tcp", &dst, "--from", &src, "--wait", "4",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tpgate doctor --trace");
    // doctor says when it listens; the client connects only then (no sleeping).
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.starts_with("waiting") {
        line.clear();
        if stderr.read_line(&mut line).expect("read doctor stderr") == 0 {
            kill_and_reap(&mut child);
            panic!("doctor exited before waiting");
        }
    }
    assert!(line.contains(&format!("from {src} to {dst}")), "{line}");
    let x = tcp_echo(&lab.client, server.addr, b"traced").expect("client connection");
    assert_eq!(x.echoed, b"traced");
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{out}");
    assert!(out.contains(&format!("iif \"{}\"", lab.lan_if)), "{out}");
    assert!(
        out.contains("result: intercepted by TPROXY: inet tpgate prerouting"),
        "{out}"
    );
    assert!(!lab.gw.nft_tables().contains("tpgate_doctor_trace"));
}

#[test]
fn without_root_partial_picture_and_bad_config() {
    let Some(lab) = Lab::new("docnoroot") else {
        return;
    };
    let config = lab.write_config();
    let _tp = Tpgate::start(&lab, &config);
    let cfg = config.to_str().expect("utf-8 path");
    // The same binary as user `nobody` (setpriv, util-linux) in the gateway.
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &lab.gw.name,
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
    ])
    .args(["--clear-groups", &tpgate_bin(), "doctor", "-c", cfg]);
    let out = lab::run_cmd(cmd, Duration::from_secs(20));
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("not root: partial picture"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("halves: ruleset unreadable"),
        "{}",
        out.stdout
    );
    // sock_diag needs no root: tpgate's transparent listener is still seen.
    assert!(
        out.stdout
            .contains("ok    listener: TCP port 7893: listener with IP_TRANSPARENT"),
        "{}",
        out.stdout
    );
    // A bad config is a usage error, reported like `check` does.
    let bad = lab.write_file("bad.yaml", "tproxy-port: nope\n");
    let out = doctor(&lab, &["-c", bad.to_str().expect("utf-8 path")]);
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("bad.yaml:1:"), "{}", out.stderr);
}
