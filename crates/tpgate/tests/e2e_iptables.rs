//! The iptables backend, end to end, for both variants (iptables-nft and iptables-legacy),
//! whatever `TPGATE_E2E_BACKEND` says: LAN TCP and UDP over IPv4 and IPv6 and the gateway's
//! own traffic are intercepted, the WAN is not; an earlier instance's chains are replaced at
//! start; SIGTERM leaves nothing of tpgate's and keeps a bystander rule; after SIGKILL the
//! chains stay (no owner flag) and `tpgate down` removes them, twice without error; tpgate
//! refuses to start in one variant while its chains are in the other.
//!
//! Needs root and the `iptables` package (both variants); without root every test prints
//! `SKIPPED` and passes.

mod lab;

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;

use lab::{
    pattern, tcp_echo, tpgate_oneshot, udp_exchange, Backend, Family, Lab, TcpEchoServer, Tpgate,
    UdpEchoServer,
};

const REPLY_WAIT: Duration = Duration::from_secs(5);

/// The tool names of one variant.
fn tools(backend: Backend, family: Family, tool: &str) -> String {
    let base = match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    };
    let v = match backend {
        Backend::IptablesNft => "nft",
        Backend::IptablesLegacy => "legacy",
        Backend::Nftables => unreachable!("iptables variants only"),
    };
    format!("{base}-{v}-{tool}")
}

/// A lab whose configs ask for `backend`.
fn lab(tag: &str, backend: Backend) -> Option<Lab> {
    let mut lab = Lab::new(tag)?;
    lab.backend = backend;
    Some(lab)
}

/// Applies `script` with `<variant>-restore --noflush` in the gateway.
fn restore(lab: &Lab, backend: Backend, family: Family, script: &str) {
    let file = lab.write_file("seed.rules", script);
    lab.gw.sh(
        &tools(backend, family, "restore"),
        &["--noflush", file.to_str().expect("utf-8 path")],
    );
}

fn save(lab: &Lab, backend: Backend, family: Family) -> String {
    lab.gw.sh(&tools(backend, family, "save"), &[])
}

/// A rule that is not tpgate's and must survive it.
const BYSTANDER: &str = "-A INPUT -p tcp -m tcp --dport 9999 -j ACCEPT";

/// What an earlier, killed instance of another tpgate version could have left: a chain
/// tpgate no longer uses that drops port 80, and a duplicate jump.
const STALE: &str = "*mangle\n\
                     :TPGATE_PRE - [0:0]\n\
                     :TPGATE_STALE - [0:0]\n\
                     -A PREROUTING -j TPGATE_PRE\n\
                     -A PREROUTING -j TPGATE_PRE\n\
                     -A TPGATE_PRE -j TPGATE_STALE\n\
                     -A TPGATE_STALE -p tcp --dport 80 -j DROP\n\
                     COMMIT\n";

fn jumps(saved: &str, builtin: &str) -> usize {
    saved
        .lines()
        .filter(|l| l.starts_with(&format!("-A {builtin} ")) && l.contains("TPGATE_"))
        .count()
}

fn lan_and_local_traffic_is_intercepted(lab: &Lab, tp: &Tpgate<'_>) {
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let tcp = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        let data = pattern(20_000, 9);
        let x = tcp_echo(&lab.client, tcp.addr, &data).expect("LAN TCP through tpgate");
        assert_eq!(x.echoed, data, "{family:?}: LAN TCP echo");
        assert_eq!(tcp.wait_peers(1)[0].ip(), a.gw_wan, "{family:?}: relayed");
        tp.expect_flow("tcp", x.local, tcp.addr, "DIRECT");

        let local = tcp_echo(&lab.gw, tcp.addr, b"own").expect("gateway's own TCP");
        assert_eq!(local.echoed, b"own");
        tp.expect_flow("tcp", local.local, tcp.addr, "DIRECT");

        let udp = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
        let u = udp_exchange(&lab.client, family, udp.addr, b"ping", REPLY_WAIT).expect("send");
        let Some((from, reply)) = &u.reply else {
            panic!("{family:?}: no UDP reply; log:\n{}", tp.log_text())
        };
        assert_eq!((*from, reply.as_slice()), (udp.addr, &b"ping"[..]));
        assert_eq!(udp.peers()[0].ip(), a.gw_wan, "{family:?}: UDP relayed");
        tp.expect_flow(
            "udp",
            SocketAddr::new(a.client, u.local.port()),
            udp.addr,
            "DIRECT",
        );

        // From the WAN toward the LAN: not intercepted, replies included.
        let on_client = TcpEchoServer::start(&lab.client, SocketAddr::new(a.client, 81));
        let w = tcp_echo(&lab.server, on_client.addr, b"from wan").expect("WAN -> LAN");
        assert_eq!(w.echoed, b"from wan");
        assert_eq!(
            on_client.wait_peers(1),
            vec![w.local],
            "{family:?}: WAN untouched"
        );
        assert!(
            tp.flows_to(w.local).is_empty(),
            "{family:?}: WAN replies intercepted"
        );
    }
}

