use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;
use crate::proto::arb;

fn sa(s: &str) -> Destination {
    Destination::Addr(s.parse::<SocketAddr>().unwrap())
}

#[test]
fn greeting_bytes() {
    let mut out = Vec::new();
    encode_greeting(false, &mut out);
    assert_eq!(out, [0x05, 0x01, 0x00]);
    out.clear();
    encode_greeting(true, &mut out);
    assert_eq!(out, [0x05, 0x02, 0x00, 0x02]);
}

#[test]
fn method_selection() {
    assert_eq!(parse_method_selection(&[], false), Ok(None));
    assert_eq!(parse_method_selection(&[5], true), Ok(None));
    assert_eq!(
        parse_method_selection(&[5, 0], false),
        Ok(Some((Method::NoAuth, 2)))
    );
    assert_eq!(
        parse_method_selection(&[5, 0, 9], true),
        Ok(Some((Method::NoAuth, 2)))
    );
    let picked = parse_method_selection(&[5, 2], true);
    assert_eq!(picked, Ok(Some((Method::UsernamePassword, 2))));
    let unoffered = parse_method_selection(&[5, 2], false);
    assert_eq!(unoffered, Err(Socks5Error::MethodNotOffered(2)));
    let gssapi = parse_method_selection(&[5, 1], true);
    assert_eq!(gssapi, Err(Socks5Error::MethodNotOffered(1)));
    let none = parse_method_selection(&[5, 0xFF], true);
    assert_eq!(none, Err(Socks5Error::NoAcceptableMethod));
    assert_eq!(
        parse_method_selection(&[4, 0], false),
        Err(Socks5Error::BadVersion(4))
    );
}

#[test]
fn auth_request_bytes_and_limits() {
    let mut out = Vec::new();
    encode_auth_request("user", "pass", &mut out).unwrap();
    assert_eq!(out, b"\x01\x04user\x04pass");
    out.clear();
    let long = "x".repeat(256);
    let err = encode_auth_request(&long, "p", &mut out);
    assert_eq!(
        err,
        Err(Socks5Error::CredentialTooLong {
            field: "username",
            len: 256
        })
    );
    let err = encode_auth_request("u", &long, &mut out);
    assert_eq!(
        err,
        Err(Socks5Error::CredentialTooLong {
            field: "password",
            len: 256
        })
    );
    assert!(out.is_empty());
    encode_auth_request(&"x".repeat(255), "", &mut out).unwrap();
    assert_eq!(out.len(), 1 + 1 + 255 + 1);
}

#[test]
fn auth_reply() {
    assert_eq!(parse_auth_reply(&[1]), Ok(None));
    assert_eq!(parse_auth_reply(&[1, 0]), Ok(Some(2)));
    assert_eq!(parse_auth_reply(&[5, 0]), Ok(Some(2)));
    assert_eq!(parse_auth_reply(&[1, 1]), Err(Socks5Error::AuthFailed(1)));
    assert_eq!(
        parse_auth_reply(&[2, 0]),
        Err(Socks5Error::BadAuthVersion(2))
    );
}

