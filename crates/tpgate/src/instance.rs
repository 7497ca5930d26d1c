//! One tpgate per network namespace: `run` and `down` take an exclusive `flock` on
//! `/run/tpgate/netns-<dev>-<ino>.lock` before they change anything, so a second instance
//! learns that another one is running before it touches routing, rules or listeners. The
//! kernel releases the lock when its holder dies, however it dies, so a killed instance
//! never blocks the next one. The file holds the holder's pid, for messages and for
//! `down --force`.
//!
//! Deliberately not here: what `down` removes (`install`), and any check of the ruleset:
//! the lock is about processes, the ruleset checks in `install` stay for instances that
//! predate the lock.

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

/// Where the lock files live: a tmpfs emptied at boot. The systemd unit's
/// `RuntimeDirectory=tpgate` creates it for the `tpgate` user (and, when `down` as root made
/// it first, hands it over).
pub(crate) const LOCK_DIR: &str = "/run/tpgate";

/// How long `down --force` waits for the holder to stop after SIGTERM (it removes its own
/// interception first), and after SIGKILL (the kernel releases the lock at once).
const TERM_WAIT: Duration = Duration::from_secs(10);
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting `down --force` tries the lock.
const RETRY: Duration = Duration::from_millis(50);

/// A network namespace, as the kernel names it: the device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetnsId {
    dev: u64,
    ino: u64,
}

impl NetnsId {
    /// The calling thread's namespace (`thread-self`, not `self`: a thread may have entered
    /// another namespace than the process's main thread).
    pub(crate) fn current() -> io::Result<Self> {
        Self::of(Path::new("/proc/thread-self/ns/net"))
    }

    /// The namespace of process `pid`.
    fn of_pid(pid: u32) -> io::Result<Self> {
        Self::of(&PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    fn of(path: &Path) -> io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    fn lock_file_name(self) -> String {
        format!("netns-{}-{}.lock", self.dev, self.ino)
    }
}

/// The process holding the lock, as far as its lock file tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    /// `None` when the file holds no pid (the holder is between taking the lock and
    /// writing it, or the file was written by hand).
    pub(crate) pid: Option<u32>,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("pid unknown"),
        }
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another live process holds it: this namespace has a running tpgate.
    #[error(
        "another running tpgate ({holder}) owns this network namespace (lock {}); stop that \
         process first (or `tpgate down --force` to stop it and remove its interception)",
        path.display()
    )]
    Held { holder: Holder, path: PathBuf },
    /// This namespace cannot be identified (no /proc).
    #[error("cannot identify this network namespace (/proc/thread-self/ns/net)")]
    Netns(#[source] io::Error),
    /// The lock file cannot be created, opened, locked or written: not root, and the
    /// directory is not this user's (the systemd unit's `RuntimeDirectory=` makes it so).
    #[error(
        "cannot take the single-instance lock {}: run tpgate as root, or as a user that may \
         write {} (the systemd unit's RuntimeDirectory=tpgate makes it the tpgate user's)",
        path.display(),
        path.parent().unwrap_or(path).display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// This namespace's instance lock, held while the value lives; dropping it removes the
/// file and releases the lock.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    file: Flock<File>,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes this namespace's lock in [`LOCK_DIR`], or says who holds it.
    pub(crate) fn acquire() -> Result<Self, LockError> {
        let ns = NetnsId::current().map_err(LockError::Netns)?;
        Self::acquire_in(Path::new(LOCK_DIR), ns)
    }

    /// Takes the lock of namespace `ns` in `dir` (created 0755 if missing), never waiting.
    pub(crate) fn acquire_in(dir: &Path, ns: NetnsId) -> Result<Self, LockError> {
        let path = dir.join(ns.lock_file_name());
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io_err)?;
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&path)
                .map_err(io_err)?;
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(f) => f,
                Err((file, Errno::EWOULDBLOCK)) => {
                    let holder = Holder {
                        pid: holder_pid(&file),
                    };
                    return Err(LockError::Held { holder, path });
                }
                Err((_, e)) => return Err(io_err(e.into())),
            };
            // A holder removes the file before it lets go, so the lock just taken may be on
            // a file that no longer has this name: it protects nothing; take the new one.
            if !names(&file, &path).map_err(io_err)? {
                continue;
            }
            file.set_len(0).map_err(io_err)?;
            file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
                .map_err(io_err)?;
            return Ok(Self { file, path });
        }
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Removed while still locked (see `acquire_in`), so /run keeps no file per
        // namespace that ever ran tpgate; the lock itself goes with the descriptor.
        match names(&self.file, &self.path) {
            Ok(true) => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    warn!("cannot remove {}: {e}", self.path.display());
                }
            }
            Ok(false) => {}
            Err(e) => warn!("cannot check {}: {e}", self.path.display()),
        }
    }
}

