//! Running tpgate the way the systemd unit does, without systemd: as uid 65534, with only
//! the capabilities the unit grants (`setpriv`, also in the bounding set, with
//! no_new_privs), and with a `/run/tpgate` of its own, as `RuntimeDirectory=tpgate` gives
//! the unit's user. That directory is a tmpfs in a private mount namespace (`unshare`), so
//! the host's `/run/tpgate` is never handed to another user.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};

use super::Lab;

/// The uid and gid the unprivileged tpgate runs as (`nobody`).
pub(crate) const NOBODY: u32 = 65534;

/// The capabilities `packaging/tpgate.service` grants, as setpriv names them.
pub(crate) const UNIT_CAPS: [&str; 3] = ["net_admin", "net_raw", "net_bind_service"];

/// `CapEff` of a process holding exactly [`UNIT_CAPS`] (bits 12, 13 and 10).
pub(crate) const UNIT_CAP_EFF: u64 = (1 << 12) | (1 << 13) | (1 << 10);

/// How to run tpgate unprivileged: uid [`NOBODY`] with these capabilities.
#[derive(Debug, Clone)]
pub(crate) struct Unprivileged {
    caps: Vec<String>,
    /// Directories mounted read-only for tpgate (in its mount namespace only).
    read_only: Vec<PathBuf>,
}

impl Unprivileged {
    /// Exactly what the unit grants.
    pub(crate) fn unit() -> Self {
        Self::with_extra(&[])
    }

    /// The unit's capabilities plus `extra` (setpriv names: `sys_ptrace`...), as a drop-in
    /// would add them.
    pub(crate) fn with_extra(extra: &[&str]) -> Self {
        Self {
            caps: UNIT_CAPS
                .iter()
                .chain(extra)
                .map(|c| (*c).to_owned())
                .collect(),
            read_only: Vec::new(),
        }
    }

    /// Also makes `dir` read-only for tpgate (a read-only bind mount in its private mount
    /// namespace: even root would get EROFS there), as a full or remounted disk would.
    pub(crate) fn read_only(mut self, dir: &Path) -> Self {
        self.read_only.push(dir.to_owned());
        self
    }

    /// The command that runs the rest of the line as the unit would (see the module doc);
    /// every step execs the next, so the spawned pid is tpgate's.
    pub(crate) fn wrapper(&self) -> Vec<String> {
        let set: Vec<String> = self.caps.iter().map(|c| format!("+{c}")).collect();
        let set = set.join(",");
        let read_only: String = self
            .read_only
            .iter()
            .map(|d| {
                let d = d.display();
                format!("mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}' && ")
            })
            .collect();
        let script = format!(
            "mkdir -p /run/tpgate && \
             mount -t tmpfs -o mode=0755,uid={NOBODY},gid={NOBODY},size=1m tpgate-run /run/tpgate && \
             {read_only}exec \"$@\""
        );
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
            "setpriv",
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            &format!("--inh-caps=-all,{set}"),
            &format!("--ambient-caps=-all,{set}"),
            &format!("--bounding-set=-all,{set}"),
            "--no-new-privs",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}

/// A directory in the lab's scratch that [`NOBODY`] owns, as `StateDirectory=` gives the
/// unit's user, for `state-file`.
pub(crate) fn state_dir(lab: &Lab) -> PathBuf {
    let dir = lab.dir.join("state");
    std::fs::create_dir_all(&dir).expect("create state dir");
    chown(&dir, Some(NOBODY), Some(NOBODY)).expect("chown state dir");
    dir
}

/// The uid (effective) and `CapEff` of process `pid`, from its `/proc/PID/status`.
pub(crate) fn uid_and_caps(pid: i32) -> (u32, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    };
    let uid = field("Uid")
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok())
        .expect("effective uid");
    let caps = u64::from_str_radix(field("CapEff"), 16).expect("CapEff");
    (uid, caps)
}
