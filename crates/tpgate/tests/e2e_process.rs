//! End-to-end: rules on the local process that owns one of the gateway's own flows
//! (`PROCESS-NAME`, `PROCESS-PATH-REGEX`, `UID`). Real programs connect from the gateway:
//! `curl` is rejected by name, `socat` run as user 65534 by uid, `socat` as root goes
//! through; the same over UDP with `python3`; the server sees only what was allowed, and
//! the log names the process.

mod lab;

use std::net::SocketAddr;
use std::time::Duration;

use lab::{has_field, Family, Lab, TcpEchoServer, Tpgate, UdpEchoServer};

/// The system's Python, which user 65534 may run (a per-user install under /root is not).
const PYTHON: &str = "/usr/bin/python3";

#[test]
fn process_and_uid_rules_decide_local_flows() {
    let Some(lab) = Lab::new("process") else {
        return;
    };
    let config = lab.write_file(
        "tpgate.yaml",
        &lab.proxy_config_text(
            &[],
            &[],
            &[
                "PROCESS-NAME,curl,REJECT",
                "AND,((UID,65534),(PROCESS-PATH-REGEX,/socat$)),REJECT",
                "AND,((UID,65534),(NETWORK,udp)),REJECT",
                "MATCH,DIRECT",
            ],
        ),
    );
    let tp = Tpgate::start(&lab, &config);
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        let host = match family {
            Family::V4 => a.server.to_string(),
            Family::V6 => format!("[{}]", a.server),
        };
        let url = format!("http://{host}:80/");
        let curl = lab.gw.exec("curl", &["-s", "--max-time", "3", &url]);
        assert!(!curl.success(), "curl must be rejected");
        let line = tp
            .wait_for_line(Duration::from_secs(5), |l| {
                l.contains(&format!(" -> {} ", server.addr)) && l.contains("process=curl")
            })
            .unwrap_or_else(|| panic!("no flow line for curl:\n{}", tp.log_text()));
        assert!(has_field(&line, "action", "REJECT"), "{line}");
        assert!(has_field(&line, "uid", "0"), "{line}");

        let target = match family {
            Family::V4 => format!("TCP4:{}:80", a.server),
            Family::V6 => format!("TCP6:[{}]:80", a.server),
        };
        let nobody = lab.gw.exec(
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "socat",
                "-T2",
                "-",
                &target,
            ],
        );
        assert!(
            !nobody.success() || nobody.stdout.is_empty(),
            "uid 65534 must be rejected"
        );
        let line = tp
            .wait_for_line(Duration::from_secs(5), |l| {
                l.contains(&format!(" -> {} ", server.addr)) && l.contains("uid=65534")
            })
            .unwrap_or_else(|| panic!("no flow line for uid 65534:\n{}", tp.log_text()));
        assert!(has_field(&line, "action", "REJECT"), "{line}");
        assert_eq!(
            server.peers(),
            vec![],
            "{family:?}: a rejected flow reached the server"
        );

        let root = lab.gw.exec("socat", &["-T2", "-", &target]);
        assert!(root.success(), "socat as root: {}", root.stderr);
        let peers = server.wait_peers(1);
        assert_eq!(peers.len(), 1);
        let line = tp
            .wait_for_line(Duration::from_secs(5), |l| {
                l.contains(&format!(" -> {} ", server.addr))
                    && l.contains("process=socat")
                    && has_field(l, "uid", "0")
            })
            .unwrap_or_else(|| panic!("no flow line for socat:\n{}", tp.log_text()));
        assert!(has_field(&line, "action", "DIRECT"), "{line}");

        // UDP: the owning process is looked up off the NAT table's lock, while the flow's
        // first datagram waits; uid 65534 is rejected, root's datagram is answered.
        let udp = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
        let send = format!(
            "import socket; s = socket.socket(socket.{af}, socket.SOCK_DGRAM); \
             s.settimeout(2); s.sendto(b'hi', ('{ip}', 7000)); print(s.recv(16).decode())",
            af = if family == Family::V4 {
                "AF_INET"
            } else {
                "AF_INET6"
            },
            ip = a.server,
        );
        let nobody = lab.gw.exec(
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                PYTHON,
                "-c",
                &send,
            ],
        );
        assert!(!nobody.success(), "uid 65534 over udp must be rejected");
        let line = tp
            .wait_for_line(Duration::from_secs(5), |l| {
                l.contains(" udp ")
                    && l.contains(&format!(" -> {} ", udp.addr))
                    && l.contains("uid=65534")
            })
            .unwrap_or_else(|| panic!("no udp flow line for uid 65534:\n{}", tp.log_text()));
        assert!(has_field(&line, "action", "REJECT"), "{line}");
        assert!(
            udp.peers().is_empty(),
            "a rejected datagram reached the server"
        );
        let root = lab.gw.exec(PYTHON, &["-c", &send]);
        assert!(root.success(), "udp as root: {}", root.stderr);
        assert_eq!(root.stdout.trim(), "hi");
        let line = tp
            .wait_for_line(Duration::from_secs(5), |l| {
                l.contains(" udp ")
                    && l.contains(&format!(" -> {} ", udp.addr))
                    && has_field(l, "uid", "0")
            })
            .unwrap_or_else(|| panic!("no udp flow line for root:\n{}", tp.log_text()));
        assert!(line.contains("process=python3"), "{line}");
        assert!(has_field(&line, "action", "DIRECT"), "{line}");
    }
}
