//! Transparent and marked sockets. `IP_TRANSPARENT` lets a socket accept TPROXY'd traffic
//! and bind addresses that are not local (to answer UDP from the address the client asked);
//! `SO_MARK` keeps tpgate's own traffic out of its interception.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

fn transparent(addr: SocketAddr, ty: Type, proto: Protocol, mark: u32) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_ip_transparent_v6(true)?;
    } else {
        s.set_ip_transparent_v4(true)?;
    }
    s.set_mark(mark)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A TPROXY TCP listener. Accepted sockets inherit `mark`, so their SYN-ACKs and data are
/// recognisable as tpgate's own.
pub fn transparent_tcp_listener(addr: SocketAddr, mark: u32) -> io::Result<TcpListener> {
    let s = transparent(addr, Type::STREAM, Protocol::TCP, mark)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// What a transparent UDP socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpRole {
    /// The TPROXY listener: receives every intercepted datagram with its original
    /// destination attached.
    Listener,
    /// Sends replies from a (usually non-local) original destination; never connected, so
    /// the kernel's TPROXY lookup keeps delivering clients' datagrams to the listener.
    Reply,
}

pub fn transparent_udp_socket(addr: SocketAddr, mark: u32, role: UdpRole) -> io::Result<UdpSocket> {
    let s = transparent(addr, Type::DGRAM, Protocol::UDP, mark)?;
    if role == UdpRole::Listener {
        crate::udp::enable_orig_dst(&s, addr.is_ipv6())?;
    } else {
        // Many flows may answer from the same popular address (a DNS server).
        s.set_reuse_port(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// An unbound outbound socket of `domain` carrying `mark`, non-blocking.
pub fn outbound_socket(ipv6: bool, ty: Type, mark: u32) -> io::Result<Socket> {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let proto = if ty == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let s = Socket::new(domain, ty, Some(proto))?;
    s.set_mark(mark)?;
    s.set_nonblocking(true)?;
    Ok(s)
}
