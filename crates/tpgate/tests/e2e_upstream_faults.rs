//! Upstream faults, in the namespace lab with two real upstream proxies (microsocks): `bad`
//! on one WAN host and `good` (50 ms slower, so url-test prefers `bad`) on another. The
//! fault hits `bad` while flows run:
//!
//! - it dies mid-transfer (its process is killed, the kernel resets its connections);
//! - it blackholes: its host's own nftables drops everything on its port, so tpgate gets
//!   no RST and no FIN, on a connection moving bytes and on an idle one;
//! - it hangs: the process is frozen (SIGSTOP), so its kernel still accepts TCP but the
//!   SOCKS5 handshake is never answered.
//!
//! In each case the flows through `bad` end within their timeouts (the kernel's RST at once,
//! the upstream user timeout and keepalive about 20 s, the handshake timeout 10 s), each with
//! ONE line saying which route and hop failed and why; the fallback and url-test groups
//! (checked every second) move to `good`; and a DIRECT bulk transfer and one through `good`
//! keep moving bytes meanwhile and end intact.

mod lab;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lab::{
    assert_via, health_addr, health_url, lan_tcp, poll, Api, Family, Http204Server, Lab,
    PatientRead, ProcKind, ProcUpstream, TcpEchoServer, Tpgate,
};

/// The controller's secret in these tests.
const SECRET: &str = "lab-secret";
/// Latency `good` gets in each direction: enough that url-test ranks it after `bad`.
const GOOD_DELAY: Duration = Duration::from_millis(50);
/// A health check's time limit (the groups' `timeout`, ms): several round trips through
/// `good`, with room for a loaded machine.
const CHECK_TIMEOUT_MS: u64 = 2000;
/// How long a group may take to move once its member failed: the check in flight, one
/// interval (1 s), one check that times out (2 s), and generous slack.
const MOVE_LIMIT: Duration = Duration::from_secs(15);
/// A reset upstream ends its flows at once; the margin is for a loaded machine.
const RESET_LIMIT: Duration = Duration::from_secs(10);
/// A blackholed upstream ends its flows after about 20 s (tpgate's upstream user timeout
/// and keepalive); far below the relay's 300 s idle limit, which would end them otherwise.
const BLACKHOLE_LIMIT: Duration = Duration::from_secs(50);
/// A handshake that is never answered fails after 10 s (tpgate's handshake timeout).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(30);

/// Bytes per write of a load flow.
const CHUNK: usize = 64 * 1024;
/// Every load loop ends after this long or this many chunks, whatever the test does.
const LOAD_TIME: Duration = Duration::from_secs(150);
const LOAD_CHUNKS: u64 = 100_000;
/// Bytes a load may have sent and not yet got back. microsocks copies both directions in
/// one thread with blocking writes: with more in flight, a full-duplex echo through it can
/// fill both ways' buffers and wedge it, whatever tpgate does.
const LOAD_WINDOW: u64 = 2 * CHUNK as u64;
/// How long a load's reader waits for the rest of the echo once its writer stopped.
const LOAD_DRAIN: Duration = Duration::from_secs(20);

/// Echo servers' ports, each routed its own way by the rules below.
const VIA_FALLBACK: u16 = 5001;
const VIA_GOOD: u16 = 5002;
const VIA_DIRECT: u16 = 5003;
const VIA_BAD: u16 = 5004;
const VIA_URL_TEST: u16 = 5005;
/// Also through the fallback group: a flow made while the group still uses `bad`.
const VIA_FALLBACK_EARLY: u16 = 5006;

/// The lab, the upstreams, the echo servers and tpgate, with both groups on `bad`.
struct Scene<'l> {
    lab: &'l Lab,
    bad: ProcUpstream<'l>,
    good: ProcUpstream<'l>,
    tp: Tpgate<'l>,
    api: Api<'l>,
    servers: Vec<TcpEchoServer>,
    _health: Http204Server,
}

