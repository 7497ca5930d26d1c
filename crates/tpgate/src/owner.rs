//! The local process that owns one of this host's own flows, for `PROCESS-NAME`,
//! `PROCESS-PATH` and `UID` rules: the socket's owner uid and inode from sock_diag, then the
//! process holding that inode from /proc. Best effort: what cannot be found stays `None`,
//! and process rules then do not match.

use std::net::SocketAddr;

use tpgate_core::net::Network;
use tpgate_core::rules::ProcessInfo;
use tracing::debug;

use crate::sockdiag::{self, SockInfo};

/// Every TCP state but LISTEN; UDP sockets report TCP_CLOSE (unconnected) or
/// TCP_ESTABLISHED (connected).
const ALL_STATES: u32 = !(1 << 10);

/// Finds the process of the local socket `src` talking to `dst`.
pub(crate) fn lookup(network: Network, src: SocketAddr, dst: SocketAddr) -> ProcessInfo {
    let Some(sock) = find_socket(network, src, dst) else {
        debug!("{src} -> {dst}: no local socket found for process rules");
        return ProcessInfo::default();
    };
    let mut info = ProcessInfo {
        uid: Some(sock.uid),
        ..ProcessInfo::default()
    };
    if let Some(pid) = pid_of_inode(sock.inode) {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        info.path = exe.as_ref().map(|p| p.display().to_string());
        info.name = exe
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .or_else(|| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .ok()
                    .map(|c| c.trim_end().to_owned())
            });
    }
    info
}

fn find_socket(network: Network, src: SocketAddr, dst: SocketAddr) -> Option<SockInfo> {
    let proto = match network {
        Network::Tcp => nix::libc::IPPROTO_TCP,
        Network::Udp => nix::libc::IPPROTO_UDP,
    };
    // A dual-stack socket shows IPv4 peers as mapped IPv6: look in both families.
    let families = if src.is_ipv4() {
        [nix::libc::AF_INET, nix::libc::AF_INET6]
    } else {
        [nix::libc::AF_INET6, nix::libc::AF_INET6]
    };
    let mut found = None;
    for family in families {
        let dumped = sockdiag::dump(family as u8, proto as u8, ALL_STATES, |msg| {
            if found.is_some() {
                return;
            }
            let Some(s) = sockdiag::parse_msg(msg) else {
                return;
            };
            if s.src.port() == src.port()
                && same_or_any(s.src, src)
                && (s.dst.port() == 0 || (s.dst.port() == dst.port() && same_or_any(s.dst, dst)))
            {
                found = Some(s);
            }
        });
        if let Err(e) = dumped {
            debug!("sock_diag: {e:#}");
        }
        if found.is_some() {
            break;
        }
    }
    found
}

/// Whether `seen` (from sock_diag) is `want`'s address, or unspecified (an unbound UDP
/// socket), in either IPv4 or IPv4-mapped form.
fn same_or_any(seen: SocketAddr, want: SocketAddr) -> bool {
    let s = seen.ip().to_canonical();
    s.is_unspecified() || s == want.ip().to_canonical()
}

/// The process with a file descriptor on socket `inode` (the first found).
fn pid_of_inode(inode: u32) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}
