//! Minimal proxy clients written from the protocol specs (RFC 1928/1929 SOCKS5, RFC 9110
//! HTTP CONNECT), used to check the lab's upstream servers without tpgate. Blocking std I/O
//! with the lab's timeouts; every error is an `io::Error` so tests can say what failed.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use super::{tcp_connect, Family, Netns, PatientRecv};

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// SOCKS-style address: ATYP, address, port (big-endian).
pub(crate) fn socks_addr(addr: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(19);
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(1);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

/// Parses a SOCKS-style address (IP only) from the front of `buf`; returns it and its length.
pub(crate) fn parse_socks_addr(buf: &[u8]) -> io::Result<(SocketAddr, usize)> {
    let (ip, len): (IpAddr, usize) = match buf.first() {
        Some(1) if buf.len() >= 7 => {
            let o: [u8; 4] = buf[1..5].try_into().map_err(|_| bad("short addr"))?;
            (Ipv4Addr::from(o).into(), 5)
        }
        Some(4) if buf.len() >= 19 => {
            let o: [u8; 16] = buf[1..17].try_into().map_err(|_| bad("short addr"))?;
            (Ipv6Addr::from(o).into(), 17)
        }
        other => return Err(bad(format!("unsupported or short ATYP {other:?}"))),
    };
    let port = u16::from_be_bytes([buf[len], buf[len + 1]]);
    Ok((SocketAddr::new(ip, port), len + 2))
}

/// Reads a SOCKS-style address from a stream.
fn read_socks_addr(s: &mut impl Read) -> io::Result<SocketAddr> {
    let mut atyp = [0u8; 1];
    s.read_exact(&mut atyp)?;
    let len = match atyp[0] {
        1 => 4,
        4 => 16,
        3 => {
            let mut n = [0u8; 1];
            s.read_exact(&mut n)?;
            let mut name = vec![0u8; usize::from(n[0]) + 2];
            s.read_exact(&mut name)?;
            return Err(bad("domain name in a SOCKS reply"));
        }
        a => return Err(bad(format!("ATYP {a}"))),
    };
    let mut buf = vec![atyp[0]];
    buf.resize(1 + len + 2, 0);
    s.read_exact(&mut buf[1..])?;
    parse_socks_addr(&buf).map(|(a, _)| a)
}

/// SOCKS5 greeting and (RFC 1929) username/password sub-negotiation.
fn socks5_hello(s: &mut TcpStream, auth: Option<(&str, &str)>) -> io::Result<()> {
    let method = if auth.is_some() { 2 } else { 0 };
    s.write_all(&[5, 1, method])?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply)?;
    if reply != [5, method] {
        return Err(bad(format!("SOCKS5 method reply {reply:?}")));
    }
    if let Some((user, pass)) = auth {
        let mut req = vec![1, u8::try_from(user.len()).map_err(|_| bad("user"))?];
        req.extend_from_slice(user.as_bytes());
        req.push(u8::try_from(pass.len()).map_err(|_| bad("password"))?);
        req.extend_from_slice(pass.as_bytes());
        s.write_all(&req)?;
        s.read_exact(&mut reply)?;
        if reply[1] != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("SOCKS5 auth refused: {reply:?}"),
            ));
        }
    }
    Ok(())
}

/// Sends a SOCKS5 request `cmd` for `dst`; returns the BND address of the reply.
fn socks5_request(s: &mut TcpStream, cmd: u8, dst: SocketAddr) -> io::Result<SocketAddr> {
    let mut req = vec![5, cmd, 0];
    req.extend_from_slice(&socks_addr(dst));
    s.write_all(&req)?;
    let mut head = [0u8; 3];
    s.read_exact(&mut head)?;
    if head[0] != 5 || head[1] != 0 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("SOCKS5 reply code {} for {dst}", head[1]),
        ));
    }
    read_socks_addr(s)
}

/// From `ns`, opens a TCP connection to `dst` through the SOCKS5 proxy at `proxy`.
pub(crate) fn socks5_connect(
    ns: &Netns,
    proxy: SocketAddr,
    auth: Option<(&str, &str)>,
    dst: SocketAddr,
) -> io::Result<TcpStream> {
    let mut s = tcp_connect(ns, proxy)?;
    socks5_hello(&mut s, auth)?;
    socks5_request(&mut s, 1, dst)?;
    Ok(s)
}

/// From `ns`, sends `payload` to `dst` over a SOCKS5 UDP ASSOCIATE of `proxy` and waits
/// for one reply; returns the source address the proxy reported and the payload.
pub(crate) fn socks5_udp_exchange(
    ns: &Netns,
    proxy: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> io::Result<(SocketAddr, Vec<u8>)> {
    let family = if proxy.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let udp = ns.enter(|| UdpSocket::bind(family.any()))?;
    let mut ctl = tcp_connect(ns, proxy)?;
    socks5_hello(&mut ctl, None)?;
    let mut relay = socks5_request(&mut ctl, 3, udp.local_addr()?)?;
    if relay.ip().is_unspecified() {
        relay.set_ip(proxy.ip());
    }
    let mut dgram = vec![0, 0, 0];
    dgram.extend_from_slice(&socks_addr(dst));
    dgram.extend_from_slice(payload);
    udp.set_read_timeout(Some(wait))?;
    udp.send_to(&dgram, relay)?;
    let mut buf = vec![0u8; 65536];
    let (n, _) = udp.recv_from_patiently(&mut buf)?;
    let buf = &buf[..n];
    if buf.len() < 4 || buf[2] != 0 {
        return Err(bad(format!(
            "SOCKS5 UDP header {:?}",
            &buf[..buf.len().min(4)]
        )));
    }
    let (from, len) = parse_socks_addr(&buf[3..])?;
    drop(ctl);
    Ok((from, buf[3 + len..].to_vec()))
}

/// From `ns`, opens a tunnel to `dst` with `CONNECT` through the HTTP proxy at `proxy`.
pub(crate) fn http_connect(
    ns: &Netns,
    proxy: SocketAddr,
    dst: SocketAddr,
) -> io::Result<TcpStream> {
    let mut s = tcp_connect(ns, proxy)?;
    write!(s, "CONNECT {dst} HTTP/1.1\r\nHost: {dst}\r\n\r\n")?;
    // Byte by byte up to the blank line, so no tunnel data is read ahead.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        head.push(b[0]);
        if head.len() > 8192 {
            return Err(bad("CONNECT response head too long"));
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("CONNECT {dst}: {}", head.lines().next().unwrap_or("")),
        ));
    }
    Ok(s)
}

/// Sends `data` on `stream` (from a second thread) and reads back exactly as many bytes,
/// without half-closing: some upstreams (microsocks) close both directions at the first
/// EOF, so an echo through them cannot rely on half-close.
pub(crate) fn echo_exact(stream: &TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut writer = stream.try_clone()?;
    let mut reader = stream.try_clone()?;
    std::thread::scope(|s| {
        let w = s.spawn(move || writer.write_all(data));
        let mut got = vec![0u8; data.len()];
        let mut filled = 0;
        let read = loop {
            if filled == got.len() {
                break Ok(());
            }
            match reader.read(&mut got[filled..]) {
                Ok(0) => {
                    break Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("EOF after {filled} of {} bytes", data.len()),
                    ))
                }
                Ok(n) => filled += n,
                // A signal (the test harness's) interrupted the read: nothing was lost.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        w.join().expect("writer thread")?;
        read.map(|()| got)
    })
}