#[test]
fn request_bytes() {
    let mut out = Vec::new();
    encode_request(Command::Connect, &sa("192.0.2.1:80"), &mut out).unwrap();
    assert_eq!(out, [5, 1, 0, 1, 192, 0, 2, 1, 0, 80]);
    out.clear();
    encode_request(Command::UdpAssociate, &sa("0.0.0.0:0"), &mut out).unwrap();
    assert_eq!(out, [5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
    out.clear();
    let name = Destination::Domain("example.org".into(), 443);
    encode_request(Command::Connect, &name, &mut out).unwrap();
    assert_eq!(out, b"\x05\x01\x00\x03\x0bexample.org\x01\xbb");
    out.clear();
    let long = Destination::Domain("a".repeat(256), 443);
    let err = encode_request(Command::Connect, &long, &mut out);
    assert_eq!(
        err,
        Err(Socks5Error::Encode(AddrEncodeError::DomainTooLong(256)))
    );
    assert!(out.is_empty());
}

#[test]
fn reply_success_and_tunnel_bytes() {
    let mut buf = vec![5, 0, 0, 1, 203, 0, 113, 9, 0x1f, 0x90];
    assert_eq!(parse_reply(&buf), Ok(Some((sa("203.0.113.9:8080"), 10))));
    for cut in 0..buf.len() {
        assert_eq!(parse_reply(&buf[..cut]), Ok(None), "prefix of {cut} bytes");
    }
    buf.extend_from_slice(b"HTTP/1.1 200");
    assert_eq!(parse_reply(&buf), Ok(Some((sa("203.0.113.9:8080"), 10))));
}

#[test]
fn reply_codes() {
    let cases = [
        (1, Socks5Error::GeneralFailure),
        (2, Socks5Error::NotAllowed),
        (3, Socks5Error::NetworkUnreachable),
        (4, Socks5Error::HostUnreachable),
        (5, Socks5Error::ConnectionRefused),
        (6, Socks5Error::TtlExpired),
        (7, Socks5Error::CommandNotSupported),
        (8, Socks5Error::AddressTypeNotSupported),
        (9, Socks5Error::UnknownReply(9)),
        (0xFF, Socks5Error::UnknownReply(0xFF)),
    ];
    for (rep, want) in cases {
        assert_eq!(parse_reply(&[5, rep]), Err(want.clone()));
        assert_eq!(parse_reply(&[5, rep, 0, 1, 0, 0, 0, 0, 0, 0]), Err(want));
    }
    assert_eq!(parse_reply(&[4, 0]), Err(Socks5Error::BadVersion(4)));
    let bad_atyp = parse_reply(&[5, 0, 0, 2, 0, 0]);
    assert_eq!(
        bad_atyp,
        Err(Socks5Error::Addr(AddrParseError::UnknownType(2)))
    );
}

#[test]
fn udp_datagram_bytes() {
    let mut out = Vec::new();
    encode_udp_datagram(&sa("198.51.100.7:53"), b"hi", &mut out).unwrap();
    assert_eq!(out, [0, 0, 0, 1, 198, 51, 100, 7, 0, 53, b'h', b'i']);
    assert_eq!(parse_udp_datagram(&out), Ok((sa("198.51.100.7:53"), 10)));
}

#[test]
fn udp_datagram_errors() {
    let frag = [0, 0, 1, 1, 198, 51, 100, 7, 0, 53];
    assert_eq!(parse_udp_datagram(&frag), Err(Socks5Error::Fragmented(1)));
    for cut in 0..10 {
        let short = parse_udp_datagram(&[0, 0, 0, 1, 198, 51, 100, 7, 0, 53][..cut]);
        assert_eq!(short, Err(Socks5Error::TruncatedDatagram), "{cut} bytes");
    }
    let bad_atyp = parse_udp_datagram(&[0, 0, 0, 5, 1, 2]);
    assert_eq!(
        bad_atyp,
        Err(Socks5Error::Addr(AddrParseError::UnknownType(5)))
    );
    let mut out = vec![7];
    let err = encode_udp_datagram(&Destination::Domain(String::new(), 1), b"x", &mut out);
    assert_eq!(err, Err(Socks5Error::Encode(AddrEncodeError::EmptyDomain)));
    assert_eq!(out, [7]);
}

proptest! {
    #[test]
    fn reply_round_trip(dst in arb::destination()) {
        // A reply has the request's layout with REP where CMD was.
        let mut buf = Vec::new();
        encode_request(Command::Connect, &dst, &mut buf).unwrap();
        buf[1] = 0;
        for cut in 0..buf.len() {
            prop_assert_eq!(parse_reply(&buf[..cut]), Ok(None));
        }
        prop_assert_eq!(parse_reply(&buf), Ok(Some((dst, buf.len()))));
    }

    #[test]
    fn udp_round_trip(
        dst in arb::destination(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = Vec::new();
        encode_udp_datagram(&dst, &payload, &mut buf).unwrap();
        let (got, offset) = parse_udp_datagram(&buf).unwrap();
        prop_assert_eq!(got, dst);
        prop_assert_eq!(&buf[offset..], &payload[..]);
    }

    #[test]
    fn any_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
        let success = [&[5, 0, 0][..], &buf].concat();
        for reply in [&buf[..], &success[..]] {
            if let Ok(Some((_, used))) = parse_reply(reply) {
                prop_assert!(used <= reply.len());
            }
        }
        if let Ok((_, offset)) = parse_udp_datagram(&buf) {
            prop_assert!(offset <= buf.len());
        }
        let _ = parse_method_selection(&buf, true);
        let _ = parse_auth_reply(&buf);
    }
}
