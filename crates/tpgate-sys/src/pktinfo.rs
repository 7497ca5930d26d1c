//! A UDP server that answers from the address each query was sent to (`IP_PKTINFO` /
//! `IPV6_PKTINFO`), so a reply to a query that reached it through a NAT redirect, or on
//! one of several local addresses, matches what the client (and conntrack) expect.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn, SockaddrIn6, SockaddrStorage,
};

/// Asks the kernel to report each datagram's destination address.
pub fn enable_pktinfo(s: &impl AsFd, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt(s, sockopt::Ipv6RecvPacketInfo, &true)?;
    } else {
        setsockopt(s, sockopt::Ipv4PacketInfo, &true)?;
    }
    Ok(())
}

/// Non-blocking receive: length, sender, and the local address it was sent to (when the
/// kernel said). `WouldBlock` when nothing is queued.
pub fn recv_with_local(
    fd: &impl AsRawFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    recv_with_arrival(fd, buf).map(|a| (a.len, a.peer, a.local))
}

/// Where a datagram came from and how it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub len: usize,
    pub peer: SocketAddr,
    /// The local address it was sent to.
    pub local: Option<IpAddr>,
    /// The index of the interface it came in on.
    pub ifindex: Option<u32>,
}

/// Like [`recv_with_local`], also telling the interface the datagram arrived on.
pub fn recv_with_arrival(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Arrival> {
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::in_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let peer = msg
        .address
        .as_ref()
        .and_then(|s| {
            s.as_sockaddr_in()
                .map(|a| SocketAddr::new(IpAddr::V4(a.ip()), a.port()))
                .or_else(|| {
                    s.as_sockaddr_in6()
                        .map(|a| SocketAddr::new(IpAddr::V6(a.ip()), a.port()))
                })
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without source"))?;
    let (mut local, mut ifindex) = (None, None);
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(i) => {
                local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr))));
                ifindex = u32::try_from(i.ipi_ifindex).ok();
            }
            ControlMessageOwned::Ipv6PacketInfo(i) => {
                local = Some(IpAddr::V6(Ipv6Addr::from(i.ipi6_addr.s6_addr)));
                ifindex = Some(i.ipi6_ifindex);
            }
            _ => {}
        }
    }
    Ok(Arrival {
        len: msg.bytes,
        peer,
        local,
        ifindex,
    })
}

/// Non-blocking send of `data` to `to`, from the local address `from` when given.
pub fn send_from(
    fd: &impl AsRawFd,
    data: &[u8],
    to: SocketAddr,
    from: Option<IpAddr>,
) -> io::Result<usize> {
    let iov = [IoSlice::new(data)];
    let flags = MsgFlags::MSG_DONTWAIT;
    let fd = fd.as_raw_fd();
    let sent = match (to, from) {
        (SocketAddr::V4(to), Some(IpAddr::V4(from))) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(from).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let dst = SockaddrIn::from(to);
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                flags,
                Some(&dst),
            )?
        }
        (SocketAddr::V6(to), Some(from)) => {
            let from = match from {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: from.octets(),
                },
                ipi6_ifindex: 0,
            };
            let dst = SockaddrIn6::from(to);
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv6PacketInfo(&info)],
                flags,
                Some(&dst),
            )?
        }
        (SocketAddr::V4(to), _) => sendmsg(fd, &iov, &[], flags, Some(&SockaddrIn::from(to)))?,
        (SocketAddr::V6(to), _) => sendmsg(fd, &iov, &[], flags, Some(&SockaddrIn6::from(to)))?,
    };
    Ok(sent)
}
