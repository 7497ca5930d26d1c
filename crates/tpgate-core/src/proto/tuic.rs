//! TUIC v5 client framing (tuic-protocol/tuic `SPEC.md`): the commands `Authenticate`,
//! `Connect`, `Packet` (a UDP datagram or a fragment of one, with TUIC's address form),
//! `Dissociate` and `Heartbeat`. There are no replies in TUIC; the only thing read from a
//! server is `Packet`.
//!
//! QUIC, TLS and the keying-material export that turns the password into the token are the
//! caller's.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

use super::fragments::Piece;
use crate::net::Destination;

pub const VERSION: u8 = 0x05;
const AUTHENTICATE: u8 = 0x00;
const CONNECT: u8 = 0x01;
const PACKET: u8 = 0x02;
const DISSOCIATE: u8 = 0x03;
const HEARTBEAT: u8 = 0x04;

const ADDR_DOMAIN: u8 = 0x00;
const ADDR_IPV4: u8 = 0x01;
const ADDR_IPV6: u8 = 0x02;
const ADDR_NONE: u8 = 0xff;

/// The header of a `Packet` before its address.
const PACKET_HEAD: usize = 2 + 2 + 2 + 1 + 1 + 2;

/// The `Heartbeat` command (sent as a QUIC datagram).
pub const HEARTBEAT_COMMAND: [u8; 2] = [VERSION, HEARTBEAT];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TuicError {
    #[error("a domain name of {0} bytes (TUIC allows 1 to 255)")]
    Domain(usize),
    #[error("a datagram of {len} bytes needs more than 255 fragments of {room}")]
    TooLong { len: usize, room: usize },
    #[error("a Packet may be {max} bytes, its header alone is {header}")]
    NoRoom { max: usize, header: usize },
    #[error("TUIC version {0}, not 5")]
    Version(u8),
    #[error("command {0} where a Packet was expected")]
    Command(u8),
    #[error("address type {0:#04x}")]
    AddrType(u8),
    #[error("a domain name that is not text")]
    DomainText,
    #[error("fragment {fragment} of {fragments}")]
    Fragment { fragment: u8, fragments: u8 },
    #[error("a Packet shorter than its size field says")]
    Truncated,
}

/// `Authenticate`: the client's uuid and the token exported from the TLS session (label the
/// uuid, context the password).
pub fn encode_authenticate(uuid: &[u8; 16], token: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 16 + 32);
    out.extend_from_slice(&[VERSION, AUTHENTICATE]);
    out.extend_from_slice(uuid);
    out.extend_from_slice(token);
    out
}

/// `Connect` to `dst`; the stream carries the connection's bytes right after it.
pub fn encode_connect(dst: &Destination, out: &mut Vec<u8>) -> Result<(), TuicError> {
    out.extend_from_slice(&[VERSION, CONNECT]);
    encode_addr(Some(dst), out)
}

/// `Dissociate`: the server may forget the UDP session `assoc`.
pub fn encode_dissociate(assoc: u16) -> Vec<u8> {
    let mut out = vec![VERSION, DISSOCIATE];
    out.extend_from_slice(&assoc.to_be_bytes());
    out
}

fn addr_len(dst: Option<&Destination>) -> usize {
    match dst {
        None => 1,
        Some(Destination::Addr(SocketAddr::V4(_))) => 1 + 4 + 2,
        Some(Destination::Addr(SocketAddr::V6(_))) => 1 + 16 + 2,
        Some(Destination::Domain(name, _)) => 1 + 1 + name.len() + 2,
    }
}

