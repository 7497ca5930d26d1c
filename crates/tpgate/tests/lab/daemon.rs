//! The tpgate binary under test: `tpgate run` as a long-lived process in the lab's gateway
//! namespace, with its log collected line by line so tests wait for `ready` instead of
//! sleeping; and the one-shot subcommands (`check`, `plan`, `down`).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{kill_and_reap, run_cmd, wait_timeout, CmdOutput, Lab, Netns, CMD_TIMEOUT};

/// How long `tpgate run` may take to say `ready`.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary under test: the one cargo built for this package, unless `TPGATE_TEST_BIN`
/// names another (a release build, or a deliberately broken one to see the tests fail).
pub(crate) fn tpgate_bin() -> String {
    std::env::var("TPGATE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tpgate").to_owned())
}

/// `ip netns exec <ns> tpgate args...` as a command (not yet started).
fn tpgate_command(ns: &Netns, args: &[&str]) -> Command {
    tpgate_command_wrapped(ns, &[], args)
}

/// `ip netns exec <ns> <wrapper...> tpgate args...`: `wrapper` runs tpgate in another way
/// (another user, fewer capabilities: [`super::Unprivileged`]) and must exec it in the end.
fn tpgate_command_wrapped(ns: &Netns, wrapper: &[String], args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .args(wrapper)
        .arg(tpgate_bin())
        .args(args)
        // tracing's colours would split `key=value` with escape codes.
        .env("NO_COLOR", "1");
    cmd
}

/// Where a tpgate in namespace `name` keeps its single-instance lock: named by the
/// namespace's nsfs device and inode, as tpgate names it. `None` once the namespace is gone.
pub(crate) fn lock_file(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(Path::new("/run/netns").join(name)).ok()?;
    Some(PathBuf::from(format!(
        "/run/tpgate/netns-{}-{}.lock",
        m.dev(),
        m.ino()
    )))
}

/// Runs a one-shot subcommand (`check`, `plan`, `down`, or `run` expected to fail) in `ns`.
pub(crate) fn tpgate_oneshot(ns: &Netns, args: &[&str]) -> CmdOutput {
    run_cmd(tpgate_command(ns, args), CMD_TIMEOUT)
}

/// Log lines of a running tpgate, shared with the threads that read its pipes.
#[derive(Default)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// Pipes (stdout, stderr) still open; 0 means the process has closed both.
    open: u8,
}

/// A running `tpgate run -c FILE` in the lab's gateway; SIGKILLed on drop if still alive.
pub(crate) struct Tpgate<'lab> {
    lab: &'lab Lab,
    child: Child,
    /// Set once the process has been reaped.
    status: Option<ExitStatus>,
    log: Arc<Log>,
    pub(crate) config: PathBuf,
}

impl<'lab> Tpgate<'lab> {
    /// Starts tpgate with `config` in the gateway and waits for its `ready` line.
    pub(crate) fn start(lab: &'lab Lab, config: &Path) -> Self {
        let mut tp = Self::spawn(lab, config);
        tp.wait_ready();
        tp
    }

    /// Waits for the `ready` line; panics with the log if it does not come.
    fn wait_ready(&mut self) {
        if self
            .wait_for_line(READY_TIMEOUT, |l| has_word(l, "ready"))
            .is_none()
        {
            let status = self.try_status();
            panic!(
                "tpgate did not log `ready` within {READY_TIMEOUT:?} (exit: {status:?}); log:\n{}",
                self.log_text()
            );
        }
    }

    /// Starts tpgate without waiting for anything.
    pub(crate) fn spawn(lab: &'lab Lab, config: &Path) -> Self {
        Self::spawn_wrapped(lab, config, &[])
    }

    /// Starts tpgate through `wrapper` (see [`tpgate_command_wrapped`]) and waits for its
    /// `ready` line.
    pub(crate) fn start_wrapped(lab: &'lab Lab, config: &Path, wrapper: &[String]) -> Self {
        let mut tp = Self::spawn_wrapped(lab, config, wrapper);
        tp.wait_ready();
        tp
    }

