//! tpgate as `packaging/tpgate.service` runs it: uid 65534 with only CAP_NET_ADMIN,
//! CAP_NET_RAW and CAP_NET_BIND_SERVICE, a `/run/tpgate` and a state directory of its own
//! (see `lab::unprivileged`). Interception works for TCP and UDP, LAN and local traffic,
//! with nftables and iptables-nft, and is removed at exit; the DNS server binds port 53 and
//! the fake-ip table is saved in the state directory. iptables-legacy refuses to start,
//! saying it needs root. PROCESS-NAME rules see another user's process only with
//! CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, and tpgate says so at start without them.

mod lab;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::rr::{RData, RecordType};
use lab::{
    dns_udp, has_field, state_dir, tcp_echo, udp_exchange, uid_and_caps, Backend, Family, Lab,
    TcpEchoServer, Tpgate, UdpEchoServer, Unprivileged, NOBODY, UNIT_CAP_EFF,
};

const REPLY_WAIT: Duration = Duration::from_secs(5);

/// The lab's standard config, with `state-file` in a directory the unprivileged user owns
/// and, when `dns`, a fake-ip DNS server on port 53.
fn config(lab: &Lab, dns: bool) -> std::path::PathBuf {
    let state = state_dir(lab).join("state.json");
    let mut text = format!("state-file: {}\n{}", state.display(), lab.config_text());
    if dns {
        text.push_str(
            "dns:\n  enable: true\n  listen: 0.0.0.0:53\n  enhanced-mode: fake-ip\n  \
             fake-ip-range: 198.18.0.1/16\n  nameserver: ['udp://192.0.2.53:53']\n",
        );
    }
    lab.write_file("tpgate.yaml", &text)
}

/// TCP and UDP, from the LAN and from the gateway, IPv4 and IPv6: each relayed DIRECT.
fn intercepts_everything(lab: &Lab, tp: &Tpgate<'_>) {
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let tcp = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        for (ns, what) in [(&lab.client, "LAN"), (&lab.gw, "local")] {
            let x = tcp_echo(ns, tcp.addr, b"unprivileged")
                .unwrap_or_else(|e| panic!("{what} TCP {family:?}: {e}\n{}", tp.log_text()));
            assert_eq!(x.echoed, b"unprivileged", "{what} TCP {family:?}");
            tp.expect_flow("tcp", x.local, tcp.addr, "DIRECT");
        }
        let udp = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
        for (ns, what, src) in [(&lab.client, "LAN", a.client), (&lab.gw, "local", a.gw_wan)] {
            let x = udp_exchange(ns, family, udp.addr, b"datagram", REPLY_WAIT).expect("send");
            let Some((from, data)) = &x.reply else {
                panic!("{what} UDP {family:?}: no reply\n{}", tp.log_text());
            };
            assert_eq!((*from, data.as_slice()), (udp.addr, &b"datagram"[..]));
            tp.expect_flow(
                "udp",
                SocketAddr::new(src, x.local.port()),
                udp.addr,
                "DIRECT",
            );
        }
        assert!(
            tcp.peers()
                .iter()
                .chain(&udp.peers())
                .all(|p| p.ip() == a.gw_wan),
            "the servers must see the gateway: the flows were relayed"
        );
    }
}

fn runs_unprivileged(backend: Backend, tag: &str) {
    let Some(mut lab) = Lab::new(tag) else { return };
    lab.backend = backend;
    let dns = backend == Backend::Nftables;
    let config = config(&lab, dns);
    let before = lab.gw_state();
    let mut tp = Tpgate::start_wrapped(&lab, &config, &Unprivileged::unit().wrapper());
    assert_eq!(
        uid_and_caps(tp.pid().as_raw()),
        (NOBODY, UNIT_CAP_EFF),
        "tpgate must run as uid {NOBODY} with exactly the unit's capabilities"
    );
    let denied: Vec<String> = tp
        .lines()
        .into_iter()
        .filter(|l| l.contains("WARN") && (l.contains("denied") || l.contains("root")))
        .collect();
    assert!(
        denied.is_empty(),
        "an unprivileged start must not hit permission errors: {denied:#?}"
    );
    assert!(lab.gw_state().has_tpgate_table(), "interception installed");
    intercepts_everything(&lab, &tp);

    if dns {
        let gw = SocketAddr::new(Family::V4.addrs().gw_lan, 53);
        let x = dns_udp(&lab.client, gw, "app.example", RecordType::A, REPLY_WAIT);
        let reply = x
            .reply
            .unwrap_or_else(|| panic!("no DNS answer from :53\n{}", tp.log_text()));
        assert!(
            reply
                .answers()
                .iter()
                .any(|r| matches!(r.data(), RData::A(a) if a.0.octets()[..2] == [198, 18])),
            "a fake-ip answer: {reply:?}"
        );
    }

    let status = tp.terminate();
    assert!(status.success(), "exit: {status:?}\n{}", tp.log_text());
    assert_eq!(lab.gw_state(), before, "interception removed at exit");
    if dns {
        let saved = state_dir(&lab).join("state.json.fakeip.json");
        let text = std::fs::read_to_string(&saved)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", saved.display(), tp.log_text()));
        assert!(text.contains("app.example"), "{text}");
        assert_eq!(owner(&saved), NOBODY, "written by the unprivileged tpgate");
    }
}