fn encode_addr(dst: Option<&Destination>, out: &mut Vec<u8>) -> Result<(), TuicError> {
    let Some(dst) = dst else {
        out.push(ADDR_NONE);
        return Ok(());
    };
    match dst {
        Destination::Addr(SocketAddr::V4(a)) => {
            out.push(ADDR_IPV4);
            out.extend_from_slice(&a.ip().octets());
        }
        Destination::Addr(SocketAddr::V6(a)) => {
            out.push(ADDR_IPV6);
            out.extend_from_slice(&a.ip().octets());
        }
        Destination::Domain(name, _) => {
            let len = u8::try_from(name.len())
                .ok()
                .filter(|l| *l > 0)
                .ok_or(TuicError::Domain(name.len()))?;
            out.push(ADDR_DOMAIN);
            out.push(len);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&dst.port().to_be_bytes());
    Ok(())
}

/// Frames `payload` to `dst` as `Packet` commands of at most `max` bytes each, one per
/// fragment (the first names the address, the others `None`), each handed to `emit`.
/// Nothing is emitted on error.
pub fn encode_packet(
    assoc: u16,
    packet: u16,
    dst: &Destination,
    payload: &[u8],
    max: usize,
    mut emit: impl FnMut(Vec<u8>),
) -> Result<(), TuicError> {
    let first_head = PACKET_HEAD + addr_len(Some(dst));
    let room = max.saturating_sub(first_head);
    if room == 0 {
        return Err(TuicError::NoRoom {
            max,
            header: first_head,
        });
    }
    if let Destination::Domain(name, _) = dst {
        if name.is_empty() || name.len() > 255 {
            return Err(TuicError::Domain(name.len()));
        }
    }
    // Later fragments have a one-byte address, so they could hold more; cutting all at the
    // first's room keeps the count simple and every piece within `max`.
    let count = payload.len().div_ceil(room).max(1);
    let fragments = u8::try_from(count).map_err(|_| TuicError::TooLong {
        len: payload.len(),
        room,
    })?;
    let mut pieces = payload.chunks(room);
    for fragment in 0..fragments {
        let piece = pieces.next().unwrap_or_default();
        let mut m = Vec::with_capacity(first_head + piece.len());
        m.extend_from_slice(&[VERSION, PACKET]);
        m.extend_from_slice(&assoc.to_be_bytes());
        m.extend_from_slice(&packet.to_be_bytes());
        m.extend_from_slice(&[fragments, fragment]);
        m.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        encode_addr((fragment == 0).then_some(dst), &mut m)?;
        m.extend_from_slice(piece);
        emit(m);
    }
    Ok(())
}

/// A `Packet` from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub assoc: u16,
    pub packet: u16,
    pub fragments: u8,
    pub fragment: u8,
    /// The datagram's source (first fragment only).
    pub addr: Option<Destination>,
    pub payload: &'a [u8],
}

impl<'a> From<&Packet<'a>> for Piece<'a> {
    fn from(p: &Packet<'a>) -> Self {
        Self {
            packet: p.packet,
            fragment: p.fragment,
            fragments: p.fragments,
            payload: p.payload,
        }
    }
}

