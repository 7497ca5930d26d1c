//! Trojan client framing: the request header written once at the start of the TLS stream,
//! and the UDP packet framing used in both directions after a UDP ASSOCIATE. TLS itself, and
//! the fallback a server does for unauthenticated clients, are the caller's or the server's.

use std::fmt;

use sha2::{Digest as _, Sha224};
use thiserror::Error;

use super::addr::{self, AddrEncodeError, AddrParseError};
use crate::net::Destination;

/// Length of the hex SHA-224 password hash that opens every request.
pub const HASH_LEN: usize = 56;
const CRLF: &[u8; 2] = b"\r\n";

/// The credential a Trojan server checks: lowercase hex of SHA-224 of the password. Hashed
/// once when the outbound is built rather than per connection.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Hashes `password`.
    pub fn new(password: &str) -> Self {
        Self(to_hex(&Sha224::digest(password.as_bytes())))
    }

    /// The 56 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The hash is as good as the password to anyone who can reach the server: keep it out of logs.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// Lowercase hex of SHA-224 of `password`, as a Trojan server stores it.
pub fn password_hash(password: &str) -> String {
    PasswordHash::new(password).0
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|&b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]])
        .map(char::from)
        .collect()
}

/// What the client asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Relay the rest of the stream to the destination over TCP.
    Connect,
    /// Carry UDP packets (framed with `encode_udp_packet`) over the stream.
    UdpAssociate,
}

impl Command {
    const fn code(self) -> u8 {
        match self {
            Self::Connect => 0x01,
            Self::UdpAssociate => 0x03,
        }
    }
}

/// Why a Trojan frame cannot be written or read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrojanError {
    /// The destination cannot be written as a SOCKS address.
    #[error("cannot encode destination")]
    Encode(#[from] AddrEncodeError),
    /// A UDP payload longer than the 16-bit length field can count.
    #[error("UDP payload of {0} bytes exceeds 65535")]
    PayloadTooLong(usize),
    /// The address of a received UDP packet is malformed.
    #[error("bad address in UDP packet")]
    Addr(#[from] AddrParseError),
    /// A received UDP packet lacks the CRLF after its length.
    #[error("UDP packet lacks CRLF after its length")]
    MissingCrlf,
}

/// Appends the request header: `hash CRLF CMD address CRLF`. Initial payload, if any, may
/// follow it in the same write. The buffer is untouched on error.
pub fn encode_request(
    hash: &PasswordHash,
    cmd: Command,
    dst: &Destination,
    out: &mut Vec<u8>,
) -> Result<(), TrojanError> {
    let start = out.len();
    out.extend_from_slice(hash.as_str().as_bytes());
    out.extend_from_slice(CRLF);
    out.push(cmd.code());
    addr::encode(dst, out).inspect_err(|_| out.truncate(start))?;
    out.extend_from_slice(CRLF);
    Ok(())
}

/// One UDP packet read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<'a> {
    /// Where it goes (client to server) or where it came from (server to client).
    pub dst: Destination,
    /// The datagram's payload.
    pub payload: &'a [u8],
}

/// Appends one UDP packet: `address | length (u16 BE) | CRLF | payload`. The buffer is
/// untouched on error.
pub fn encode_udp_packet(
    dst: &Destination,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), TrojanError> {
    let len =
        u16::try_from(payload.len()).map_err(|_| TrojanError::PayloadTooLong(payload.len()))?;
    addr::encode(dst, out)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(CRLF);
    out.extend_from_slice(payload);
    Ok(())
}

