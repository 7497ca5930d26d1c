//! Sanity check of the test lab itself, without tpgate: the gateway forwards plain traffic
//! both ways, TCP and UDP, IPv4 and IPv6, and every peer sees the other's real address.
//! When this fails, the other e2e failures say nothing about tpgate.

mod lab;

use std::net::SocketAddr;
use std::time::Duration;

use lab::{tcp_echo, udp_exchange, Family, Lab, TcpEchoServer, UdpEchoServer};

fn forwards(family: Family) {
    let Some(lab) = Lab::new("labfwd") else {
        return;
    };
    let a = family.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let bypass = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server_bypass, 80));
    let udp = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
    let on_client = TcpEchoServer::start(&lab.client, SocketAddr::new(a.client, 80));

    let x = tcp_echo(&lab.client, server.addr, b"hello").expect("client -> server tcp");
    assert_eq!(x.echoed, b"hello");
    assert_eq!(
        server.wait_peers(1),
        vec![x.local],
        "server sees the client itself"
    );

    let x = tcp_echo(&lab.client, bypass.addr, b"bypass").expect("client -> bypass addr");
    assert_eq!(x.echoed, b"bypass");
    assert_eq!(bypass.wait_peers(1), vec![x.local]);

    let x = tcp_echo(&lab.server, on_client.addr, b"inbound").expect("server -> client tcp");
    assert_eq!(x.echoed, b"inbound");
    assert_eq!(on_client.wait_peers(1), vec![x.local]);

    let x = udp_exchange(
        &lab.client,
        family,
        udp.addr,
        b"ping",
        Duration::from_secs(5),
    )
    .expect("client -> server udp");
    let (from, data) = x.reply.expect("udp reply");
    assert_eq!((from, data.as_slice()), (udp.addr, b"ping".as_slice()));
    let peers = udp.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0], SocketAddr::new(a.client, x.local.port()));
}

#[test]
fn lab_forwards_without_tpgate_v4() {
    forwards(Family::V4);
}

#[test]
fn lab_forwards_without_tpgate_v6() {
    forwards(Family::V6);
}

#[test]
fn lab_is_removed_on_drop() {
    let Some(lab) = Lab::new("labdrop") else {
        return;
    };
    let names = [
        lab.client.name.clone(),
        lab.gw.name.clone(),
        lab.server.name.clone(),
    ];
    drop(lab);
    let list = lab::run("ip", &["netns", "list"]).ok_or_panic();
    for name in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str())),
            "{name} left behind"
        );
    }
}

const PATIENT_CHILD: &str = "TPGATE_PATIENT_PARENT";

/// What ended a CI run: the test process stopped and resumed while a test waited in a timed
/// `recv_from` (Linux ends such a read with EINTR, handler or not). The lab's patient reads
/// must go on. A child copy of this test binary waits on loopback; this test stops and
/// resumes it (by its pid) while it is inside `recvfrom`, once during a plain read, which
/// must be interrupted (or the test shows nothing), and once during a patient one, which
/// must still get the datagram sent afterwards.
#[test]
fn patient_reads_survive_a_stop_and_resume() {
    use lab::PatientRecv;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::net::UdpSocket;

    let wait = Some(Duration::from_secs(10));
    if let Ok(parent) = std::env::var(PATIENT_CHILD) {
        let parent: SocketAddr = parent.parse().expect("parent address");
        let s = UdpSocket::bind("127.0.0.1:0").expect("child bind");
        s.set_read_timeout(wait).expect("timeout");
        let mut buf = [0u8; 64];
        s.send_to(b"ready", parent).expect("child ready");
        let plain = match s.recv_from(&mut buf) {
            Err(e) => format!("{:?}", e.kind()),
            Ok((n, _)) => format!("data {:?}", &buf[..n]),
        };
        s.send_to(plain.as_bytes(), parent).expect("child report");
        let (n, _) = s.recv_from_patiently(&mut buf).expect("patient read");
        s.send_to(&buf[..n], parent).expect("child echo");
        return;
    }

    let me = UdpSocket::bind("127.0.0.1:0").expect("bind");
    me.set_read_timeout(wait).expect("timeout");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "patient_reads_survive_a_stop_and_resume",
            "--test-threads=1",
        ])
        .env(PATIENT_CHILD, me.local_addr().expect("addr").to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the child");
    let pid = child.id();
    let mut buf = [0u8; 64];
    let mut report = || {
        let (n, from) = me.recv_from(&mut buf).expect("the child's report");
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    };
    // Stops and resumes the child once one of its threads waits in recvfrom (45 on x86-64,
    // 207 on aarch64: the first number of /proc/…/syscall).
    let pause_in_recv = || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("child tasks");
            let waiting = tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("syscall"))
                    .is_ok_and(|s| matches!(s.split_whitespace().next(), Some("45" | "207")))
            });
            if waiting {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the child never read");
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = Pid::from_raw(pid as i32);
        kill(pid, Signal::SIGSTOP).expect("stop the child");
        std::thread::sleep(Duration::from_millis(100));
        kill(pid, Signal::SIGCONT).expect("resume the child");
    };

    let (ready, child_addr) = report();
    assert_eq!(ready, "ready");
    pause_in_recv();
    let (plain, _) = report();
    assert_eq!(plain, "Interrupted", "a plain timed read across a stop");
    pause_in_recv();
    std::thread::sleep(Duration::from_millis(100));
    me.send_to(b"after the stop", child_addr).expect("send");
    let (echo, _) = report();
    assert_eq!(echo, "after the stop", "the patient read's datagram");
    assert!(child.wait().expect("child").success(), "the child failed");
}