impl<'l> Scene<'l> {
    fn start(lab: &'l Lab) -> Self {
        let health = Http204Server::start(&lab.server, health_addr());
        let server = Family::V4.addrs().server;
        let ports = [
            VIA_FALLBACK,
            VIA_GOOD,
            VIA_DIRECT,
            VIA_BAD,
            VIA_URL_TEST,
            VIA_FALLBACK_EARLY,
        ];
        let servers = ports
            .into_iter()
            .map(|port| TcpEchoServer::start(&lab.server, SocketAddr::new(server, port)))
            .collect();
        let microsocks = ProcKind::Microsocks { auth: None };
        let bad = ProcUpstream::start(lab, 0, microsocks.clone());
        let good = ProcUpstream::start_delayed(lab, 1, microsocks, GOOD_DELAY);
        let group = |name: &str, kind: &str| {
            format!(
                "{{name: {name}, type: {kind}, proxies: [bad, good], url: \"{}\", interval: 1, \
                 timeout: {CHECK_TIMEOUT_MS}, lazy: false}}",
                health_url()
            )
        };
        let rules = [
            format!("DST-PORT,{VIA_GOOD},good"),
            format!("DST-PORT,{VIA_DIRECT},DIRECT"),
            format!("DST-PORT,{VIA_BAD},bad"),
            format!("DST-PORT,{VIA_URL_TEST},auto"),
            "MATCH,safe".to_owned(),
        ];
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        let text = lab.proxy_config_text(
            &[bad.proxy_yaml("bad"), good.proxy_yaml("good")],
            &[group("safe", "fallback"), group("auto", "url-test")],
            &rules,
        ) + &format!("secret: {SECRET}\n");
        let config = lab.write_file("tpgate.yaml", &text);
        let tp = Tpgate::start(lab, &config);
        let api = Api::new(lab, Some(SECRET));
        let scene = Self {
            lab,
            bad,
            good,
            tp,
            api,
            servers,
            _health: health,
        };
        // Both groups have checked both members and use `bad`, the first and the fastest.
        scene.wait_checked();
        scene.api.wait_now("safe", "bad", MOVE_LIMIT);
        scene.api.wait_now("auto", "bad", MOVE_LIMIT);
        scene.expect_route(VIA_FALLBACK, scene.bad.egress(Family::V4), "safe/bad");
        scene.expect_route(VIA_URL_TEST, scene.bad.egress(Family::V4), "auto/bad");
        scene
    }

    /// Waits until url-test has measured both members (it then prefers `bad`).
    fn wait_checked(&self) {
        let measured = poll(MOVE_LIMIT, || {
            let p = self.api.proxy("good");
            let history = p["history"].as_array().map_or(0, Vec::len);
            (history > 0 && p["alive"] == true).then_some(())
        });
        assert!(
            measured.is_some(),
            "no successful health check through good: {}",
            self.api.proxy("good")
        );
    }

    fn server(&self, port: u16) -> &TcpEchoServer {
        self.servers
            .iter()
            .find(|s| s.addr.port() == port)
            .expect("an echo server on that port")
    }

    fn dst(&self, port: u16) -> SocketAddr {
        self.server(port).addr
    }

    /// One short flow to `port`: the server saw `egress`, tpgate logged `action=<route>`.
    fn expect_route(&self, port: u16, egress: IpAddr, route: &str) {
        let server = self.server(port);
        let via = lan_tcp(self.lab, server, 1000);
        assert_via(via, egress, route);
        self.tp.expect_flow("tcp", via.local, server.addr, route);
    }

    /// A steady load to `port` from the LAN client.
    fn load(&self, port: u16, pause: Duration) -> Load {
        Load::start(self.lab, self.dst(port), pause)
    }

    /// An echo to `port` that has moved some bytes and now sits idle, with a thread waiting
    /// for its end.
    fn idle_flow(&self, port: u16) -> IdleFlow {
        IdleFlow::start(self.lab, self.dst(port), true)
    }

    /// Waits for both groups to leave `bad` (within [`MOVE_LIMIT`] of the `fault`), then
    /// checks that new flows through them go out through `good`.
    fn groups_move_to_good(&self, fault: Instant) {
        let limit = MOVE_LIMIT.saturating_sub(fault.elapsed());
        self.api.wait_now("safe", "good", limit);
        self.api.wait_now("auto", "good", limit);
        eprintln!("both groups use good {:?} after the fault", fault.elapsed());
        let good = self.good.egress(Family::V4);
        self.expect_route(VIA_FALLBACK, good, "safe/good");
        self.expect_route(VIA_URL_TEST, good, "auto/good");
    }