/// Whether `path` still names the open `file`.
fn names(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.dev() == open.dev() && m.ino() == open.ino()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The pid in a held lock file. The holder writes it right after locking: an empty file
/// is read again for a moment.
fn holder_pid(file: &File) -> Option<u32> {
    for _ in 0..10 {
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).ok()?;
        let pid = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|t| t.trim().parse().ok());
        if pid.is_some() {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// `down --force` while another instance runs: stops it so that it removes its own
/// interception (an nftables table with the `owner` flag cannot be removed by anyone else,
/// and a live instance puts back routing and iptables chains that others remove), then
/// takes the lock. SIGTERM first; SIGKILL after [`TERM_WAIT`], whose leftovers the caller
/// removes. Only a process that is a tpgate in this very namespace is signalled.
pub(crate) fn take_over(held: Holder, lock: &Path) -> Result<InstanceLock> {
    let ns = NetnsId::current()?;
    let Some(pid) = held.pid else {
        bail!(
            "{} is held by a process that left no pid in it; stop it yourself",
            lock.display()
        );
    };
    if !is_tpgate_in(pid, ns) {
        bail!(
            "{} is held by pid {pid}, which is not a tpgate in this network namespace as seen \
             from here (another PID namespace?); stop it yourself",
            lock.display()
        );
    }
    let dir = lock.parent().unwrap_or(Path::new(LOCK_DIR));
    warn!(
        "--force: tpgate pid {pid} is running in this network namespace; removing its \
         interception (nftables table inet tpgate or iptables chains TPGATE_*, policy rules \
         and routes tagged proto {}) by stopping it: SIGTERM",
        tpgate_core::plan::ROUTE_PROTO
    );
    for (sig, wait) in [(Signal::SIGTERM, TERM_WAIT), (Signal::SIGKILL, KILL_WAIT)] {
        if sig == Signal::SIGKILL {
            warn!("tpgate pid {pid} did not stop within {TERM_WAIT:?}: SIGKILL");
        }
        match kill(Pid::from_raw(i32::try_from(pid)?), sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => bail!("cannot signal tpgate pid {pid}: {e}"),
        }
        let deadline = Instant::now() + wait;
        loop {
            match InstanceLock::acquire_in(dir, ns) {
                Ok(l) => {
                    info!("tpgate pid {pid} stopped; removing what it left");
                    return Ok(l);
                }
                Err(LockError::Held { holder, .. }) if holder.pid.is_some_and(|p| p != pid) => {
                    bail!(
                        "tpgate pid {pid} stopped, but another instance ({holder}) started \
                         meanwhile"
                    )
                }
                Err(LockError::Held { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(RETRY);
                }
                Err(LockError::Held { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    bail!(
        "tpgate pid {pid} still holds {} after SIGKILL",
        lock.display()
    )
}

/// Whether `pid` is a tpgate whose network namespace is `ns`.
fn is_tpgate_in(pid: u32, ns: NetnsId) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim_end() == "tpgate" && NetnsId::of_pid(pid).is_ok_and(|n| n == ns)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A scratch directory per test, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            // A directory that does not exist yet: `acquire_in` creates it.
            Self(std::env::temp_dir().join(format!(
                "tpgate-instance-unit-{}-{n}/run/tpgate",
                std::process::id()
            )))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Some(top) = self.0.parent().and_then(Path::parent) {
                let _ = std::fs::remove_dir_all(top);
            }
        }
    }

    const NS: NetnsId = NetnsId { dev: 4, ino: 4026 };

    #[test]
    fn acquire_creates_the_dir_and_writes_the_pid() {
        let dir = Scratch::new();
        let lock = InstanceLock::acquire_in(&dir.0, NS).expect("first lock");
        assert_eq!(lock.path, dir.0.join("netns-4-4026.lock"));
        let text = std::fs::read_to_string(&lock.path).expect("read lock file");
        assert_eq!(text, format!("{}\n", std::process::id()));
        let mode = std::fs::metadata(&dir.0).expect("dir").mode() & 0o777;
        assert_eq!(mode & 0o700, 0o700, "dir mode {mode:o}");
    }

    #[test]
    fn a_second_acquire_fails_naming_the_holder() {
        let dir = Scratch::new();
        let first = InstanceLock::acquire_in(&dir.0, NS).expect("first lock");
        let err = InstanceLock::acquire_in(&dir.0, NS).expect_err("second lock");
        let LockError::Held { holder, path } = &err else {
            panic!("not Held: {err:?}");
        };
        assert_eq!(holder.pid, Some(std::process::id()));
        assert_eq!(path, &first.path);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("(pid {})", std::process::id()))
                && msg.contains(&first.path.display().to_string())
                && msg.contains("down --force"),
            "{msg}"
        );
        // The holder's pid is still in the file: the failed attempt wrote nothing.
        let text = std::fs::read_to_string(&first.path).expect("read lock file");
        assert_eq!(text.trim(), std::process::id().to_string());
    }

    #[test]
    fn another_namespace_has_its_own_lock() {
        let dir = Scratch::new();
        let _a = InstanceLock::acquire_in(&dir.0, NS).expect("lock of one namespace");
        let other = NetnsId { dev: 4, ino: 4027 };
        let _b = InstanceLock::acquire_in(&dir.0, other).expect("lock of another");
    }

    #[test]
    fn drop_releases_and_removes_the_file() {
        let dir = Scratch::new();
        let first = InstanceLock::acquire_in(&dir.0, NS).expect("first lock");
        let path = first.path.clone();
        drop(first);
        assert!(!path.exists(), "lock file left after drop");
        let again = InstanceLock::acquire_in(&dir.0, NS).expect("lock after drop");
        assert_eq!(again.path, path);
    }

    /// A holder that left its file (killed) never blocks: the lock is free, the pid is
    /// overwritten.
    #[test]
    fn a_stale_file_does_not_block() {
        let dir = Scratch::new();
        std::fs::create_dir_all(&dir.0).expect("dir");
        let path = dir.0.join(NS.lock_file_name());
        std::fs::write(&path, "999999999\n").expect("stale file");
        let lock = InstanceLock::acquire_in(&dir.0, NS).expect("lock over a stale file");
        let text = std::fs::read_to_string(&lock.path).expect("read lock file");
        assert_eq!(text, format!("{}\n", std::process::id()));
    }

    /// A lock taken on a file that was removed meanwhile is retried on the new file.
    #[test]
    fn a_lock_on_a_removed_file_is_not_kept() {
        let dir = Scratch::new();
        let first = InstanceLock::acquire_in(&dir.0, NS).expect("first lock");
        std::fs::remove_file(&first.path).expect("remove");
        let second = InstanceLock::acquire_in(&dir.0, NS).expect("lock on the new file");
        assert!(second.path.exists());
        // The first one's drop must not remove the second one's file.
        drop(first);
        assert!(second.path.exists(), "the new holder's file was removed");
    }

    #[test]
    fn the_current_namespace_is_identified() {
        let a = NetnsId::current().expect("own namespace");
        let b = NetnsId::of_pid(std::process::id()).expect("by pid");
        assert_eq!(a, b);
    }
}
