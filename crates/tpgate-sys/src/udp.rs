//! The original destination of TPROXY'd datagrams (`IP_ORIGDSTADDR` /
//! `IPV6_ORIGDSTADDR` control messages), read by [`crate::RecvBatch`].

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::sys::socket::{setsockopt, sockopt, ControlMessageOwned, SockaddrStorage};

pub(crate) fn enable_orig_dst(s: &socket2::Socket, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt(s, sockopt::Ipv6OrigDstAddr, &true)?;
    } else {
        setsockopt(s, sockopt::Ipv4OrigDstAddr, &true)?;
    }
    Ok(())
}

/// One received datagram: its length in the buffer, who sent it and where it was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub len: usize,
    pub src: SocketAddr,
    /// `None` when the kernel attached no original destination (not a TPROXY'd packet).
    pub orig_dst: Option<SocketAddr>,
}

/// The original destination among a datagram's control messages, if the kernel attached one.
pub(crate) fn orig_dst_of(cmsgs: impl Iterator<Item = ControlMessageOwned>) -> Option<SocketAddr> {
    let mut orig_dst = None;
    for c in cmsgs {
        match c {
            ControlMessageOwned::Ipv4OrigDstAddr(a) => {
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                orig_dst = Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(a.sin_port),
                )));
            }
            ControlMessageOwned::Ipv6OrigDstAddr(a) => {
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                orig_dst = Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )));
            }
            _ => {}
        }
    }
    orig_dst
}

pub(crate) fn storage_to_std(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    s.as_sockaddr_in6().map(|v6| {
        SocketAddr::V6(SocketAddrV6::new(
            v6.ip(),
            v6.port(),
            v6.flowinfo(),
            v6.scope_id(),
        ))
    })
}
