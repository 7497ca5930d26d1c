//! VLESS client framing (version 0): the request header written once at the start of the
//! stream (with the flow, if any, in its addons), the response header the server puts
//! before its first bytes, and the length-prefixed UDP packets of a `Udp` request. TLS, if
//! any, is the caller's; Vision's padding is [`super::vision`], the XUDP frames of a `Mux`
//! request [`super::xudp`]. Mux streams other than XUDP are deliberately absent.
//!
//! Request: `version 0 | uuid (16) | addons length | addons | command | port (u16 BE) |
//! address type (1 IPv4, 2 domain with a length byte, 3 IPv6) | address`. Response:
//! `version | addons length | addons`. The port comes before the address, and the address
//! type codes differ from SOCKS: this is not the SOCKS address form of [`super::addr`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use thiserror::Error;

use super::addr::MAX_DOMAIN_LEN;
use crate::net::Destination;

/// The only version tpgate speaks, and the one it expects back.
pub const VERSION: u8 = 0;
const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 2;
const ATYP_IPV6: u8 = 3;

/// A VLESS (and VMess) user id: 16 bytes, written in configs as the usual 36-character
/// hyphenated hex form (hyphens optional).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Uuid(pub [u8; 16]);

/// The id is the only credential a VLESS server checks: keep it out of logs.
impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Uuid(..)")
    }
}

/// Why a string is not a user id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not a UUID (32 hex digits, e.g. 3f2504e0-4f89-41d3-9a0c-0305e82c3301)")]
pub struct UuidParseError;

impl FromStr for Uuid {
    type Err = UuidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
        let dashes_ok = s.len() == 32
            || (s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-'));
        if hex.len() != 32 || !dashes_ok {
            return Err(UuidParseError);
        }
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let digit = |c: u8| char::from(c).to_digit(16).ok_or(UuidParseError);
            let (hi, lo) = (digit(pair[0])?, digit(pair[1])?);
            *byte = u8::try_from(hi << 4 | lo).map_err(|_| UuidParseError)?;
        }
        Ok(Self(out))
    }
}

/// What the client asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Relay the rest of the stream to the destination over TCP.
    Tcp,
    /// Carry UDP packets to and from the destination, each framed by
    /// [`encode_udp_packet`].
    Udp,
    /// Mux.Cool; tpgate sends only XUDP over it (UDP through a Vision flow). The request
    /// carries no address: each frame names its own.
    Mux,
}

impl Command {
    const fn code(self) -> u8 {
        match self {
            Self::Tcp => 1,
            Self::Udp => 2,
            Self::Mux => 3,
        }
    }
}

/// Why a VLESS frame cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VlessError {
    /// An empty domain name cannot be sent.
    #[error("domain name is empty")]
    EmptyDomain,
    /// The domain needs more bytes than its length byte can count.
    #[error("domain name is {0} bytes long, more than {MAX_DOMAIN_LEN}")]
    DomainTooLong(usize),
    /// A UDP payload longer than the 16-bit length field can count.
    #[error("UDP payload of {0} bytes exceeds 65535")]
    PayloadTooLong(usize),
    /// A flow name too long for the one-byte addons length.
    #[error("flow name of {0} bytes is too long")]
    FlowTooLong(usize),
}

/// Why the server's response header is not one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResponseError {
    /// The server answered with another version than the request's.
    #[error("response version {0}, expected {VERSION}")]
    Version(u8),
}

/// Appends the request header without a flow. Initial payload, if any, may follow it in
/// the same write. The buffer is untouched on error.
pub fn encode_request(
    uuid: &Uuid,
    cmd: Command,
    dst: &Destination,
    out: &mut Vec<u8>,
) -> Result<(), VlessError> {
    encode_request_with_flow(uuid, cmd, dst, None, out)
}

/// [`encode_request`] naming `flow` in the addons (a protobuf message whose field 1, a
/// string, is the flow). A `Mux` request ends after the command: `dst` is not written.
pub fn encode_request_with_flow(
    uuid: &Uuid,
    cmd: Command,
    dst: &Destination,
    flow: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<(), VlessError> {
    let addons = flow.map_or(0, |f| 2 + f.len());
    let addons = u8::try_from(addons)
        .ok()
        .filter(|_| flow.is_none_or(|f| f.len() < 128))
        .ok_or(VlessError::FlowTooLong(flow.map_or(0, str::len)))?;
    if cmd != Command::Mux {
        check_domain(dst)?;
    }
    out.push(VERSION);
    out.extend_from_slice(&uuid.0);
    out.push(addons);
    if let Some(flow) = flow {
        // Field 1, wire type 2 (length-delimited); a length under 128 is one varint byte.
        out.push(0x0a);
        out.push(addons - 2);
        out.extend_from_slice(flow.as_bytes());
    }
    out.push(cmd.code());
    if cmd == Command::Mux {
        return Ok(());
    }
    encode_addr_port(dst, out);
    Ok(())
}

/// Appends `port (u16 BE) | address type | address`, the form VLESS and XUDP share; the
/// caller has checked a domain's length.
pub(super) fn encode_addr_port(dst: &Destination, out: &mut Vec<u8>) {
    out.extend_from_slice(&dst.port().to_be_bytes());
    match dst {
        Destination::Addr(SocketAddr::V4(a)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&a.ip().octets());
        }
        Destination::Addr(SocketAddr::V6(a)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&a.ip().octets());
        }
        Destination::Domain(name, _) => {
            out.push(ATYP_DOMAIN);
            out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(name.as_bytes());
        }
    }
}