fn core_scenario(backend: Backend, tag: &str) {
    let Some(lab) = lab(tag, backend) else { return };
    restore(
        &lab,
        backend,
        Family::V4,
        &format!("*filter\n{BYSTANDER}\nCOMMIT\n"),
    );
    let before = lab.gw_state();
    let bystander_before = save(&lab, backend, Family::V4);
    restore(&lab, backend, Family::V4, STALE);
    restore(&lab, backend, Family::V6, STALE);

    let mut tp = Tpgate::start(&lab, &lab.write_config());
    for family in [Family::V4, Family::V6] {
        let saved = save(&lab, backend, family);
        assert!(
            !saved.contains("TPGATE_STALE"),
            "stale chain kept:\n{saved}"
        );
        for builtin in ["PREROUTING", "OUTPUT", "INPUT"] {
            assert_eq!(jumps(&saved, builtin), 1, "{family:?} {builtin}:\n{saved}");
        }
        assert!(saved.contains("TPROXY --on-port 7893"), "{saved}");
    }
    lan_and_local_traffic_is_intercepted(&lab, &tp);

    let status = tp.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", tp.log_text());
    let after = lab.gw_state();
    assert!(
        !after.has_tpgate_table(),
        "left after SIGTERM:\n{}",
        after.tables
    );
    assert_eq!(after, before);
    let saved = save(&lab, backend, Family::V4);
    assert!(
        saved.contains(BYSTANDER),
        "bystander rule removed:\n{saved}"
    );
    assert_eq!(
        jumps(&saved, "INPUT"),
        jumps(&bystander_before, "INPUT"),
        "{saved}"
    );
}

#[test]
fn iptables_nft_intercepts_replaces_stale_chains_and_cleans_up() {
    core_scenario(Backend::IptablesNft, "iptnft");
}

#[test]
fn iptables_legacy_intercepts_replaces_stale_chains_and_cleans_up() {
    core_scenario(Backend::IptablesLegacy, "iptlegacy");
}

fn kill_then_down(backend: Backend, tag: &str) {
    let Some(lab) = lab(tag, backend) else { return };
    let before = lab.gw_state();
    let config = lab.write_config();
    let mut tp = Tpgate::start(&lab, &config);
    tp.signal(Signal::SIGKILL);
    assert!(
        tp.wait_exit(Duration::from_secs(2)).is_some(),
        "still running"
    );
    assert!(
        lab.gw_state().has_tpgate_table(),
        "iptables chains have no owner: they stay after SIGKILL"
    );
    let config_arg = config.to_str().expect("utf-8 path");
    for round in ["first", "second"] {
        let out = tpgate_oneshot(&lab.gw, &["down", "-c", config_arg]);
        assert!(out.success(), "{round} `tpgate down`: {out:#?}");
        assert_eq!(lab.gw_state(), before, "after the {round} `tpgate down`");
    }
    // Without tpgate's chains the LAN reaches the server directly again.
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let x = tcp_echo(&lab.client, server.addr, b"plain").expect("traffic after down");
    assert_eq!(server.wait_peers(1), vec![x.local]);
}

#[test]
fn iptables_nft_sigkill_then_down_removes_everything() {
    kill_then_down(Backend::IptablesNft, "iptnftkill");
}