    /// Starts tpgate through `wrapper` without waiting for anything.
    pub(crate) fn spawn_wrapped(lab: &'lab Lab, config: &Path, wrapper: &[String]) -> Self {
        let config_arg = config.to_str().expect("utf-8 config path");
        let mut cmd = tpgate_command_wrapped(&lab.gw, wrapper, &["run", "-c", config_arg]);
        // `ip netns exec` execs the binary in place (and a wrapper must too), so the
        // child's pid is tpgate's.
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tpgate");
        let log = Arc::new(Log::default());
        let pid = child.id();
        collect(&log, child.stdout.take(), pid);
        collect(&log, child.stderr.take(), pid);
        Self {
            lab,
            child,
            status: None,
            log,
            config: config.to_owned(),
        }
    }

    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
    }

    /// Waits until a log line satisfies `pred`; `None` on time-out or when the process has
    /// closed its output without such a line.
    pub(crate) fn wait_for_line(
        &self,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut state = self.log.state.lock().expect("log lock");
        loop {
            if let Some(l) = state.lines.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if state.open == 0 || now >= deadline {
                return None;
            }
            state = self
                .log
                .changed
                .wait_timeout(state, deadline - now)
                .expect("log lock")
                .0;
        }
    }

    /// Every line logged so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.log.state.lock().expect("log lock").lines.clone()
    }

    /// The whole log so far, for failure messages.
    pub(crate) fn log_text(&self) -> String {
        self.lines().join("\n")
    }

    /// The exit status if the process has ended (reaping it), else `None`.
    pub(crate) fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait tpgate");
        }
        self.status
    }

    /// Sends `sig` to this tpgate (by the pid this test started).
    pub(crate) fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            kill(self.pid(), sig).expect("signal tpgate");
        }
    }

    /// Waits up to `limit` for the process to end.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_timeout(&mut self.child, limit);
        }
        self.status
    }

    /// SIGTERM, then wait up to 10 s; panics with the log if it does not exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        match self.wait_exit(Duration::from_secs(10)) {
            Some(s) => s,
            None => panic!("tpgate ignored SIGTERM for 10 s; log:\n{}", self.log_text()),
        }
    }

    /// Waits (5 s) for the per-flow line `<proto> <src> -> <dst>` with `action=<action>`;
    /// panics with the whole log if it does not come.
    pub(crate) fn expect_flow(
        &self,
        proto: &str,
        src: SocketAddr,
        dst: SocketAddr,
        action: &str,
    ) -> String {
        let flow = format!("{proto} {src} -> {dst}");
        self.wait_for_line(Duration::from_secs(5), |l| {
            l.contains(&flow) && has_field(l, "action", action)
        })
        .unwrap_or_else(|| {
            panic!(
                "tpgate logged no line with `{flow}` and `action={action}`; log:\n{}",
                self.log_text()
            )
        })
    }

    /// Log lines of flows toward `dst` (` -> <dst>`), to check that traffic was not seen.
    pub(crate) fn flows_to(&self, dst: SocketAddr) -> Vec<String> {
        let needle = format!(" -> {dst}");
        self.lines()
            .into_iter()
            .filter(|l| l.contains(&needle))
            .collect()
    }

    /// The lab this tpgate runs in.
    pub(crate) fn lab(&self) -> &'lab Lab {
        self.lab
    }
}

impl Drop for Tpgate<'_> {
    fn drop(&mut self) {
        if self.status.is_none() {
            kill_and_reap(&mut self.child);
        }
    }
}

/// Reads one of tpgate's pipes line by line into `log` (colour codes stripped), echoing
/// each line to the test's output so a failing test shows what the daemon said.
fn collect(log: &Arc<Log>, pipe: Option<impl Read + Send + 'static>, pid: u32) {
    let Some(pipe) = pipe else { return };
    log.state.lock().expect("log lock").open += 1;
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = strip_ansi(&String::from_utf8_lossy(&raw));
                    let line = line.trim_end().to_owned();
                    eprintln!("[tpgate {pid}] {line}");
                    log.state.lock().expect("log lock").lines.push(line);
                    log.changed.notify_all();
                }
            }
        }
        log.state.lock().expect("log lock").open -= 1;
        log.changed.notify_all();
    });
}

/// Removes ANSI CSI escape sequences (`ESC [ ... final-byte`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `line` has `word` as a whole word (`ready`, not `already`).
pub(crate) fn has_word(line: &str, word: &str) -> bool {
    line.split(|c: char| !c.is_alphanumeric() && c != '-' && c != '_')
        .any(|w| w == word)
}

/// Whether a log line carries `key=value` (also accepting tracing's quoted `key="value"`).
pub(crate) fn has_field(line: &str, key: &str, value: &str) -> bool {
    line.split_whitespace().any(|tok| {
        tok.strip_prefix(key)
            .and_then(|t| t.strip_prefix('='))
            .is_some_and(|v| v == value || v.trim_matches('"') == value)
    })
}

/// Whether a log line carries `rule=` whose value contains `text`.
pub(crate) fn has_rule(line: &str, text: &str) -> bool {
    line.split("rule=").skip(1).any(|rest| {
        let value = rest.trim_start_matches('"');
        let end = value.find([' ', '"']).unwrap_or(value.len());
        value[..end].contains(text)
    })
}