/// A `Packet` at the front of `buf`: `Ok(None)` while incomplete (a stream in `quic` relay
/// mode); with the bytes it took. From a QUIC datagram the whole datagram is one Packet.
pub fn parse_packet(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, TuicError> {
    let Some(head) = buf.get(..PACKET_HEAD) else {
        return Ok(None);
    };
    if head[0] != VERSION {
        return Err(TuicError::Version(head[0]));
    }
    if head[1] != PACKET {
        return Err(TuicError::Command(head[1]));
    }
    let assoc = u16::from_be_bytes([head[2], head[3]]);
    let packet = u16::from_be_bytes([head[4], head[5]]);
    let (fragments, fragment) = (head[6], head[7]);
    if fragments == 0 || fragment >= fragments {
        return Err(TuicError::Fragment {
            fragment,
            fragments,
        });
    }
    let size = usize::from(u16::from_be_bytes([head[8], head[9]]));
    let Some((addr, used)) = parse_addr(&buf[PACKET_HEAD..])? else {
        return Ok(None);
    };
    let start = PACKET_HEAD + used;
    let Some(payload) = buf.get(start..start + size) else {
        return Ok(None);
    };
    Ok(Some((
        Packet {
            assoc,
            packet,
            fragments,
            fragment,
            addr,
            payload,
        },
        start + size,
    )))
}

#[allow(clippy::type_complexity)]
fn parse_addr(buf: &[u8]) -> Result<Option<(Option<Destination>, usize)>, TuicError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let port = |at: usize| {
        buf.get(at..at + 2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
    };
    match kind {
        ADDR_NONE => Ok(Some((None, 1))),
        ADDR_IPV4 => Ok(buf.get(1..5).zip(port(5)).map(|(ip, port)| {
            let ip = Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
            (Some(Destination::Addr(SocketAddr::new(ip.into(), port))), 7)
        })),
        ADDR_IPV6 => Ok(buf.get(1..17).zip(port(17)).map(|(ip, port)| {
            let mut b = [0u8; 16];
            b.copy_from_slice(ip);
            let ip = Ipv6Addr::from(b);
            (
                Some(Destination::Addr(SocketAddr::new(ip.into(), port))),
                19,
            )
        })),
        ADDR_DOMAIN => {
            let Some(&len) = buf.get(1) else {
                return Ok(None);
            };
            let len = usize::from(len);
            let Some((name, port)) = buf.get(2..2 + len).zip(port(2 + len)) else {
                return Ok(None);
            };
            let name = std::str::from_utf8(name).map_err(|_| TuicError::DomainText)?;
            Ok(Some((
                Some(Destination::Domain(name.to_owned(), port)),
                2 + len + 2,
            )))
        }
        other => Err(TuicError::AddrType(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fragments::Defragger;
    use proptest::prelude::*;

    fn dst(s: &str) -> Destination {
        Destination::Addr(s.parse().unwrap())
    }

    #[test]
    fn commands_are_laid_out_as_the_spec_says() {
        let a = encode_authenticate(&[1; 16], &[2; 32]);
        assert_eq!(&a[..2], &[5, 0]);
        assert_eq!(a.len(), 50);
        let mut c = Vec::new();
        encode_connect(&dst("198.51.100.9:443"), &mut c).unwrap();
        assert_eq!(c, [5, 1, 1, 198, 51, 100, 9, 1, 187]);
        let mut c = Vec::new();
        encode_connect(&Destination::Domain("a.example".into(), 80), &mut c).unwrap();
        assert_eq!(&c[..4], &[5, 1, 0, 9]);
        assert_eq!(&c[4..13], b"a.example");
        assert_eq!(&c[13..], &[0, 80]);
        let mut c = Vec::new();
        assert_eq!(
            encode_connect(&Destination::Domain(String::new(), 80), &mut c),
            Err(TuicError::Domain(0))
        );
        assert_eq!(encode_dissociate(0x0102), [5, 3, 1, 2]);
        assert_eq!(HEARTBEAT_COMMAND, [5, 4]);
    }

    #[test]
    fn packets_round_trip_and_fragment() {
        let to = dst("[2001:db8::5]:53");
        let mut out = Vec::new();
        encode_packet(9, 3, &to, b"query", 1200, |m| out.push(m)).unwrap();
        assert_eq!(out.len(), 1);
        let (p, n) = parse_packet(&out[0]).unwrap().unwrap();
        assert_eq!(n, out[0].len());
        assert_eq!((p.assoc, p.packet, p.fragments, p.fragment), (9, 3, 1, 0));
        assert_eq!(p.addr, Some(to.clone()));
        assert_eq!(p.payload, b"query");

        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        encode_packet(9, 4, &to, &payload, 1200, |m| out.push(m)).unwrap();
        assert_eq!(out.len(), 3);
        let mut d = Defragger::default();
        let mut whole = None;
        for (i, m) in out.iter().enumerate().rev() {
            assert!(m.len() <= 1200);
            let (p, _) = parse_packet(m).unwrap().unwrap();
            assert_eq!(p.addr.is_some(), i == 0, "only the first names the address");
            whole = d.push(&p);
        }
        assert_eq!(whole, Some(payload));
    }

    #[test]
    fn packets_on_a_stream_wait_for_their_bytes() {
        let mut out = Vec::new();
        encode_packet(
            1,
            1,
            &Destination::Domain("d.example".into(), 5353),
            b"abc",
            500,
            |m| out.push(m),
        )
        .unwrap();
        let m = &out[0];
        for cut in 0..m.len() {
            assert_eq!(parse_packet(&m[..cut]), Ok(None), "cut {cut}");
        }
        let mut two = m.clone();
        two.extend_from_slice(m);
        let (_, n) = parse_packet(&two).unwrap().unwrap();
        assert_eq!(n, m.len());
        assert_eq!(
            parse_packet(&[4, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0xff]),
            Err(TuicError::Version(4))
        );
        assert_eq!(
            parse_packet(&[5, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0xff]),
            Err(TuicError::Command(1))
        );
        assert_eq!(
            parse_packet(&[5, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0x07]),
            Err(TuicError::AddrType(7))
        );
        assert!(matches!(
            parse_packet(&[5, 2, 0, 0, 0, 0, 2, 2, 0, 0, 0xff]),
            Err(TuicError::Fragment { .. })
        ));
    }

    #[test]
    fn framing_limits_are_errors() {
        let mut n = 0;
        assert!(matches!(
            encode_packet(1, 1, &dst("192.0.2.1:1"), b"x", 16, |_| n += 1),
            Err(TuicError::NoRoom { .. })
        ));
        assert!(matches!(
            encode_packet(1, 1, &dst("192.0.2.1:1"), &[0; 10_000], 30, |_| n += 1),
            Err(TuicError::TooLong { .. })
        ));
        assert_eq!(n, 0);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_packet(&data);
        }

        #[test]
        fn fragments_reassemble(len in 0usize..5000, max in 40usize..1400, assoc: u16, packet: u16) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 3) as u8).collect();
            let mut out = Vec::new();
            if encode_packet(assoc, packet, &Destination::Domain("x.example".into(), 9), &payload, max, |m| out.push(m)).is_ok() {
                let mut d = Defragger::default();
                let mut whole = None;
                for m in &out {
                    prop_assert!(m.len() <= max);
                    let (p, _) = parse_packet(m).unwrap().unwrap();
                    prop_assert_eq!(p.assoc, assoc);
                    whole = d.push(&p);
                }
                prop_assert_eq!(whole, Some(payload));
            }
        }
    }
}