fn owner(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).expect("stat").uid()
}

#[test]
fn unprivileged_nftables_intercepts_tcp_udp_and_serves_dns() {
    runs_unprivileged(Backend::Nftables, "unprivnft");
}

#[test]
fn unprivileged_iptables_nft_intercepts_tcp_and_udp() {
    runs_unprivileged(Backend::IptablesNft, "unprivipt");
}

/// iptables-legacy reads root-only files (the table list, the xtables lock): the start
/// fails before anything is installed, and says why.
#[test]
fn unprivileged_iptables_legacy_refuses_saying_it_needs_root() {
    let Some(mut lab) = Lab::new("unprivleg") else {
        return;
    };
    lab.backend = Backend::IptablesLegacy;
    let config = config(&lab, false);
    let before = lab.gw_state();
    let mut tp = Tpgate::spawn_wrapped(&lab, &config, &Unprivileged::unit().wrapper());
    let status = tp
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running:\n{}", tp.log_text()));
    assert!(!status.success(), "{status:?}");
    let log = tp.log_text();
    assert!(
        log.contains("iptables-legacy needs root") && log.contains("/run/xtables.lock"),
        "the error names the cause:\n{log}"
    );
    assert_eq!(lab.gw_state(), before, "nothing installed");
}

/// `PROCESS-NAME,curl,REJECT` with curl run by root on the gateway: the unit's
/// capabilities cannot see root's process (tpgate warns at start, curl goes DIRECT);
/// with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH added, curl is found and rejected.
#[test]
fn process_rules_see_other_users_only_with_ptrace_and_dac_read_search() {
    let Some(lab) = Lab::new("unprivproc") else {
        return;
    };
    let text = format!(
        "state-file: {}\n{}",
        state_dir(&lab).join("state.json").display(),
        lab.config_text().replace(
            "  - MATCH,DIRECT\n",
            "  - PROCESS-NAME,curl,REJECT\n  - MATCH,DIRECT\n"
        )
    );
    let config = lab.write_file("tpgate.yaml", &text);
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let url = format!("http://{}:80/", a.server);
    let curl_line = |tp: &Tpgate<'_>| {
        // The echo server answers no HTTP: curl fails either way; the log tells the rest.
        let _ = lab.gw.exec("curl", &["-s", "--max-time", "3", &url]);
        tp.wait_for_line(REPLY_WAIT, |l| {
            l.contains(&format!(" -> {} ", server.addr)) && l.contains("action=")
        })
        .unwrap_or_else(|| panic!("no flow line for curl:\n{}", tp.log_text()))
    };

    let mut tp = Tpgate::start_wrapped(&lab, &config, &Unprivileged::unit().wrapper());
    let warning = tp
        .wait_for_line(REPLY_WAIT, |l| {
            l.contains("PROCESS-NAME and PROCESS-PATH rules")
        })
        .unwrap_or_else(|| panic!("no warning about process rules:\n{}", tp.log_text()));
    assert!(
        warning.contains("CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
        "{warning}"
    );
    let line = curl_line(&tp);
    assert!(has_field(&line, "action", "DIRECT"), "{line}");
    assert!(has_field(&line, "uid", "0"), "UID still known: {line}");
    assert!(!line.contains("process=curl"), "{line}");
    assert!(tp.terminate().success());

    let extra = Unprivileged::with_extra(&["sys_ptrace", "dac_read_search"]);
    let mut tp = Tpgate::start_wrapped(&lab, &config, &extra.wrapper());
    let line = curl_line(&tp);
    assert!(has_field(&line, "action", "REJECT"), "{line}");
    assert!(line.contains("process=curl"), "{line}");
    assert!(
        !tp.log_text()
            .contains("PROCESS-NAME and PROCESS-PATH rules"),
        "no warning with both capabilities:\n{}",
        tp.log_text()
    );
    assert!(tp.terminate().success());
}