    /// The lines tpgate logged about the flow `local -> dst` besides its first
    /// (`action=...`) line; panics unless the first line shows `route`.
    fn end_lines(&self, local: SocketAddr, dst: SocketAddr, route: &str) -> Vec<String> {
        self.tp.expect_flow("tcp", local, dst, route);
        let flow = format!("tcp {local} -> {dst} ");
        self.tp
            .lines()
            .into_iter()
            .filter(|l| l.contains(&flow) && !l.contains(" action="))
            .collect()
    }

    /// Waits (5 s) for the line ending flow `local -> dst` and checks it is the only one and
    /// says `what` (the route, the hop and the reason).
    fn expect_one_end_line(&self, local: SocketAddr, dst: SocketAddr, route: &str, what: &[&str]) {
        let flow = format!("tcp {local} -> {dst} ");
        let line = self
            .tp
            .wait_for_line(Duration::from_secs(5), |l| {
                l.contains(&flow) && !l.contains(" action=")
            })
            .unwrap_or_else(|| {
                panic!(
                    "no line ended the flow {local} -> {dst}; log:\n{}",
                    self.tp.log_text()
                )
            });
        for w in what {
            assert!(line.contains(w), "the end line lacks {w:?}: {line}");
        }
        let lines = self.end_lines(local, dst, route);
        assert_eq!(lines.len(), 1, "one end line per flow: {lines:#?}");
    }
}

/// What a load flow did: bytes echoed back intact, or how it broke and when.
#[derive(Debug)]
struct LoadEnd {
    echoed: u64,
    broke: Option<(Instant, String)>,
}

/// A flow from the LAN client that writes a byte pattern (in `CHUNK`s, with `pause` between
/// them) while another thread reads the echo back and checks every byte. Bounded by
/// [`LOAD_TIME`] and [`LOAD_CHUNKS`].
struct Load {
    local: SocketAddr,
    /// Bytes echoed back intact so far.
    echoed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
    reader: Option<JoinHandle<LoadEnd>>,
    /// When and how the flow broke (the writer or the reader, whichever saw it first).
    broke: Arc<Mutex<Option<(Instant, String)>>>,
}

/// Byte `k` of every load's stream.
fn byte_at(k: u64) -> u8 {
    (k.wrapping_mul(31) ^ (k >> 11)) as u8
}

impl Load {
    fn start(lab: &Lab, dst: SocketAddr, pause: Duration) -> Self {
        let stream = lab
            .client
            .enter(|| TcpStream::connect_timeout(&dst, Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("load to {dst}: {e}"));
        let local = stream.local_addr().expect("local addr");
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .expect("write timeout");
        // Short reads, so the reader sees the writer's end; the load's own bound is time.
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let (echoed, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let broke = Arc::new(Mutex::new(None));
        let sent = Arc::new(AtomicU64::new(0));
        let writer_done = Arc::new(AtomicBool::new(false));
        let writer = {
            let mut w = stream.try_clone().expect("clone");
            let (stop, broke) = (stop.clone(), broke.clone());
            let (sent, done) = (sent.clone(), writer_done.clone());
            let echoed = echoed.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut k = 0u64;
                let mut chunk = vec![0u8; CHUNK];
                for _ in 0..LOAD_CHUNKS {
                    let over = || stop.load(Ordering::Relaxed) || start.elapsed() > LOAD_TIME;
                    // Once the echo broke (an upstream's FIN reached the reader) the writer
                    // goes on like an upload would, until writing fails or the test stops it.
                    let broken = || broke.lock().expect("lock").is_some();
                    while !over() && !broken() && k > echoed.load(Ordering::Relaxed) + LOAD_WINDOW {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    if over() {
                        break;
                    }
                    for b in &mut chunk {
                        *b = byte_at(k);
                        k += 1;
                    }
                    if let Err(e) = w.write_all(&chunk) {
                        note(&broke, format!("write: {e}"));
                        break;
                    }
                    sent.store(k, Ordering::Relaxed);
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                }
                done.store(true, Ordering::Relaxed);
            })
        };
        let reader = {
            let mut r = stream;
            let (echoed, broke) = (echoed.clone(), broke.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut buf = vec![0u8; CHUNK];
                let mut got = 0u64;
                let mut drained_from: Option<Instant> = None;
                let end = |got, broke: &Mutex<Option<(Instant, String)>>| LoadEnd {
                    echoed: got,
                    broke: broke.lock().expect("lock").clone(),
                };
                loop {
                    if writer_done.load(Ordering::Relaxed) {
                        if got == sent.load(Ordering::Relaxed) {
                            let _ = r.shutdown(Shutdown::Both);
                            return end(got, &broke);
                        }
                        let since = *drained_from.get_or_insert_with(Instant::now);
                        if since.elapsed() > LOAD_DRAIN {
                            note(&broke, format!("echo stopped at {got} bytes"));
                            return end(got, &broke);
                        }
                    }
                    if start.elapsed() > LOAD_TIME + LOAD_DRAIN {
                        note(&broke, "load time exceeded".to_owned());
                        return end(got, &broke);
                    }
                    match r.read_patiently(&mut buf) {
                        Ok(0) => {
                            note(&broke, format!("end of file after {got} bytes"));
                            return end(got, &broke);
                        }
                        Ok(n) => {
                            if let Some(i) = (0..n).find(|&i| buf[i] != byte_at(got + i as u64)) {
                                note(&broke, format!("wrong byte at {}", got + i as u64));
                                return end(got, &broke);
                            }
                            got += n as u64;
                            echoed.store(got, Ordering::Relaxed);
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                                    | io::ErrorKind::Interrupted
                            ) => {}
                        Err(e) => {
                            note(&broke, format!("read: {e}"));
                            return end(got, &broke);
                        }
                    }
                }
            })
        };
        Self {
            local,
            echoed,
            stop,
            writer: Some(writer),
            reader: Some(reader),
            broke,
        }
    }

    fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }

    /// Waits (10 s) until some bytes came back: the flow is established and moving.
    fn wait_moving(&self, what: &str) {
        let moving = poll(Duration::from_secs(10), || {
            (self.echoed() > 0).then_some(())
        });
        assert!(moving.is_some(), "{what}: no echo ({:?})", self.broke());
    }

    fn broke(&self) -> Option<(Instant, String)> {
        self.broke.lock().expect("lock").clone()
    }

    /// Waits up to `limit` for the flow to break; returns when and how.
    fn wait_broken(&self, limit: Duration) -> Option<(Instant, String)> {
        poll(limit, || self.broke())
    }

    /// Stops writing, waits for the rest of the echo and returns how the flow ended.
    fn finish(mut self) -> LoadEnd {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            w.join().expect("load writer");
        }
        self.reader
            .take()
            .expect("reader")
            .join()
            .expect("load reader")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Records the first way a load broke.
fn note(broke: &Mutex<Option<(Instant, String)>>, what: String) {
    let mut b = broke.lock().expect("lock");
    if b.is_none() {
        *b = Some((Instant::now(), what));
    }
}

/// A flow that sent a little (and, with `echoed`, got it back) and then sits idle; a thread
/// reads until it ends.
struct IdleFlow {
    local: SocketAddr,
    ended: Arc<Mutex<Option<(Instant, String)>>>,
}

impl IdleFlow {
    fn start(lab: &Lab, dst: SocketAddr, echoed: bool) -> Self {
        let mut stream = lab
            .client
            .enter(|| TcpStream::connect_timeout(&dst, Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("idle flow to {dst}: {e}"));
        let local = stream.local_addr().expect("local addr");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(b"hello, then silence").expect("write");
        if echoed {
            let mut back = [0u8; 19];
            stream.read_exact(&mut back).expect("echo before idling");
            assert_eq!(&back, b"hello, then silence");
        }
        // Far longer than any limit of the test: the end must come from the other side.
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        let ended = Arc::new(Mutex::new(None));
        {
            let ended = ended.clone();
            std::thread::spawn(move || {
                let mut b = [0u8; 16];
                let how = match stream.read_patiently(&mut b) {
                    Ok(0) => "end of file".to_owned(),
                    Ok(n) => format!("{n} unexpected bytes"),
                    Err(e) => e.to_string(),
                };
                *ended.lock().expect("lock") = Some((Instant::now(), how));
            });
        }
        Self { local, ended }
    }

    fn wait_ended(&self, limit: Duration) -> Option<(Instant, String)> {
        poll(limit, || self.ended.lock().expect("lock").clone())
    }
}

/// The loads that must not notice the fault: DIRECT and through `good`, both throttled a
/// little so the two cores stay free for the rest.
struct Bystanders {
    direct: Load,
    good: Load,
}

impl Bystanders {
    fn start(scene: &Scene<'_>) -> Self {
        let b = Self {
            direct: scene.load(VIA_DIRECT, Duration::from_millis(5)),
            good: scene.load(VIA_GOOD, Duration::from_millis(5)),
        };
        b.direct.wait_moving("DIRECT load");
        b.good.wait_moving("load through good");
        b
    }

