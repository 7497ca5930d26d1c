//! sock_diag (`NETLINK_SOCK_DIAG`) dumps of this namespace's sockets: for `doctor` (which
//! listeners are transparent) and for rules on the local process that owns a flow.

use anyhow::{bail, Context as _, Result};
use netlink_sys::{constants::NETLINK_SOCK_DIAG, Socket};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// Dumps the sockets of one family and protocol in `states` (a bit per TCP state), calling
/// `each` with every `inet_diag_msg` and its attributes.
pub(crate) fn dump(family: u8, proto: u8, states: u32, mut each: impl FnMut(&[u8])) -> Result<()> {
    let mut sock = Socket::new(NETLINK_SOCK_DIAG).context("opening sock_diag netlink socket")?;
    sock.bind_auto()?;
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                                // inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid.
    req.extend_from_slice(&[family, proto, 0, 0]);
    req.extend_from_slice(&states.to_ne_bytes());
    req.resize(72, 0);
    sock.send(&req, 0).context("sending sock_diag request")?;
    // Bounded: a dump ends with NLMSG_DONE; give up after many datagrams rather than spin.
    for _ in 0..10_000 {
        let mut buf = Vec::with_capacity(1 << 16);
        let n = sock.recv(&mut buf, 0).context("reading sock_diag")?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into()?) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into()?);
            if len < 16 || off + len > n {
                bail!("malformed sock_diag message");
            }
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => bail!("sock_diag refused the request"),
                _ => {}
            }
            each(&buf[off + 16..off + len]);
            off += (len + 3) & !3;
        }
    }
    bail!("sock_diag dump did not end")
}

/// `struct inet_diag_msg` length; attributes follow.
const MSG_LEN: usize = 72;

/// A socket as sock_diag describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SockInfo {
    pub(crate) src: std::net::SocketAddr,
    pub(crate) dst: std::net::SocketAddr,
    pub(crate) uid: u32,
    pub(crate) inode: u32,
}

/// Parses an `inet_diag_msg` of family `v6` or IPv4.
pub(crate) fn parse_msg(msg: &[u8]) -> Option<SockInfo> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    if msg.len() < MSG_LEN {
        return None;
    }
    let v6 = i32::from(msg[0]) == nix::libc::AF_INET6;
    let addr = |b: &[u8]| -> IpAddr {
        if v6 {
            let a: [u8; 16] = b[..16].try_into().unwrap_or([0; 16]);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
    };
    let sport = u16::from_be_bytes([msg[4], msg[5]]);
    let dport = u16::from_be_bytes([msg[6], msg[7]]);
    let u32_at = |i: usize| u32::from_ne_bytes([msg[i], msg[i + 1], msg[i + 2], msg[i + 3]]);
    Some(SockInfo {
        src: SocketAddr::new(addr(&msg[8..24]), sport),
        dst: SocketAddr::new(addr(&msg[24..40]), dport),
        uid: u32_at(64),
        inode: u32_at(68),
    })
}
