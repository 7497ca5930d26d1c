//! The SOCKS5 address form (`ATYP` + address + big-endian port) that SOCKS5, Shadowsocks and
//! Trojan all reuse. It only encodes and decodes: it never resolves a name nor checks that a
//! domain is a valid host name (an upstream resolves it, or refuses).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

use crate::net::Destination;

/// `ATYP` of an IPv4 address (4 bytes follow).
pub const ATYP_IPV4: u8 = 0x01;
/// `ATYP` of a domain name (a length byte, then that many bytes).
pub const ATYP_DOMAIN: u8 = 0x03;
/// `ATYP` of an IPv6 address (16 bytes follow).
pub const ATYP_IPV6: u8 = 0x04;

/// Longest domain name the one-byte length can carry.
pub const MAX_DOMAIN_LEN: usize = 255;

/// Why a destination cannot be written in the SOCKS address form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddrEncodeError {
    /// The domain name is empty; the length byte cannot be 0.
    #[error("domain name is empty")]
    EmptyDomain,
    /// The domain name needs more bytes than the one-byte length can count.
    #[error("domain name is {0} bytes long, more than {MAX_DOMAIN_LEN}")]
    DomainTooLong(usize),
}

/// Why bytes are not a SOCKS address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddrParseError {
    /// `ATYP` is none of IPv4 (1), domain (3), IPv6 (4).
    #[error("unknown address type {0:#04x}")]
    UnknownType(u8),
    /// A domain address with a length byte of 0.
    #[error("domain name is empty")]
    EmptyDomain,
    /// The domain name bytes are not UTF-8, so they cannot become a `Destination`.
    #[error("domain name is not valid UTF-8")]
    DomainNotUtf8,
}

/// How many bytes `encode` writes for `dst` (valid or not: a too-long domain counts in full).
pub fn encoded_len(dst: &Destination) -> usize {
    match dst {
        Destination::Addr(SocketAddr::V4(_)) => 1 + 4 + 2,
        Destination::Addr(SocketAddr::V6(_)) => 1 + 16 + 2,
        Destination::Domain(name, _) => 1 + 1 + name.len() + 2,
    }
}

/// Appends `dst` as `ATYP | address | port`. An IPv6 scope id is not carried.
pub fn encode(dst: &Destination, out: &mut Vec<u8>) -> Result<(), AddrEncodeError> {
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
            let len =
                u8::try_from(name.len()).map_err(|_| AddrEncodeError::DomainTooLong(name.len()))?;
            if len == 0 {
                return Err(AddrEncodeError::EmptyDomain);
            }
            out.push(ATYP_DOMAIN);
            out.push(len);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&dst.port().to_be_bytes());
    Ok(())
}

/// Reads one address from the start of `buf`: `Ok(None)` until it is all there, then the
/// destination and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Destination, usize)>, AddrParseError> {
    let Some((&atyp, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let (host_len, skip) = match atyp {
        ATYP_IPV4 => (4, 0),
        ATYP_IPV6 => (16, 0),
        ATYP_DOMAIN => match rest.first() {
            None => return Ok(None),
            Some(0) => return Err(AddrParseError::EmptyDomain),
            Some(&n) => (usize::from(n), 1),
        },
        other => return Err(AddrParseError::UnknownType(other)),
    };
    let total = 1 + skip + host_len + 2;
    if buf.len() < total {
        return Ok(None);
    }
    let host = &buf[1 + skip..1 + skip + host_len];
    let port = u16::from_be_bytes([buf[total - 2], buf[total - 1]]);
    let dst = match atyp {
        ATYP_IPV4 => {
            let octets: [u8; 4] = host.try_into().unwrap_or_default();
            Destination::Addr(SocketAddr::from((Ipv4Addr::from(octets), port)))
        }
        ATYP_IPV6 => {
            let octets: [u8; 16] = host.try_into().unwrap_or_default();
            Destination::Addr(SocketAddr::from((Ipv6Addr::from(octets), port)))
        }
        _ => {
            let name = std::str::from_utf8(host).map_err(|_| AddrParseError::DomainNotUtf8)?;
            Destination::Domain(name.to_owned(), port)
        }
    };
    Ok(Some((dst, total)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::arb;

    fn encoded(dst: &Destination) -> Vec<u8> {
        let mut out = Vec::new();
        encode(dst, &mut out).expect("valid destination");
        out
    }

    #[test]
    fn known_encodings() {
        let v4 = Destination::Addr("192.0.2.1:80".parse().unwrap());
        assert_eq!(encoded(&v4), [1, 192, 0, 2, 1, 0, 80]);
        let v6 = Destination::Addr("[2001:db8::1]:443".parse().unwrap());
        let mut want = vec![4, 0x20, 0x01, 0x0d, 0xb8];
        want.extend_from_slice(&[0; 11]);
        want.extend_from_slice(&[1, 0x01, 0xbb]);
        assert_eq!(encoded(&v6), want);
        let name = Destination::Domain("example.com".into(), 8080);
        assert_eq!(encoded(&name), b"\x03\x0bexample.com\x1f\x90");
    }

    #[test]
    fn domain_length_limits() {
        let mut out = vec![0xAA];
        let empty = Destination::Domain(String::new(), 1);
        assert_eq!(encode(&empty, &mut out), Err(AddrEncodeError::EmptyDomain));
        let long = Destination::Domain("a".repeat(256), 1);
        assert_eq!(
            encode(&long, &mut out),
            Err(AddrEncodeError::DomainTooLong(256))
        );
        assert_eq!(out, [0xAA], "a failed encode leaves the buffer alone");
        let max = Destination::Domain("a".repeat(255), 1);
        assert_eq!(encoded(&max).len(), 1 + 1 + 255 + 2);
    }

    #[test]
    fn malformed() {
        assert_eq!(parse(&[0x02, 0, 0]), Err(AddrParseError::UnknownType(2)));
        assert_eq!(parse(&[0x00]), Err(AddrParseError::UnknownType(0)));
        assert_eq!(parse(&[0x03, 0, 0, 80]), Err(AddrParseError::EmptyDomain));
        assert_eq!(
            parse(b"\x03\x02\xff\xfe\x00\x50"),
            Err(AddrParseError::DomainNotUtf8)
        );
    }

    #[test]
    fn trailing_bytes_are_left() {
        let mut buf = encoded(&Destination::Domain("a.example".into(), 53));
        let len = buf.len();
        buf.extend_from_slice(b"payload");
        let (_, used) = parse(&buf).unwrap().unwrap();
        assert_eq!(used, len);
    }

    proptest! {
        #[test]
        fn round_trip(dst in arb::destination()) {
            let buf = encoded(&dst);
            prop_assert_eq!(buf.len(), encoded_len(&dst));
            prop_assert_eq!(parse(&buf), Ok(Some((dst, buf.len()))));
            for cut in 0..buf.len() {
                prop_assert_eq!(parse(&buf[..cut]), Ok(None));
            }
        }

        #[test]
        fn any_bytes_parse_or_fail(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((_, used))) = parse(&buf) {
                prop_assert!(used <= buf.len());
            }
        }
    }
}
