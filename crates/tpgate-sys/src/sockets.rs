//! Transparent and marked sockets. `IP_TRANSPARENT` lets a socket accept TPROXY'd traffic
//! and bind addresses that are not local (to answer UDP from the address the client asked);
//! `SO_MARK` keeps tpgate's own traffic out of its interception.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

fn transparent(addr: SocketAddr, ty: Type, proto: Protocol, mark: u32) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty.nonblocking(), Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_ip_transparent_v6(true)?;
    } else {
        s.set_ip_transparent_v4(true)?;
    }
    s.set_mark(mark)?;
    s.set_reuse_address(true)?;
    Ok(s)
}

/// A TPROXY TCP listener. Accepted sockets inherit `mark`, so their SYN-ACKs and data are
/// recognisable as tpgate's own, and `TCP_NODELAY`, so relayed requests and answers leave at
/// once. `shared`: one of several listeners on `addr` (`SO_REUSEPORT`), among which the
/// kernel spreads new connections.
pub fn transparent_tcp_listener(
    addr: SocketAddr,
    mark: u32,
    shared: bool,
) -> io::Result<TcpListener> {
    let s = transparent(addr, Type::STREAM, Protocol::TCP, mark)?;
    s.set_tcp_nodelay(true)?;
    if shared {
        s.set_reuse_port(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// What a transparent UDP socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpRole {
    /// The TPROXY listener: receives every intercepted datagram with its original
    /// destination attached. `shared`: one of several listeners on the address
    /// (`SO_REUSEPORT`); the kernel picks one by a hash of the addresses and ports, so a
    /// flow's datagrams keep to one listener.
    Listener { shared: bool },
    /// Sends replies from a (usually non-local) original destination; never connected, so
    /// the kernel's TPROXY lookup keeps delivering clients' datagrams to the listener.
    Reply,
}

pub fn transparent_udp_socket(addr: SocketAddr, mark: u32, role: UdpRole) -> io::Result<UdpSocket> {
    let s = transparent(addr, Type::DGRAM, Protocol::UDP, mark)?;
    if let UdpRole::Listener { shared } = role {
        if shared {
            s.set_reuse_port(true)?;
        }
        crate::udp::enable_orig_dst(&s, addr.is_ipv6())?;
        // Every intercepted datagram of every flow queues here: a burst (or one large
        // datagram in many fragments) must not overflow the 208 KiB default.
        large_receive_buffer(&s, LISTENER_RCVBUF);
    } else {
        // Many flows may answer from the same popular address (a DNS server).
        s.set_reuse_port(true)?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Receive buffer of a UDP listener. The kernel charges it only for what is queued.
const LISTENER_RCVBUF: usize = 8 << 20;
/// Receive buffer of an outbound UDP socket, where one flow's replies queue.
const OUTBOUND_RCVBUF: usize = 1 << 20;

/// Sets `SO_RCVBUF` to `size`, above `net.core.rmem_max` when allowed (`SO_RCVBUFFORCE`
/// needs CAP_NET_ADMIN, which a TPROXY daemon has); a refusal keeps the default.
fn large_receive_buffer(s: &Socket, size: usize) {
    let forced = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::RcvBufForce, &size);
    if forced.is_err() {
        let _ = s.set_recv_buffer_size(size);
    }
}

/// An unbound outbound socket of `domain` carrying `mark`, non-blocking.
pub fn outbound_socket(ipv6: bool, ty: Type, mark: u32) -> io::Result<Socket> {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let proto = if ty == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let s = Socket::new(domain, ty.nonblocking(), Some(proto))?;
    s.set_mark(mark)?;
    if ty == Type::DGRAM {
        large_receive_buffer(&s, OUTBOUND_RCVBUF);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shared listeners on one port, and accepted sockets without Nagle's delay. Needs
    /// CAP_NET_ADMIN for IP_TRANSPARENT (the test suite runs as root); skipped without it.
    #[test]
    fn shared_listeners_accept_with_nodelay() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let first = match transparent_tcp_listener(any, 0xff, true) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                eprintln!("SKIPPED: no CAP_NET_ADMIN ({e})");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let addr = first.local_addr().unwrap();
        let second = transparent_tcp_listener(addr, 0xff, true).expect("a second shared listener");
        assert!(
            transparent_tcp_listener(addr, 0xff, false).is_err(),
            "an unshared listener cannot join"
        );
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let accepted = loop {
            if let Ok((s, _)) = first.accept().or_else(|_| second.accept()) {
                break s;
            }
            std::thread::yield_now();
        };
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY comes from the listener"
        );
        assert_eq!(Socket::from(accepted).mark().unwrap(), 0xff, "and the mark");
    }
}
