//! End-to-end: a LAN host floods the gateway (thousands of idle TCP connections, then UDP
//! from a thousand kernel-chosen source ports) under small `limits` (max-connections 2000,
//! per-source 500), while a second LAN address keeps opening new connections and UDP flows.
//! The flooding address gets exactly its cap (proved at the server, which holds what was
//! relayed), the rest is refused and counted in `/metrics`; the other address is never
//! refused (every exchange echoed by the server); the daemon's memory stays small and the
//! log holds a few refusal lines, not one per flow.

mod lab;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab::{
    echo_exact, poll, Api, Family, Lab, PatientRecv, TcpEchoServer, Tpgate, UdpEchoServer,
    CONTROLLER,
};
use socket2::{Domain, Socket, Type};

const MAX: usize = 2000;
const PER_SOURCE: usize = 500;
/// Idle connections the flooding address opens.
const TCP_FLOOD: usize = 3000;
/// UDP flows (one datagram each, from its own source port) it starts afterwards.
const UDP_FLOOD: usize = 1000;
/// The second LAN client's address, added to the client's interface.
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 3));

/// A TCP server that accepts and holds every connection without reading, so the flows
/// relayed to it stay open (and keep their slots) for the whole test.
struct Sink {
    held: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn start(lab: &Lab, addr: SocketAddr) -> Self {
        let listener = lab
            .server
            .enter(|| lab::tcp_listener(addr))
            .expect("bind sink");
        listener.set_nonblocking(true).expect("nonblocking");
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (held, stop) = (held.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => held.lock().expect("sink").push(s),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => eprintln!("sink accept: {e}"),
                    }
                }
            })
        };
        Self {
            held,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.held.lock().expect("sink").len()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Enough descriptors for the flood's sockets, the sink's and the servers' in this process
/// (the test's own limit only; nothing global changes).
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = 16_384;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < want {
        let hard = hard.max(want);
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("raise RLIMIT_NOFILE");
    }
}

/// The daemon's resident memory in bytes, from /proc.
fn rss(tp: &Tpgate<'_>) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", tp.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// The value of the metric line that starts with `prefix` (name and labels).
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or_else(|| panic!("no `{prefix}` in:\n{text}"), |v| v as u64)
}