#[test]
fn iptables_legacy_sigkill_then_down_removes_everything() {
    kill_then_down(Backend::IptablesLegacy, "iptlegkill");
}

/// Chains in iptables-legacy, a config asking for iptables-nft: refused, nothing installed.
#[test]
fn refuses_to_mix_variants() {
    let Some(lab) = lab("iptmix", Backend::IptablesNft) else {
        return;
    };
    let before = lab.gw_state();
    restore(&lab, Backend::IptablesLegacy, Family::V4, STALE);
    let config = lab.write_config();
    let config_arg = config.to_str().expect("utf-8 path");
    let out = tpgate_oneshot(&lab.gw, &["run", "-c", config_arg]);
    assert!(
        !out.success(),
        "started next to another variant's chains: {out:#?}"
    );
    assert!(
        out.stderr.contains("iptables-legacy") && out.stderr.contains("mixing"),
        "{out:#?}"
    );
    assert!(
        !save(&lab, Backend::IptablesNft, Family::V4).contains("TPGATE_"),
        "installed in iptables-nft anyway"
    );
    let out = tpgate_oneshot(&lab.gw, &["down", "-c", config_arg]);
    assert!(out.success(), "{out:#?}");
    assert_eq!(
        lab.gw_state(),
        before,
        "`down` removes the other variant's chains"
    );
}

/// The chains of a live tpgate are its own: `down` and a second `run` leave them alone.
#[test]
fn a_running_instance_keeps_its_chains() {
    let Some(lab) = lab("iptlive", Backend::IptablesLegacy) else {
        return;
    };
    let before = lab.gw_state();
    let mut tp = Tpgate::start(&lab, &lab.write_config());
    let installed = lab.gw_state();
    let pid = tp.pid().to_string();
    assert!(
        installed.tables.contains(&format!("TPGATE_PID_{pid}")),
        "no owner chain for pid {pid}:\n{}",
        installed.tables
    );

    let config = lab.write_config();
    let out = tpgate_oneshot(
        &lab.gw,
        &["down", "-c", config.to_str().expect("utf-8 path")],
    );
    assert!(
        !out.success(),
        "`down` removed a live instance's chains: {out:#?}"
    );
    assert!(
        out.stderr.contains(&format!("running tpgate (pid {pid})")),
        "{out:#?}"
    );
    // Another port, so the second instance gets as far as the rules.
    let second = lab.write_file(
        "second.yaml",
        &lab.config_text()
            .replace("tproxy-port: 7893", "tproxy-port: 7894"),
    );
    let out = tpgate_oneshot(
        &lab.gw,
        &["run", "-c", second.to_str().expect("utf-8 path")],
    );
    assert!(!out.success(), "a second instance took over: {out:#?}");
    assert!(out.stderr.contains("stop that process first"), "{out:#?}");
    assert_eq!(
        lab.gw_state(),
        installed,
        "the live instance's chains changed"
    );
    lan_and_local_traffic_is_intercepted(&lab, &tp);

    assert_eq!(tp.terminate().code(), Some(0), "log:\n{}", tp.log_text());
    assert_eq!(lab.gw_state(), before);
}

/// The nftables backend removes a dead iptables instance's chains, which would otherwise
/// catch the same packets (here: drop port 80).
#[test]
fn nftables_start_removes_dead_iptables_chains() {
    let Some(lab) = lab("iptnftstart", Backend::Nftables) else {
        return;
    };
    for backend in [Backend::IptablesNft, Backend::IptablesLegacy] {
        restore(&lab, backend, Family::V4, STALE);
        restore(&lab, backend, Family::V6, STALE);
    }
    let mut tp = Tpgate::start(&lab, &lab.write_config());
    for backend in [Backend::IptablesNft, Backend::IptablesLegacy] {
        for family in [Family::V4, Family::V6] {
            let saved = save(&lab, backend, family);
            assert!(
                !saved.contains("TPGATE_"),
                "{backend:?} {family:?}:\n{saved}"
            );
        }
    }
    assert!(lab.gw_state().has_tpgate_table());
    lan_and_local_traffic_is_intercepted(&lab, &tp);
    assert_eq!(tp.terminate().code(), Some(0), "log:\n{}", tp.log_text());
}
