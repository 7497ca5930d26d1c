//! What this process may do, read from `/proc/self/status` (its uid and effective
//! capabilities), so `run` can say at start which features a non-root instance lacks
//! instead of letting them fail quietly on every flow.
//!
//! The systemd unit runs tpgate as the `tpgate` user with `CAP_NET_ADMIN`, `CAP_NET_RAW`
//! and `CAP_NET_BIND_SERVICE`, which is everything interception needs. What needs more:
//! finding the process behind another user's socket (`PROCESS-NAME`, `PROCESS-PATH`)
//! lists `/proc/PID/fd` (`CAP_DAC_READ_SEARCH`: the directory is its owner's, mode 0500)
//! and reads its links and `/proc/PID/exe` (`CAP_SYS_PTRACE`). `UID` rules only need
//! sock_diag, which any user may ask.
//!
//! Deliberately not here: granting anything; tpgate never changes its own privileges.

use tracing::{debug, warn};

/// Capability numbers (linux/capability.h) this module asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    DacReadSearch = 2,
    NetBindService = 10,
    NetAdmin = 12,
    NetRaw = 13,
    SysPtrace = 19,
}

impl Cap {
    fn name(self) -> &'static str {
        match self {
            Self::DacReadSearch => "CAP_DAC_READ_SEARCH",
            Self::NetBindService => "CAP_NET_BIND_SERVICE",
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::NetRaw => "CAP_NET_RAW",
            Self::SysPtrace => "CAP_SYS_PTRACE",
        }
    }
}

/// The process's effective uid and capability set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Privileges {
    pub(crate) euid: u32,
    /// `CapEff`, one bit per capability number.
    effective: u64,
}

impl Privileges {
    /// This process's, or `None` when /proc cannot tell.
    pub(crate) fn current() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    /// From the text of a `/proc/PID/status` file.
    fn parse(status: &str) -> Option<Self> {
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(str::trim)
        };
        let euid = field("Uid")?.split_whitespace().nth(1)?.parse().ok()?;
        let effective = u64::from_str_radix(field("CapEff")?, 16).ok()?;
        Some(Self { euid, effective })
    }

    pub(crate) fn has(self, cap: Cap) -> bool {
        self.effective & (1 << cap as u32) != 0
    }

    /// Those of `caps` this process lacks.
    fn missing(self, caps: &[Cap]) -> Vec<Cap> {
        caps.iter().copied().filter(|&c| !self.has(c)).collect()
    }
}

/// What a process needs to find the process behind another user's socket.
const PROCESS_LOOKUP: [Cap; 2] = [Cap::SysPtrace, Cap::DacReadSearch];

/// The capabilities interception itself needs.
const NETWORK: [Cap; 3] = [Cap::NetAdmin, Cap::NetRaw, Cap::NetBindService];

/// Says at start what this instance cannot do with its privileges: one line each.
pub(crate) fn report(needs_process: bool) {
    let Some(p) = Privileges::current() else {
        debug!("cannot read /proc/self/status: privileges unknown");
        return;
    };
    debug!(
        uid = p.euid,
        "capabilities: {:#x} (missing of the network ones: {:?})",
        p.effective,
        p.missing(&NETWORK)
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
    );
    if let Some(text) = process_lookup_warning(p, needs_process) {
        warn!("{text}");
    }
}

fn process_lookup_warning(p: Privileges, needs_process: bool) -> Option<String> {
    let missing = p.missing(&PROCESS_LOOKUP);
    if !needs_process || missing.is_empty() {
        return None;
    }
    let names: Vec<&str> = missing.iter().map(|c| c.name()).collect();
    Some(format!(
        "PROCESS-NAME and PROCESS-PATH rules only see processes of uid {} (UID rules see \
         every socket): finding other users' processes needs {}; with systemd, add them to \
         AmbientCapabilities= and CapabilityBoundingSet= in a drop-in \
         (systemctl edit tpgate)",
        p.euid,
        names.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "Name:\ttpgate\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
                        CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                        CapEff:\t000001ffffffffff\n";
    /// The unit's: uid 998 with net_bind_service, net_admin, net_raw.
    const SERVICE: &str = "Name:\ttpgate\nUid:\t998\t998\t998\t998\n\
                           CapEff:\t0000000000003400\nCapBnd:\t0000000000003400\n";

    #[test]
    fn reads_uid_and_effective_capabilities() {
        let root = Privileges::parse(ROOT).unwrap();
        assert_eq!(root.euid, 0);
        assert!(root.has(Cap::SysPtrace) && root.has(Cap::NetAdmin));
        let svc = Privileges::parse(SERVICE).unwrap();
        assert_eq!(svc.euid, 998);
        assert!(NETWORK.iter().all(|&c| svc.has(c)));
        assert_eq!(svc.missing(&PROCESS_LOOKUP), PROCESS_LOOKUP);
        assert_eq!(Privileges::parse("Uid:\t1\n"), None);
        assert_eq!(Privileges::parse("Uid:\tx\nCapEff:\t0\n"), None);
    }

    #[test]
    fn warns_about_process_rules_only_when_they_cannot_see_everything() {
        let root = Privileges::parse(ROOT).unwrap();
        let svc = Privileges::parse(SERVICE).unwrap();
        assert_eq!(process_lookup_warning(root, true), None);
        assert_eq!(process_lookup_warning(svc, false), None);
        let text = process_lookup_warning(svc, true).unwrap();
        assert!(text.contains("uid 998"), "{text}");
        assert!(
            text.contains("CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
            "{text}"
        );
        let ptrace_only = Privileges {
            euid: 998,
            effective: 1 << Cap::SysPtrace as u32,
        };
        let text = process_lookup_warning(ptrace_only, true).unwrap();
        assert!(text.contains("needs CAP_DAC_READ_SEARCH;"), "{text}");
    }
}