/// Refuses a domain that cannot be written.
pub(super) fn check_domain(dst: &Destination) -> Result<(), VlessError> {
    if let Destination::Domain(name, _) = dst {
        if name.is_empty() {
            return Err(VlessError::EmptyDomain);
        }
        if name.len() > MAX_DOMAIN_LEN {
            return Err(VlessError::DomainTooLong(name.len()));
        }
    }
    Ok(())
}

/// Reads the response header from the start of `buf`: `Ok(None)` until all of it has
/// arrived, then `Ok(Some(length))`; the bytes after it are the destination's. The addons,
/// which only a flow would fill, are skipped.
pub fn parse_response(buf: &[u8]) -> Result<Option<usize>, ResponseError> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(ResponseError::Version(version));
    }
    let Some(&addons) = buf.get(1) else {
        return Ok(None);
    };
    let len = 2 + usize::from(addons);
    Ok((buf.len() >= len).then_some(len))
}

/// Appends one UDP packet: `length (u16 BE) | payload`. The buffer is untouched on error.
pub fn encode_udp_packet(payload: &[u8], out: &mut Vec<u8>) -> Result<(), VlessError> {
    let len =
        u16::try_from(payload.len()).map_err(|_| VlessError::PayloadTooLong(payload.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Reads one UDP packet from the start of `buf`: its payload and how many bytes it took,
/// or `None` until all of it has arrived. Any bytes frame some packet, so this never fails.
pub fn parse_udp_packet(buf: &[u8]) -> Option<(&[u8], usize)> {
    let &[hi, lo, ..] = buf else {
        return None;
    };
    let end = 2 + usize::from(u16::from_be_bytes([hi, lo]));
    buf.get(2..end).map(|payload| (payload, end))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::arb;

    const ID: &str = "b831381d-6324-4d53-ad4f-8cda48b30811";
    const ID_BYTES: [u8; 16] = [
        0xb8, 0x31, 0x38, 0x1d, 0x63, 0x24, 0x4d, 0x53, 0xad, 0x4f, 0x8c, 0xda, 0x48, 0xb3, 0x08,
        0x11,
    ];

    #[test]
    fn uuid_forms() {
        assert_eq!(ID.parse(), Ok(Uuid(ID_BYTES)));
        assert_eq!(ID.to_uppercase().parse(), Ok(Uuid(ID_BYTES)));
        assert_eq!(ID.replace('-', "").parse(), Ok(Uuid(ID_BYTES)));
        for bad in [
            "",
            "b831381d6324-4d53-ad4f-8cda48b30811-",
            "b831381d-6324-4d53-ad4f-8cda48b3081",
            "g831381d-6324-4d53-ad4f-8cda48b30811",
            "b831381d-6324-4d53-ad4f-8cda48b308111",
            "+831381d-6324-4d53-ad4f-8cda48b30811",
        ] {
            assert_eq!(bad.parse::<Uuid>(), Err(UuidParseError), "{bad}");
        }
        assert_eq!(format!("{:?}", Uuid(ID_BYTES)), "Uuid(..)");
    }

    #[test]
    fn request_bytes() {
        let id = Uuid(ID_BYTES);
        let mut out = Vec::new();
        let v4 = Destination::Addr("192.0.2.1:80".parse().unwrap());
        encode_request(&id, Command::Tcp, &v4, &mut out).unwrap();
        let mut want = vec![0];
        want.extend_from_slice(&ID_BYTES);
        want.extend_from_slice(b"\x00\x01\x00\x50\x01\xc0\x00\x02\x01");
        assert_eq!(out, want);

        out.clear();
        let v6 = Destination::Addr("[2001:db8::1]:53".parse().unwrap());
        encode_request(&id, Command::Udp, &v6, &mut out).unwrap();
        assert_eq!(&out[17..22], b"\x00\x02\x00\x35\x03");
        assert_eq!(
            out[22..],
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );

        out.clear();
        let name = Destination::Domain("example.com".into(), 443);
        encode_request(&id, Command::Tcp, &name, &mut out).unwrap();
        assert_eq!(&out[17..], b"\x00\x01\x01\xbb\x02\x0bexample.com");

        out.clear();
        let long = Destination::Domain("a".repeat(256), 1);
        let err = encode_request(&id, Command::Tcp, &long, &mut out);
        assert_eq!(err, Err(VlessError::DomainTooLong(256)));
        let empty = Destination::Domain(String::new(), 1);
        let err = encode_request(&id, Command::Tcp, &empty, &mut out);
        assert_eq!(err, Err(VlessError::EmptyDomain));
        assert!(out.is_empty());
    }

    #[test]
    fn response() {
        assert_eq!(parse_response(b""), Ok(None));
        assert_eq!(parse_response(b"\x00"), Ok(None));
        assert_eq!(parse_response(b"\x00\x00"), Ok(Some(2)));
        assert_eq!(parse_response(b"\x00\x00SSH-2.0"), Ok(Some(2)));
        assert_eq!(parse_response(b"\x00\x03ab"), Ok(None));
        assert_eq!(parse_response(b"\x00\x03abcdata"), Ok(Some(5)));
        assert_eq!(parse_response(b"\x01"), Err(ResponseError::Version(1)));
        assert_eq!(
            parse_response(b"HTTP/1.1"),
            Err(ResponseError::Version(b'H'))
        );
    }

    #[test]
    fn udp_packets() {
        let mut out = Vec::new();
        encode_udp_packet(b"hi", &mut out).unwrap();
        encode_udp_packet(b"", &mut out).unwrap();
        assert_eq!(out, b"\x00\x02hi\x00\x00");
        assert_eq!(parse_udp_packet(&out), Some((&b"hi"[..], 4)));
        assert_eq!(parse_udp_packet(&out[4..]), Some((&b""[..], 2)));
        assert_eq!(parse_udp_packet(&out[..3]), None);
        assert_eq!(parse_udp_packet(&out[..1]), None);
        let big = vec![0; 65536];
        let err = encode_udp_packet(&big, &mut out);
        assert_eq!(err, Err(VlessError::PayloadTooLong(65536)));
        assert_eq!(out.len(), 6);
    }

    #[test]
    fn request_with_flow_and_mux() {
        let id = Uuid(ID_BYTES);
        let mut out = Vec::new();
        let v4 = Destination::Addr("192.0.2.1:80".parse().unwrap());
        encode_request_with_flow(&id, Command::Tcp, &v4, Some("xtls-rprx-vision"), &mut out)
            .unwrap();
        assert_eq!(out[17], 18);
        assert_eq!(&out[18..36], b"\x0a\x10xtls-rprx-vision");
        assert_eq!(&out[36..], b"\x01\x00\x50\x01\xc0\x00\x02\x01");

        out.clear();
        encode_request_with_flow(&id, Command::Mux, &v4, Some("xtls-rprx-vision"), &mut out)
            .unwrap();
        assert_eq!(out.len(), 37);
        assert_eq!(out[36], 3);

        out.clear();
        let long = "f".repeat(128);
        let err = encode_request_with_flow(&id, Command::Tcp, &v4, Some(&long), &mut out);
        assert_eq!(err, Err(VlessError::FlowTooLong(128)));
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn request_is_header_then_address(dst in arb::destination(), id in any::<[u8; 16]>()) {
            let mut out = Vec::new();
            encode_request(&Uuid(id), Command::Tcp, &dst, &mut out).unwrap();
            prop_assert_eq!(&out[1..17], &id[..]);
            prop_assert_eq!(&out[19..21], &dst.port().to_be_bytes()[..]);
            let addr_len = match &dst {
                Destination::Addr(SocketAddr::V4(_)) => 4,
                Destination::Addr(SocketAddr::V6(_)) => 16,
                Destination::Domain(name, _) => 1 + name.len(),
            };
            prop_assert_eq!(out.len(), 22 + addr_len);
        }

        #[test]
        fn response_prefixes_need_more(addons in proptest::collection::vec(any::<u8>(), 0..255)) {
            let mut buf = vec![VERSION, u8::try_from(addons.len()).unwrap()];
            buf.extend_from_slice(&addons);
            for cut in 0..buf.len() {
                prop_assert_eq!(parse_response(&buf[..cut]), Ok(None));
            }
            buf.extend_from_slice(b"tail");
            prop_assert_eq!(parse_response(&buf), Ok(Some(2 + addons.len())));
        }

        #[test]
        fn udp_stream_round_trip(
            packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..4),
        ) {
            let mut stream = Vec::new();
            for p in &packets {
                encode_udp_packet(p, &mut stream).unwrap();
            }
            let mut at = 0;
            for p in &packets {
                let (payload, used) = parse_udp_packet(&stream[at..]).unwrap();
                prop_assert_eq!(payload, &p[..]);
                at += used;
            }
            prop_assert_eq!(at, stream.len());
        }
    }
}
