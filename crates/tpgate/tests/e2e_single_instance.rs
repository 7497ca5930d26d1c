//! One tpgate per network namespace, for each backend (nftables, iptables-nft,
//! iptables-legacy), whatever `TPGATE_E2E_BACKEND` says. While one instance serves, a second
//! `run` (another config, another port) exits 1 naming the first one's pid and changes
//! nothing: LAN connections probed without pause stay intercepted and prompt, `ip monitor`
//! sees no rule or route come or go, and the tables, chains, rules and routes are identical
//! afterwards. `down` refuses likewise; after `kill -9` of the first instance a new one
//! starts at once (the kernel released the lock); `down --force` stops the running instance,
//! which removes its interception, and says whose it was.
//!
//! Needs root, `nft`, `iptables` (both variants) and `ip`; without root every test prints
//! `SKIPPED` and passes.

mod lab;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use lab::{
    kill_and_reap, lock_file, poll, tcp_echo, tpgate_oneshot, Backend, Family, Lab, Netns,
    TcpEchoServer, Tpgate,
};

/// A LAN connection slower than this lost a packet (a SYN is retransmitted after 1 s).
const SLOW: Duration = Duration::from_millis(900);
/// How long a restart after `kill -9` may take to say `ready`: the lock is free at once,
/// so this is only the start itself.
const RESTART: Duration = Duration::from_secs(5);

fn lab(tag: &str, backend: Backend) -> Option<Lab> {
    let mut lab = Lab::new(tag)?;
    lab.backend = backend;
    Some(lab)
}

/// Everything of tpgate's in the gateway: [`Lab::gw_state`] (tables or `TPGATE_` lines of
/// both iptables variants, `ip rule`, tpgate's route table) and, with nftables, the whole
/// table without counters.
fn snapshot(lab: &Lab) -> String {
    let table = if lab.backend.is_iptables() {
        String::new()
    } else {
        let out = lab
            .gw
            .exec("nft", &["-s", "list", "table", "inet", "tpgate"]);
        if out.success() {
            out.stdout
        } else {
            String::new()
        }
    };
    format!("{:#?}\n{table}", lab.gw_state())
}

/// A second config: another port, so a second instance would get as far as it can.
fn second_config(lab: &Lab) -> PathBuf {
    let text = lab
        .config_text()
        .replace("tproxy-port: 7893", "tproxy-port: 7894");
    assert!(text.contains("7894"), "the lab config changed its port key");
    lab.write_file("second.yaml", &text)
}