/// UDP datagrams the gateway namespace's kernel dropped for a full receive buffer.
fn udp_rcvbuf_errors(lab: &Lab) -> u64 {
    let snmp = lab.gw.sh("cat", &["/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().expect("Udp header"), udp.next().expect("Udp"));
    let i = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .expect("RcvbufErrors");
    values
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

/// A TCP connection from `src` (any port) to `dst`.
fn connect_from(src: IpAddr, dst: SocketAddr) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    s.connect_timeout(&dst.into(), Duration::from_secs(5))?;
    let s = TcpStream::from(s);
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// One new TCP connection and one new UDP flow from [`OTHER`], each echoed by the server;
/// the error says which failed.
fn other_round(tcp: SocketAddr, udp: SocketAddr, round: usize) -> Result<(), String> {
    let payload = format!("other client, round {round}");
    let s = connect_from(OTHER, tcp).map_err(|e| format!("tcp connect: {e}"))?;
    let echoed = echo_exact(&s, payload.as_bytes()).map_err(|e| format!("tcp echo: {e}"))?;
    if echoed != payload.as_bytes() {
        return Err("tcp echo differs".into());
    }
    let u = UdpSocket::bind(SocketAddr::new(OTHER, 0)).map_err(|e| e.to_string())?;
    u.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 128];
    // A lost datagram is resent on the same flow (what UDP clients do), at most 3 times.
    for _ in 0..3 {
        u.send_to(payload.as_bytes(), udp)
            .map_err(|e| format!("udp send: {e}"))?;
        if let Ok((n, from)) = u.recv_from_patiently(&mut buf) {
            return if (from, &buf[..n]) == (udp, payload.as_bytes()) {
                Ok(())
            } else {
                Err(format!("udp reply from {from} differs"))
            };
        }
    }
    Err("udp: no echo".into())
}

/// The floods take turns: each measures what its own load does (refusals, kernel drops,
/// memory), which the other's would blur on a small machine.
static ONE_FLOOD_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The other client, from [`OTHER`], all along a flood: a new TCP connection and a new UDP
/// flow each round ([`other_round`]), while `flooding` and 5 rounds more (at most 400 in
/// all). Returns the failed rounds and how many rounds ran.
fn other_client(
    lab: &Lab,
    tcp: SocketAddr,
    udp: SocketAddr,
    flooding: &AtomicBool,
) -> (Vec<String>, usize) {
    lab.client.enter(|| {
        let mut failures = Vec::new();
        let (mut rounds, mut after) = (0, 0);
        while rounds < 400 {
            if !flooding.load(Ordering::Relaxed) {
                after += 1;
                if after > 5 {
                    break;
                }
            }
            if let Err(e) = other_round(tcp, udp, rounds) {
                failures.push(format!("round {rounds}: {e}"));
            }
            rounds += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        (failures, rounds)
    })
}

#[test]
fn a_flooding_lan_host_gets_its_cap_and_the_others_still_get_through() {
    let _turn = ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let Some(lab) = Lab::new("floods") else {
        return;
    };
    raise_open_files();
    let a = Family::V4.addrs();
    lab.client.sh(
        "ip",
        &["addr", "add", &format!("{OTHER}/24"), "dev", "eth0"],
    );
    let text = lab.config_text()
        + &format!(
            "external-controller: {CONTROLLER}\n\
             limits:\n  max-connections: {MAX}\n  per-source: {PER_SOURCE}\n"
        );
    let tp = Tpgate::start(&lab, &lab.write_file("tpgate.yaml", &text));
    let sink = Sink::start(&lab, SocketAddr::new(a.server, 9000));
    let udp_sink = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 9001));
    let echo = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let udp_echo = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
    let api = Api::new(&lab, None);
    let rss_before = rss(&tp);
    let rcvbuf_before = udp_rcvbuf_errors(&lab);

    // The other client works all along: a new connection and a new UDP flow each round.
    let flooding = AtomicBool::new(true);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| other_client(&lab, echo.addr, udp_echo.addr, &flooding));

        // The flood: idle TCP connections from the first address, then UDP from as many source
        // ports, each its own flow. Connections past the cap are reset by the gateway.
        let started = Instant::now();
        let (held, connected) = lab.client.enter(|| {
            let mut held = Vec::with_capacity(TCP_FLOOD);
            let mut connected = 0;
            for _ in 0..TCP_FLOOD {
                // Reset already while connecting (the gateway accepted and refused it
                // before `connect` looked): it reached tpgate all the same.
                match connect_from(a.client, sink_addr(a.server)) {
                    Ok(s) => {
                        connected += 1;
                        held.push(s);
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => connected += 1,
                    Err(e) => eprintln!("flood connect: {e}"),
                }
            }
            (held, connected)
        });
        assert!(
            connected >= TCP_FLOOD * 9 / 10,
            "the handshakes complete: {connected} of {TCP_FLOOD}"
        );
        let udp_held = lab.client.enter(|| {
            let mut held = Vec::with_capacity(UDP_FLOOD);
            for i in 0..UDP_FLOOD {
                let u = UdpSocket::bind(SocketAddr::new(a.client, 0)).expect("bind flood port");
                u.send_to(b"flood", udp_sink.addr).expect("flood send");
                held.push(u);
                // Paced over about 6 s: the listener's receive buffer takes it all, and
                // the refusals span more than one log interval (5 s).
                if i % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
            held
        });
        let flood_time = started.elapsed();

        // The flooding address holds exactly its cap, all TCP (it came first).
        let relayed = poll(Duration::from_secs(20), || {
            Some(sink.count()).filter(|&n| n >= PER_SOURCE)
        });
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            (relayed, sink.count()),
            (Some(PER_SOURCE), PER_SOURCE),
            "connections relayed to the server for the flooding address:\n{}",
            tail(&tp)
        );
        flooding.store(false, Ordering::Relaxed);
        let (failures, rounds) = other.join().expect("other client thread");
        assert!(
            failures.is_empty(),
            "the other client was refused: {failures:#?}"
        );
        assert!(rounds >= 5, "the other client ran {rounds} rounds");
        assert!(
            udp_sink.peers().is_empty(),
            "no flood datagram passes once the address holds its cap: {}",
            udp_sink.peers().len()
        );
        assert_eq!(
            echo.peers().len(),
            rounds,
            "every round's connection at the server"
        );

        // The counters: every refusal is the flooding address's, none for the total.
        let m = api.request("GET", "/metrics", None);
        assert_eq!(m.status, 200, "{}", m.body);
        let refused = |net: &str, reason: &str| {
            metric(
                &m.body,
                &format!("tpgate_flows_refused_total{{network=\"{net}\",reason=\"{reason}\"}}"),
            )
        };
        let kernel_dropped = udp_rcvbuf_errors(&lab) - rcvbuf_before;
        assert_eq!(
            refused("tcp", "per-source"),
            (connected - PER_SOURCE) as u64
        );
        assert_eq!(
            refused("udp", "per-source") + kernel_dropped,
            UDP_FLOOD as u64,
            "refused UDP flows (the kernel dropped {kernel_dropped})"
        );
        assert!(
            kernel_dropped < 100,
            "{kernel_dropped} flood datagrams lost before tpgate"
        );
        assert_eq!(refused("tcp", "max-connections"), 0);
        assert_eq!(refused("udp", "max-connections"), 0);
        assert_eq!(
            metric(&m.body, "tpgate_flow_limit{limit=\"per-source\"}"),
            PER_SOURCE as u64
        );

        // A few lines, not one per refusal: the first, then at most one per 5 s per address.
        let lines: Vec<String> = tp
            .lines()
            .into_iter()
            .filter(|l| l.contains("refused: limits."))
            .collect();
        let bound = 2 + flood_time.as_secs() as usize / 5;
        assert!(
            !lines.is_empty() && lines.len() <= bound,
            "{} refusal lines over {flood_time:?} (at most {bound}):\n{}",
            lines.len(),
            lines.join("\n")
        );
        let logged: u64 = lines
            .iter()
            .filter_map(|l| l.split("; ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
            .sum();
        let all = refused("tcp", "per-source") + refused("udp", "per-source");
        assert!(
            lines.len() >= 2 && logged > 1 && logged <= all,
            "the lines count the refusals between them ({logged} of {all}):\n{}",
            lines.join("\n")
        );
        assert!(
            lines
                .iter()
                .all(|l| l.contains(&format!("from {}", a.client))
                    && l.contains("limits.per-source (500)")
                    && !l.contains(&OTHER.to_string())),
            "{lines:#?}"
        );

        // Memory: 500 held flows and 3500 refusals cost little. The bound allows 16 KiB per
        // flow up to max-connections (2000 x 16 KiB = 32 MiB) over the daemon at rest; what
        // the flood itself leaves (refused sockets, log lines) must fit in it too.
        let rss_after = rss(&tp);
        eprintln!(
            "rss before {} KiB, after {} KiB; flood {flood_time:?}; {rounds} rounds",
            rss_before / 1024,
            rss_after / 1024
        );
        assert!(
            rss_after < rss_before + 32 * 1024 * 1024,
            "rss grew from {rss_before} to {rss_after}"
        );
        drop((held, udp_held));
    });
}

fn sink_addr(server: IpAddr) -> SocketAddr {
    SocketAddr::new(server, 9000)
}

/// The log's last lines, for failure messages.
fn tail(tp: &Tpgate<'_>) -> String {
    let lines = tp.lines();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Half-open connections a SYN flood leaves on the gateway.
const SYN_FLOOD: usize = 50_000;
/// How many of them are in flight at once (sockets held by the flooding client).
const SYN_BATCH: usize = 10_000;

/// TCP connections tpgate has taken in, from `/metrics` (every series of
/// `tpgate_flows_total` with `network="tcp"`).
fn tcp_flows_total(api: &Api) -> u64 {
    let m = api.request("GET", "/metrics", None);
    assert_eq!(m.status, 200, "{}", m.body);
    m.body
        .lines()
        .filter(|l| l.starts_with("tpgate_flows_total{") && l.contains("network=\"tcp\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `TcpExt: SyncookiesSent` of the gateway namespace: SYN-ACKs the kernel answered with a
/// cookie because a listener's SYN queue was full.
fn syncookies_sent(lab: &Lab) -> u64 {
    let netstat = lab.gw.sh("cat", &["/proc/net/netstat"]);
    let mut ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (
        ext.next().expect("TcpExt header"),
        ext.next().expect("TcpExt"),
    );
    let i = names
        .split_whitespace()
        .position(|n| n == "SyncookiesSent")
        .expect("SyncookiesSent");
    values
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

/// A LAN host sends 50,000 SYNs through the gateway and never completes a handshake (the
/// client's own firewall, in its namespace, drops the SYN-ACKs). The kernel answers them from
/// the listeners' SYN queues, with SYN cookies once they overflow: no half-open connection
/// ever reaches tpgate (no flow, no log line, no refusal, no memory), and another LAN address
/// keeps getting new TCP connections and UDP flows through all along.
#[test]
fn a_syn_flood_never_reaches_tpgate_and_the_others_still_get_through() {
    let _turn = ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let Some(lab) = Lab::new("synflood") else {
        return;
    };
    raise_open_files();
    let a = Family::V4.addrs();
    lab.client.sh(
        "ip",
        &["addr", "add", &format!("{OTHER}/24"), "dev", "eth0"],
    );
    // The flood's ports: wide, so 10,000 connections at once have distinct ones.
    lab.client.sh(
        "sysctl",
        &["-qw", "net.ipv4.ip_local_port_range=10000 65000"],
    );
    let flood_port = 9002;
    lab.client.sh(
        "nft",
        &[&format!(
            "add table inet synflood; \
             add chain inet synflood input {{ type filter hook input priority 0; }}; \
             add rule inet synflood input tcp sport {flood_port} tcp flags & (syn | ack) == syn | ack drop"
        )],
    );
    let text = lab.config_text() + &format!("external-controller: {CONTROLLER}\n");
    let tp = Tpgate::start(&lab, &lab.write_file("tpgate.yaml", &text));
    let echo = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let udp_echo = UdpEchoServer::start(&lab.server, SocketAddr::new(a.server, 7000));
    let api = Api::new(&lab, None);
    let rss_before = rss(&tp);
    let flows_before = tcp_flows_total(&api);
    let cookies_before = syncookies_sent(&lab);
    let target = SocketAddr::new(a.server, flood_port);

    let flooding = AtomicBool::new(true);
    let (sent, flood_time, rounds) = std::thread::scope(|scope| {
        let other = scope.spawn(|| other_client(&lab, echo.addr, udp_echo.addr, &flooding));
        let started = Instant::now();
        let sent = lab.client.enter(|| {
            let mut sent = 0;
            for _ in 0..SYN_FLOOD / SYN_BATCH {
                let mut open = Vec::with_capacity(SYN_BATCH);
                for _ in 0..SYN_BATCH {
                    let s = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None)
                        .expect("socket");
                    s.bind(&SocketAddr::new(a.client, 0).into()).expect("bind");
                    match s.connect(&target.into()) {
                        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => sent += 1,
                        other => panic!("a flood connect must stay in progress: {other:?}"),
                    }
                    open.push(s);
                }
                // Closing a connection still in SYN_SENT sends nothing: the gateway keeps
                // its half-open state until it gives up.
                std::thread::sleep(Duration::from_millis(500));
                drop(open);
            }
            sent
        });
        let flood_time = started.elapsed();
        flooding.store(false, Ordering::Relaxed);
        let (failures, rounds) = other.join().expect("other client thread");
        assert!(
            failures.is_empty(),
            "the other client was refused during the SYN flood: {failures:#?}"
        );
        (sent, flood_time, rounds)
    });
    assert_eq!(sent, SYN_FLOOD);
    assert!(rounds >= 5, "the other client ran {rounds} rounds");
    assert_eq!(
        echo.peers().len(),
        rounds,
        "every round's connection at the server"
    );
    let cookies = syncookies_sent(&lab) - cookies_before;
    assert!(
        cookies > 0,
        "the SYN queues overflowed and the kernel answered with cookies ({cookies})"
    );
    assert_eq!(
        tcp_flows_total(&api) - flows_before,
        rounds as u64,
        "tpgate took in the other client's connections and none of the flood's"
    );
    let flood_lines: Vec<String> = tp
        .lines()
        .into_iter()
        .filter(|l| l.contains(&format!(":{flood_port}")))
        .collect();
    assert!(
        flood_lines.is_empty(),
        "the flood reached tpgate: {flood_lines:#?}"
    );
    let rss_after = rss(&tp);
    eprintln!(
        "SYN flood: {sent} SYNs in {flood_time:?}, {cookies} cookies; rss {} -> {} KiB; {rounds} rounds",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        rss_after < rss_before + 8 * 1024 * 1024,
        "rss grew from {rss_before} to {rss_after}"
    );
}