/// Reads one UDP packet from the start of `buf`: `Ok(None)` until all of it has arrived, so
/// a caller can cut a stream into packets by repeatedly consuming what this reports.
pub fn parse_udp_packet(buf: &[u8]) -> Result<Option<(UdpPacket<'_>, usize)>, TrojanError> {
    let Some((dst, addr_len)) = addr::parse(buf)? else {
        return Ok(None);
    };
    let Some(&[hi, lo, cr, lf]) = buf.get(addr_len..addr_len + 4) else {
        return Ok(None);
    };
    if [cr, lf] != *CRLF {
        return Err(TrojanError::MissingCrlf);
    }
    let start = addr_len + 4;
    let end = start + usize::from(u16::from_be_bytes([hi, lo]));
    let Some(payload) = buf.get(start..end) else {
        return Ok(None);
    };
    Ok(Some((UdpPacket { dst, payload }, end)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::arb;

    const PASSWORD_HASH: &str = "d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01";

    #[test]
    fn sha224_hex() {
        assert_eq!(password_hash("password"), PASSWORD_HASH);
        let empty = "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f";
        assert_eq!(PasswordHash::new("").as_str(), empty);
        assert_eq!(PasswordHash::new("x").as_str().len(), HASH_LEN);
        assert_eq!(
            format!("{:?}", PasswordHash::new("password")),
            "PasswordHash(..)"
        );
    }

    #[test]
    fn request_bytes() {
        let hash = PasswordHash::new("password");
        let mut out = Vec::new();
        let dst = Destination::Domain("example.com".into(), 443);
        encode_request(&hash, Command::Connect, &dst, &mut out).unwrap();
        let mut want = format!("{PASSWORD_HASH}\r\n").into_bytes();
        want.extend_from_slice(b"\x01\x03\x0bexample.com\x01\xbb\r\n");
        assert_eq!(out, want);

        out.clear();
        let v4 = Destination::Addr("192.0.2.1:53".parse().unwrap());
        encode_request(&hash, Command::UdpAssociate, &v4, &mut out).unwrap();
        assert_eq!(
            &out[HASH_LEN..],
            b"\r\n\x03\x01\xc0\x00\x02\x01\x00\x35\r\n"
        );

        out.clear();
        let long = Destination::Domain("a".repeat(256), 1);
        let err = encode_request(&hash, Command::Connect, &long, &mut out);
        assert_eq!(
            err,
            Err(TrojanError::Encode(AddrEncodeError::DomainTooLong(256)))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn udp_packet_bytes() {
        let dst = Destination::Addr("198.51.100.7:53".parse().unwrap());
        let mut out = Vec::new();
        encode_udp_packet(&dst, b"hi", &mut out).unwrap();
        assert_eq!(out, b"\x01\xc6\x33\x64\x07\x00\x35\x00\x02\r\nhi");
        let packet = UdpPacket {
            dst,
            payload: b"hi",
        };
        assert_eq!(parse_udp_packet(&out), Ok(Some((packet, out.len()))));
    }

    #[test]
    fn udp_packet_errors() {
        let dst = Destination::Addr("198.51.100.7:53".parse().unwrap());
        let mut out = Vec::new();
        let big = vec![0; 65536];
        let err = encode_udp_packet(&dst, &big, &mut out);
        assert_eq!(err, Err(TrojanError::PayloadTooLong(65536)));
        assert!(out.is_empty());
        encode_udp_packet(&dst, &big[1..], &mut out).unwrap();
        assert_eq!(parse_udp_packet(&out).unwrap().unwrap().1, out.len());

        let no_crlf = b"\x01\xc6\x33\x64\x07\x00\x35\x00\x02\r\rhi";
        assert_eq!(parse_udp_packet(no_crlf), Err(TrojanError::MissingCrlf));
        let bad_atyp = parse_udp_packet(b"\x09\x00");
        assert_eq!(
            bad_atyp,
            Err(TrojanError::Addr(AddrParseError::UnknownType(9)))
        );
    }

    proptest! {
        #[test]
        fn udp_stream_round_trip(
            packets in proptest::collection::vec(
                (arb::destination(), proptest::collection::vec(any::<u8>(), 0..64)),
                1..4,
            ),
        ) {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            for (dst, payload) in &packets {
                encode_udp_packet(dst, payload, &mut stream).unwrap();
                ends.push(stream.len());
            }
            let mut at = 0;
            for ((dst, payload), end) in packets.iter().zip(ends) {
                for cut in at..end {
                    prop_assert_eq!(parse_udp_packet(&stream[at..cut]), Ok(None));
                }
                let (packet, used) = parse_udp_packet(&stream[at..]).unwrap().unwrap();
                prop_assert_eq!(&packet.dst, dst);
                prop_assert_eq!(packet.payload, &payload[..]);
                at += used;
                prop_assert_eq!(at, end);
            }
        }

        #[test]
        fn any_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((packet, used))) = parse_udp_packet(&buf) {
                prop_assert!(used <= buf.len() && packet.payload.len() <= used);
            }
        }
    }
}