fn path_arg(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// What the probe saw.
#[derive(Default)]
struct ProbeLog {
    ok: usize,
    failures: Vec<String>,
}

/// LAN TCP connections from the client to the servers, one after another, until dropped.
struct Probe {
    log: Arc<Mutex<ProbeLog>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Probe {
    fn start(client: &Netns, dsts: Vec<SocketAddr>) -> Self {
        let ns = Netns {
            name: client.name.clone(),
        };
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for dst in &dsts {
                        let t = Instant::now();
                        let res = tcp_echo(&ns, *dst, b"probe");
                        let took = t.elapsed();
                        let mut log = log.lock().expect("probe log");
                        match res {
                            Ok(x) if x.echoed == b"probe" && took < SLOW => log.ok += 1,
                            Ok(x) => log.failures.push(format!(
                                "{} -> {dst}: echo {:?} after {took:?}",
                                x.local,
                                String::from_utf8_lossy(&x.echoed)
                            )),
                            Err(e) => log.failures.push(format!("-> {dst}: {e} after {took:?}")),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Self {
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn ok(&self) -> usize {
        self.log.lock().expect("probe log").ok
    }

    /// Waits (10 s at most) until `more` further connections succeeded.
    fn wait_more(&self, more: usize) {
        let want = self.ok() + more;
        assert!(
            poll(Duration::from_secs(10), || Some(())
                .filter(|()| self.ok() >= want))
            .is_some(),
            "probe: {} connections, wanted {want}; failures: {:?}",
            self.ok(),
            self.log.lock().expect("probe log").failures
        );
    }

    /// Stops the probe; returns what it saw.
    fn finish(mut self) -> ProbeLog {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("probe thread");
        }
        std::mem::take(&mut *self.log.lock().expect("probe log"))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `ip monitor rule route` in the gateway: every policy rule and route added or deleted.
struct Monitor<'lab> {
    lab: &'lab Lab,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    marks: u32,
}

impl<'lab> Monitor<'lab> {
    /// Starts the monitor and returns once it reports events.
    fn start(lab: &'lab Lab) -> Self {
        let mut child = Command::new("ip")
            .args(["-n", &lab.gw.name, "monitor", "rule", "route"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ip monitor");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("monitor stdout");
        {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().expect("monitor lines").push(line);
                }
            });
        }
        let mut m = Self {
            lab,
            child,
            lines,
            marks: 0,
        };
        // Subscribed only some time after the spawn: mark until a mark shows.
        let ready = poll(Duration::from_secs(10), || {
            m.mark(Duration::from_millis(300))
        });
        assert!(ready.is_some(), "ip monitor reported nothing");
        m
    }

    /// Adds and deletes a marker rule (pref 8600, from 192.0.2.77, a table of its own);
    /// returns the number of lines up to its deletion once both events were reported
    /// within `wait`.
    fn mark(&mut self, wait: Duration) -> Option<usize> {
        self.marks += 1;
        let table = (1000 + self.marks).to_string();
        for verb in ["add", "del"] {
            self.lab.gw.ip(&[
                "-4",
                "rule",
                verb,
                "from",
                "192.0.2.77",
                "lookup",
                &table,
                "pref",
                "8600",
            ]);
        }
        let needle = format!("192.0.2.77 lookup {table}");
        poll(wait, || {
            let lines = self.lines.lock().expect("monitor lines");
            let hits: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].contains(&needle))
                .collect();
            (hits.len() >= 2).then(|| hits[1] + 1)
        })
    }

    /// Marks, and returns the number of lines reported up to the mark: everything before
    /// it has been reported.
    fn checkpoint(&mut self) -> usize {
        self.mark(Duration::from_secs(10))
            .expect("ip monitor stopped reporting")
    }

    /// Lines reported after checkpoint `from` and before a new one, marks left out.
    fn since(&mut self, from: usize) -> Vec<String> {
        let to = self.checkpoint();
        let lines = self.lines.lock().expect("monitor lines");
        lines[from..to]
            .iter()
            .filter(|l| !l.contains("192.0.2.77"))
            .cloned()
            .collect()
    }
}

impl Drop for Monitor<'_> {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

fn second_run_changes_nothing(backend: Backend, tag: &str) {
    let Some(lab) = lab(tag, backend) else { return };
    let before = snapshot(&lab);
    let servers: Vec<TcpEchoServer> = [Family::V4, Family::V6]
        .into_iter()
        .map(|f| TcpEchoServer::start(&lab.server, SocketAddr::new(f.addrs().server, 80)))
        .collect();
    let config = lab.write_config();
    let mut first = Tpgate::start(&lab, &config);
    let pid = first.pid().as_raw();
    let installed = snapshot(&lab);
    assert!(lab.gw_state().has_tpgate_table(), "{installed}");
    assert_eq!(lab.gw_state().fwmark_rules(), (true, true), "{installed}");

    // The first connection of a fresh lab may wait for neighbour discovery: not timed.
    for s in &servers {
        tcp_echo(&lab.client, s.addr, b"warm-up").expect("through the first instance");
    }

    let mut monitor = Monitor::start(&lab);
    let from = monitor.checkpoint();
    let probe = Probe::start(&lab.client, servers.iter().map(|s| s.addr).collect());
    probe.wait_more(10);

    let second = second_config(&lab);
    let run = tpgate_oneshot(&lab.gw, &["run", "-c", path_arg(&second)]);
    let down = tpgate_oneshot(&lab.gw, &["down", "-c", path_arg(&config)]);

    probe.wait_more(10);
    let seen = probe.finish();
    assert!(
        seen.failures.is_empty(),
        "LAN connections failed or stalled during the attempts: {:?}",
        seen.failures
    );
    for (s, f) in servers.iter().zip([Family::V4, Family::V6]) {
        let direct: Vec<SocketAddr> = s
            .peers()
            .into_iter()
            .filter(|p| p.ip() != f.addrs().gw_wan)
            .collect();
        assert!(direct.is_empty(), "{f:?}: not intercepted: {direct:?}");
    }
    let changes = monitor.since(from);
    assert!(
        changes.is_empty(),
        "rules or routes changed during the attempts: {changes:#?}"
    );
    drop(monitor);
    assert_eq!(
        snapshot(&lab),
        installed,
        "the running instance's state changed"
    );
    assert!(
        first.try_status().is_none(),
        "the first instance stopped; log:\n{}",
        first.log_text()
    );
    let log = first.log_text();
    assert!(
        !log.contains("restored"),
        "the first instance had to restore its state:\n{log}"
    );

    assert_eq!(run.code, Some(1), "second `run`: {run:#?}");
    assert!(
        run.stderr.contains(&format!("(pid {pid})"))
            && run.stderr.contains("/run/tpgate/netns-")
            && run.stderr.contains("stop that process first"),
        "the refusal does not name pid {pid} and the lock: {run:#?}"
    );
    assert_eq!(down.code, Some(1), "`down` while running: {down:#?}");
    assert!(
        down.stderr.contains(&format!("(pid {pid})")) && down.stderr.contains("--force"),
        "{down:#?}"
    );

    // Killed, its lock goes with it: the next instance starts at once.
    first.signal(Signal::SIGKILL);
    assert!(
        first.wait_exit(Duration::from_secs(2)).is_some(),
        "SIGKILLed tpgate still running"
    );
    let t = Instant::now();
    let mut next = Tpgate::start(&lab, &config);
    let took = t.elapsed();
    assert!(
        took < RESTART,
        "the instance after `kill -9` took {took:?} to be ready; log:\n{}",
        next.log_text()
    );
    let x = tcp_echo(&lab.client, servers[0].addr, b"next").expect("through the next instance");
    assert_eq!(x.echoed, b"next");
    next.expect_flow("tcp", x.local, servers[0].addr, "DIRECT");
    assert_eq!(
        next.terminate().code(),
        Some(0),
        "log:\n{}",
        next.log_text()
    );
    assert_eq!(snapshot(&lab), before, "the gateway after the last stop");
}

#[test]
fn nftables_second_run_changes_nothing_and_kill_frees_the_lock() {
    second_run_changes_nothing(Backend::Nftables, "onenft");
}

#[test]
fn iptables_nft_second_run_changes_nothing_and_kill_frees_the_lock() {
    second_run_changes_nothing(Backend::IptablesNft, "oneiptnft");
}

#[test]
fn iptables_legacy_second_run_changes_nothing_and_kill_frees_the_lock() {
    second_run_changes_nothing(Backend::IptablesLegacy, "oneiptleg");
}

fn down_force_stops_the_instance(backend: Backend, tag: &str) {
    let Some(lab) = lab(tag, backend) else { return };
    let before = snapshot(&lab);
    let a = Family::V4.addrs();
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let config = lab.write_config();
    let mut tp = Tpgate::start(&lab, &config);
    let pid = tp.pid().as_raw();
    let lock = lock_file(&lab.gw.name).expect("the gateway's lock file name");
    assert_eq!(
        std::fs::read_to_string(&lock)
            .map(|t| t.trim().to_owned())
            .ok(),
        Some(pid.to_string()),
        "lock file {} does not hold pid {pid}",
        lock.display()
    );
    tcp_echo(&lab.client, server.addr, b"before").expect("through tpgate");
    assert_eq!(server.wait_peers(1)[0].ip(), a.gw_wan, "intercepted");

    let out = tpgate_oneshot(&lab.gw, &["down", "--force", "-c", path_arg(&config)]);
    assert!(out.success(), "`down --force`: {out:#?}");
    assert!(
        out.stderr.contains(&format!("tpgate pid {pid}")) && out.stderr.contains("SIGTERM"),
        "`down --force` does not say whose interception it removes: {out:#?}"
    );
    let status = tp.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the stopped instance did not exit cleanly; log:\n{}",
        tp.log_text()
    );
    assert_eq!(snapshot(&lab), before, "left after `down --force`");
    assert!(!lock.exists(), "lock file {} left", lock.display());

    let x = tcp_echo(&lab.client, server.addr, b"after").expect("direct after down");
    assert_eq!(server.wait_peers(2)[1], x.local, "still intercepted");
}

#[test]
fn nftables_down_force_stops_the_running_instance() {
    down_force_stops_the_instance(Backend::Nftables, "forcenft");
}

#[test]
fn iptables_nft_down_force_stops_the_running_instance() {
    down_force_stops_the_instance(Backend::IptablesNft, "forceiptn");
}

#[test]
fn iptables_legacy_down_force_stops_the_running_instance() {
    down_force_stops_the_instance(Backend::IptablesLegacy, "forceiptl");
}
