//! The sockmap relay (`TPGATE_SOCKMAP=1`, a diagnostic: splice measured faster, see the
//! README's Performance section) end to end in the lab: DIRECT TCP from the LAN and from
//! the gateway itself, IPv4 and IPv6, joined in the kernel and byte-exact both ways through
//! the client's half-close, relayed (the server sees the gateway); and with BPF denied (the
//! unit's capabilities have no CAP_BPF) the same traffic spliced, with one warning saying
//! why.

mod lab;

use std::net::SocketAddr;
use std::path::PathBuf;

use std::io::{Read, Write};

use lab::{
    state_dir, tcp_connect, tcp_send_all_and_read, Family, Lab, Netns, TcpEchoServer, Tpgate,
    Unprivileged,
};

/// 4 MiB each way: many times the socket buffers, so most of it crosses after the join.
const SIZE: usize = 4 << 20;

fn config(lab: &Lab) -> PathBuf {
    let state = state_dir(lab).join("state.json");
    let text = format!(
        "state-file: {}\nlog-level: debug\n{}",
        state.display(),
        lab.config_text()
    );
    lab.write_file("tpgate.yaml", &text)
}

fn pattern(salt: u8) -> Vec<u8> {
    (0..SIZE)
        .map(|i| ((i * 7 + i / 509) as u8) ^ salt)
        .collect()
}

/// As a client of a request-response protocol (TLS, HTTP) does: a short greeting, answered,
/// and only then the bulk (4 MiB and the half-close, while reading the echo). tpgate joins
/// the sockets while the client waits for the answer, so every byte of the bulk crosses
/// joined. Returns the client's address and what came back after the greeting.
fn greet_then_echo(
    ns: &Netns,
    dst: SocketAddr,
    data: &[u8],
) -> std::io::Result<(SocketAddr, Vec<u8>)> {
    let mut s = tcp_connect(ns, dst)?;
    s.write_all(b"hello")?;
    let mut answer = [0u8; 5];
    s.read_exact(&mut answer)?;
    assert_eq!(&answer, b"hello");
    Ok((s.local_addr()?, tcp_send_all_and_read(&s, data)?))
}

/// Echoes 4 MiB from the LAN and from the gateway to the server, over IPv4 and IPv6; checks
/// every byte and that the server saw the gateway. Returns the clients' addresses.
fn echo_everywhere(lab: &Lab, tp: &Tpgate<'_>) -> Vec<SocketAddr> {
    let mut clients = Vec::new();
    for family in [Family::V4, Family::V6] {
        let a = family.addrs();
        let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
        for (ns, what, salt) in [(&lab.client, "LAN", 0x11), (&lab.gw, "local", 0x22)] {
            let data = pattern(salt);
            let (local, echoed) = greet_then_echo(ns, server.addr, &data)
                .unwrap_or_else(|e| panic!("{what} TCP {family:?}: {e}\n{}", tp.log_text()));
            assert!(echoed == data, "{what} {family:?}: the echo differs");
            tp.expect_flow("tcp", local, server.addr, "DIRECT");
            clients.push(local);
        }
        assert!(
            server.peers().iter().all(|p| p.ip() == a.gw_wan),
            "the server must see the gateway: the flows were relayed"
        );
    }
    clients
}

/// The debug line that ends `client`'s relay: `... closed up=N down=N relay=PATH`.
fn ended_line(tp: &Tpgate<'_>, client: SocketAddr) -> String {
    let from = format!("tcp {client} -> ");
    let found = tp.wait_for_line(std::time::Duration::from_secs(5), |l| {
        l.contains(&from) && l.contains(" closed up=")
    });
    found.unwrap_or_else(|| panic!("no end line for {client}\n{}", tp.log_text()))
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .to_owned()
}

#[test]
fn direct_tcp_is_joined_in_the_kernel_and_byte_exact() {
    let Some(lab) = Lab::new("sockmap") else {
        return;
    };
    let wrapper = ["env".to_owned(), "TPGATE_SOCKMAP=1".to_owned()];
    let tp = Tpgate::start_wrapped(&lab, &config(&lab), &wrapper);
    let clients = echo_everywhere(&lab, &tp);
    if tp.log_text().contains("built without its BPF program") {
        eprintln!("skipped: tpgate was built without clang, so without its BPF program");
        return;
    }
    for client in clients {
        let line = ended_line(&tp, client);
        assert_eq!(
            field(&line, "relay"),
            "sockmap",
            "joined in the kernel: {line}"
        );
        let total = (SIZE + 5).to_string();
        assert_eq!(field(&line, "up"), total, "every byte counted: {line}");
        assert_eq!(field(&line, "down"), total, "every byte counted: {line}");
    }
    assert!(
        !tp.log_text().contains("sockmap relay unavailable"),
        "{}",
        tp.log_text()
    );
}

#[test]
fn without_cap_bpf_direct_tcp_is_spliced_and_says_why() {
    let Some(lab) = Lab::new("sockmapno") else {
        return;
    };
    let mut wrapper = Unprivileged::unit().wrapper();
    wrapper.extend(["env".to_owned(), "TPGATE_SOCKMAP=1".to_owned()]);
    let tp = Tpgate::start_wrapped(&lab, &config(&lab), &wrapper);
    for client in echo_everywhere(&lab, &tp) {
        let line = ended_line(&tp, client);
        assert_eq!(field(&line, "relay"), "splice", "{line}");
    }
    let warnings: Vec<String> = tp
        .lines()
        .into_iter()
        .filter(|l| l.contains("sockmap relay unavailable, DIRECT flows use splice"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {warnings:#?}");
}
