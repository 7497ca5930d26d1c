//! Running helper commands (`ip`, `nft`, `tpgate check`...) with a time limit, so a hung
//! command fails the test instead of hanging it. Long-running processes live in `daemon`.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::CMD_TIMEOUT;

/// What a finished command printed, and how it ended.
#[derive(Debug)]
pub(crate) struct CmdOutput {
    /// The command line, for messages.
    pub(crate) cmd: String,
    /// `None` when the command was killed (signal or time-out).
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl CmdOutput {
    pub(crate) fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Returns stdout, or panics with everything known about the failure.
    pub(crate) fn ok_or_panic(self) -> String {
        assert!(
            self.success(),
            "`{}` failed ({:?})\nstdout: {}\nstderr: {}",
            self.cmd,
            self.code,
            self.stdout,
            self.stderr
        );
        self.stdout
    }
}

/// Runs `prog args...` to completion, killing it after [`CMD_TIMEOUT`].
pub(crate) fn run(prog: &str, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    run_cmd(cmd, CMD_TIMEOUT)
}

/// Runs `cmd` (stdin closed, output captured) to completion, killing it after `limit`.
pub(crate) fn run_cmd(mut cmd: Command, limit: Duration) -> CmdOutput {
    let line = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {line}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_timeout(&mut child, limit);
    if status.is_none() {
        kill_and_reap(&mut child);
    }
    let stdout = stdout.recv().unwrap_or_default();
    let mut stderr = stderr.recv().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n[lab: killed after {limit:?}]"));
    }
    CmdOutput {
        cmd: line,
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    }
}

/// Reads a pipe to its end on a thread; the receiver gets the text.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Polls `child` until it exits or `limit` passes.
pub(crate) fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => return None,
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

/// SIGKILLs a child this test started (by its own handle) and reaps it.
pub(crate) fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `probe` every 20 ms until it returns `Some` or `limit` passes.
pub(crate) fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