    fn echoed(&self) -> (u64, u64) {
        (self.direct.echoed(), self.good.echoed())
    }

    /// They moved bytes since `before`, and end intact.
    fn check(self, before: (u64, u64), what: &str) {
        let now = self.echoed();
        assert!(
            now.0 > before.0 && now.1 > before.1,
            "{what}: bystanders stalled (echoed before {before:?}, after {now:?})"
        );
        for (name, load) in [("DIRECT", self.direct), ("through good", self.good)] {
            let end = load.finish();
            assert!(
                end.broke.is_none(),
                "{what}: the load {name} broke: {end:?}"
            );
            eprintln!("{what}: the load {name} echoed {} bytes intact", end.echoed);
        }
    }
}

fn lab(tag: &str) -> Option<Lab> {
    if !lab::have_program("microsocks") {
        eprintln!("SKIPPED {tag}: microsocks is not installed");
        return None;
    }
    Lab::with_wan_hosts(tag, 2)
}

/// `bad`'s process is killed while a bulk transfer runs through it (via the fallback group):
/// the transfer ends at once with one line naming the route, the hop and the reset.
#[test]
fn upstream_killed_mid_transfer() {
    let Some(lab) = lab("upkill") else {
        return;
    };
    let mut scene = Scene::start(&lab);
    let by = Bystanders::start(&scene);
    // Unthrottled, so the proxy always holds unread bytes when it dies: its kernel resets.
    let victim = scene.load(VIA_FALLBACK, Duration::ZERO);
    victim.wait_moving("load through bad");
    let before = by.echoed();

    let killed = Instant::now();
    scene.bad.stop();
    let (at, how) = victim
        .wait_broken(RESET_LIMIT)
        .unwrap_or_else(|| panic!("the flow through the killed upstream went on"));
    eprintln!(
        "the flow through bad ended {:?} after the kill: {how}",
        at - killed
    );
    let dst = scene.dst(VIA_FALLBACK);
    scene.expect_one_end_line(
        victim.local,
        dst,
        "safe/bad",
        &["via safe/bad failed", "upstream bad (203.0.113.3:1080)"],
    );
    let line = &scene.end_lines(victim.local, dst, "safe/bad")[0];
    assert!(
        ["reset by peer", "Broken pipe"]
            .iter()
            .any(|why| line.contains(why)),
        "the line says why: {line}"
    );
    drop(victim);

    scene.groups_move_to_good(killed);
    by.check(before, "kill");
    assert!(scene.tp.try_status().is_none(), "tpgate exited");
}

/// `bad`'s host drops everything on its port: no RST, no FIN. A transfer through it and an
/// idle connection through it both end within the upstream timeouts (about 20 s; the
/// relay's idle limit is 300 s), each with one line saying the hop timed out.
#[test]
fn upstream_blackholed_mid_transfer() {
    let Some(lab) = lab("uphole") else {
        return;
    };
    let mut scene = Scene::start(&lab);
    let by = Bystanders::start(&scene);
    let idle = scene.idle_flow(VIA_BAD);
    let victim = scene.load(VIA_FALLBACK, Duration::from_millis(5));
    victim.wait_moving("load through bad");
    let before = by.echoed();

    let rules = lab.write_file(
        "blackhole.nft",
        "table inet blackhole {\n\
         \x20 chain in { type filter hook input priority filter; tcp dport 1080 drop; }\n\
         \x20 chain out { type filter hook output priority filter; tcp sport 1080 drop; }\n\
         }\n",
    );
    scene
        .bad
        .host
        .ns
        .sh("nft", &["-f", rules.to_str().expect("utf-8 path")]);
    let holed = Instant::now();
    // New connections to `bad` go unanswered too: its health checks time out.
    scene.groups_move_to_good(holed);

    let (at, how) = victim.wait_broken(BLACKHOLE_LIMIT).unwrap_or_else(|| {
        panic!("the transfer through the blackholed upstream still hangs after {BLACKHOLE_LIMIT:?}")
    });
    eprintln!(
        "the transfer through bad ended {:?} after the blackhole: {how}",
        at - holed
    );
    scene.expect_one_end_line(
        victim.local,
        scene.dst(VIA_FALLBACK),
        "safe/bad",
        &[
            "via safe/bad failed",
            "upstream bad (203.0.113.3:1080)",
            "timed out",
        ],
    );
    let (at, how) = idle.wait_ended(BLACKHOLE_LIMIT).unwrap_or_else(|| {
        panic!(
            "the idle flow through the blackholed upstream still hangs after {BLACKHOLE_LIMIT:?}"
        )
    });
    eprintln!(
        "the idle flow through bad ended {:?} after the blackhole: {how}",
        at - holed
    );
    scene.expect_one_end_line(
        idle.local,
        scene.dst(VIA_BAD),
        "bad",
        &[
            "via bad failed",
            "upstream bad (203.0.113.3:1080)",
            "timed out",
        ],
    );
    drop(victim);

    by.check(before, "blackhole");
    scene.bad.stop();
    assert!(scene.tp.try_status().is_none(), "tpgate exited");
}

/// `bad` is frozen: its kernel accepts TCP, nobody answers the SOCKS5 handshake. A new flow
/// to `bad` ends after the handshake timeout with one line naming the hop; a new flow via
/// the fallback group gets through `good` (retried there if the group still chose `bad`).
#[test]
fn upstream_accepts_but_never_answers_the_handshake() {
    let Some(lab) = lab("uphang") else {
        return;
    };
    let mut scene = Scene::start(&lab);
    let by = Bystanders::start(&scene);
    let before = by.echoed();

    scene.bad.freeze(true);
    let frozen = Instant::now();
    // Both new flows start at once, before the groups can have noticed.
    let direct_to_bad = IdleFlow::start(&lab, scene.dst(VIA_BAD), false);
    let via_group = std::thread::scope(|s| {
        let t = s.spawn(|| patient_echo(&lab, scene.server(VIA_FALLBACK_EARLY)));
        // Meanwhile the health checks, whose handshakes time out too, move the groups.
        scene.groups_move_to_good(frozen);
        let (at, how) = direct_to_bad
            .wait_ended(HANDSHAKE_LIMIT)
            .unwrap_or_else(|| {
                panic!("the flow to the frozen upstream still hangs after {HANDSHAKE_LIMIT:?}")
            });
        eprintln!(
            "the flow to bad ended {:?} after the freeze: {how}",
            at - frozen
        );
        t.join().expect("echo thread")
    });
    scene.expect_one_end_line(
        direct_to_bad.local,
        scene.dst(VIA_BAD),
        "bad",
        &["via bad failed", "bad: handshake timed out"],
    );

    let (local, seen) = via_group.unwrap_or_else(|e| panic!("the flow via the group: {e}"));
    assert_eq!(
        seen.ip(),
        scene.good.egress(Family::V4),
        "the flow via the group went out through good"
    );
    let dst = scene.dst(VIA_FALLBACK_EARLY);
    let first = scene
        .tp
        .wait_for_line(Duration::from_secs(5), |l| {
            l.contains(&format!("tcp {local} -> {dst} ")) && l.contains(" action=")
        })
        .expect("the flow's first line");
    if first.contains("action=safe/bad") {
        let lines = scene.end_lines(local, dst, "safe/bad");
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].contains("bad: handshake timed out); retrying via safe/good"),
            "{}",
            lines[0]
        );
    }

    by.check(before, "handshake");
    scene.bad.freeze(false);
    assert!(scene.tp.try_status().is_none(), "tpgate exited");
}

/// One echo of 1000 bytes to `server` with time for tpgate to give up on one member and
/// retry another; returns the client's address and the peer the server saw (the test's own
/// flows to that server are sequential).
fn patient_echo(lab: &Lab, server: &TcpEchoServer) -> Result<(SocketAddr, SocketAddr), String> {
    let before = server.peers().len();
    let mut stream = lab
        .client
        .enter(|| TcpStream::connect_timeout(&server.addr, Duration::from_secs(5)))
        .map_err(|e| format!("connect: {e}"))?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(HANDSHAKE_LIMIT))
        .map_err(|e| e.to_string())?;
    let data = lab::pattern(1000, 7);
    stream.write_all(&data).map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; data.len()];
    stream
        .read_exact(&mut back)
        .map_err(|e| format!("read: {e}"))?;
    if back != data {
        return Err("the echo differs".to_owned());
    }
    let seen = poll(Duration::from_secs(5), || {
        server.peers().get(before).copied()
    })
    .ok_or_else(|| format!("the server saw no connection: {:?}", server.peers()))?;
    Ok((local, seen))
}
