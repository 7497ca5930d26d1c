//! HTTP/1.1 CONNECT client (RFC 9110 §9.3.6) with optional Basic proxy authentication
//! (RFC 7617): the request head out, the proxy's response head in. Bytes after the head
//! belong to the tunnel. No HTTP/2 CONNECT, no Digest/NTLM, no keep-alive retry after a 407.

use std::fmt::Write as _;
use std::net::SocketAddr;

use base64::Engine as _;
use thiserror::Error;

use crate::net::Destination;

/// Longest response head accepted, interim 1xx heads included; a proxy sending more is
/// broken or hostile, and the caller must not buffer without bound.
pub const MAX_HEAD_LEN: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// Why a CONNECT request cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectEncodeError {
    /// The destination is a domain of length 0.
    #[error("host name is empty")]
    EmptyHost,
    /// The domain holds a byte not allowed in a URI host (a sniffed name could otherwise
    /// smuggle CR LF and headers into the request).
    #[error("host name contains byte {0:#04x}, which a request target cannot carry")]
    InvalidHostByte(u8),
    /// Basic authentication cannot carry a user-id containing ':' (RFC 7617 §2).
    #[error("proxy username contains ':'")]
    ColonInUsername,
}

/// A proxy's successful (2xx) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    /// The status code, 200..=299.
    pub status: u16,
    /// The reason phrase, possibly empty.
    pub reason: String,
    /// Bytes of the response head(s); anything after them is tunnel data.
    pub head_len: usize,
}

/// Why a proxy's answer to CONNECT is not a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectError {
    /// The bytes are not an HTTP/1.x response head.
    #[error("malformed proxy response")]
    Malformed(#[source] httparse::Error),
    /// The head did not end within `MAX_HEAD_LEN` bytes.
    #[error("proxy response head longer than {MAX_HEAD_LEN} bytes")]
    HeadTooLong,
    /// 407: the proxy wants credentials, or rejected the ones sent.
    #[error("proxy authentication required or rejected (407 {reason})")]
    ProxyAuth {
        /// The reason phrase.
        reason: String,
    },
    /// Any other non-2xx final status.
    #[error("proxy refused CONNECT: {status} {reason}")]
    Refused {
        /// The status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
}

/// Appends `CONNECT host:port HTTP/1.1`, `Host`, and with `basic_auth = Some((user, pass))`
/// a `Proxy-Authorization: Basic` header, then the blank line. IPv6 hosts are bracketed.
/// The buffer is untouched on error.
pub fn encode_connect(
    dst: &Destination,
    basic_auth: Option<(&str, &str)>,
    out: &mut Vec<u8>,
) -> Result<(), ConnectEncodeError> {
    let authority = authority(dst)?;
    if basic_auth.is_some_and(|(user, _)| user.contains(':')) {
        return Err(ConnectEncodeError::ColonInUsername);
    }
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, pass)) = basic_auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let _ = write!(head, "Proxy-Authorization: Basic {token}\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    Ok(())
}

/// `host:port` as a request target, refusing names that could break the request.
fn authority(dst: &Destination) -> Result<String, ConnectEncodeError> {
    match dst {
        Destination::Addr(SocketAddr::V4(a)) => Ok(format!("{}:{}", a.ip(), a.port())),
        // Not `SocketAddrV6`'s Display: it would add a `%scope`, meaningless to the proxy.
        Destination::Addr(SocketAddr::V6(a)) => Ok(format!("[{}]:{}", a.ip(), a.port())),
        Destination::Domain(name, port) => {
            if name.is_empty() {
                return Err(ConnectEncodeError::EmptyHost);
            }
            if let Some(&bad) = name.as_bytes().iter().find(|&&b| !is_reg_name_byte(b)) {
                return Err(ConnectEncodeError::InvalidHostByte(bad));
            }
            Ok(format!("{name}:{port}"))
        }
    }
}

/// RFC 3986 `reg-name`: unreserved, sub-delims and `%` of pct-encoded.
const fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b'%'
        )
}

/// Reads the proxy's response: `Ok(None)` while the head is incomplete, the 2xx response
/// once it is whole. Interim 1xx heads (except 101) are skipped and counted in `head_len`.
pub fn parse_connect_response(buf: &[u8]) -> Result<Option<ConnectResponse>, ConnectError> {
    let window = &buf[..buf.len().min(MAX_HEAD_LEN)];
    let mut start = 0;
    loop {
        let rest = window.get(start..).unwrap_or_default();
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let used = match response.parse(rest).map_err(ConnectError::Malformed)? {
            httparse::Status::Partial if buf.len() >= MAX_HEAD_LEN => {
                return Err(ConnectError::HeadTooLong)
            }
            httparse::Status::Partial => return Ok(None),
            httparse::Status::Complete(used) => used,
        };
        let status = response.code.unwrap_or_default();
        let reason = response.reason.unwrap_or_default().to_owned();
        start += used;
        match status {
            101 => return Err(ConnectError::Refused { status, reason }),
            100..=199 => continue,
            200..=299 => {
                return Ok(Some(ConnectResponse {
                    status,
                    reason,
                    head_len: start,
                }))
            }
            407 => return Err(ConnectError::ProxyAuth { reason }),
            _ => return Err(ConnectError::Refused { status, reason }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::arb;

    fn connect(dst: &Destination, auth: Option<(&str, &str)>) -> String {
        let mut out = Vec::new();
        encode_connect(dst, auth, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_bytes() {
        let name = Destination::Domain("example.com".into(), 443);
        let want = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
        assert_eq!(connect(&name, None), want);
        let v6 = Destination::Addr("[2001:db8::1]:8443".parse().unwrap());
        let want = "CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\
                    Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n";
        assert_eq!(connect(&v6, Some(("Aladdin", "open sesame"))), want);
        let v4 = Destination::Addr("192.0.2.1:80".parse().unwrap());
        assert!(connect(&v4, None).starts_with("CONNECT 192.0.2.1:80 HTTP/1.1\r\n"));
    }

    #[test]
    fn request_refuses_unsafe_input() {
        let mut out = Vec::new();
        let bad = |name: &str| Destination::Domain(name.into(), 80);
        let injected = encode_connect(&bad("a.example\r\nX-Evil: 1"), None, &mut out);
        assert_eq!(injected, Err(ConnectEncodeError::InvalidHostByte(b'\r')));
        let spaced = encode_connect(&bad("a b"), None, &mut out);
        assert_eq!(spaced, Err(ConnectEncodeError::InvalidHostByte(b' ')));
        let empty = encode_connect(&bad(""), None, &mut out);
        assert_eq!(empty, Err(ConnectEncodeError::EmptyHost));
        let colon = encode_connect(&bad("a.example"), Some(("a:b", "c")), &mut out);
        assert_eq!(colon, Err(ConnectEncodeError::ColonInUsername));
        assert!(out.is_empty());
    }

    #[test]
    fn success_keeps_tunnel_bytes() {
        let head = b"HTTP/1.1 200 Connection established\r\nVia: 1.1 proxy\r\n\r\n";
        let mut buf = head.to_vec();
        buf.extend_from_slice(b"\x16\x03\x01");
        let want = ConnectResponse {
            status: 200,
            reason: "Connection established".into(),
            head_len: head.len(),
        };
        assert_eq!(parse_connect_response(&buf), Ok(Some(want)));
        for cut in 0..head.len() {
            assert_eq!(
                parse_connect_response(&head[..cut]),
                Ok(None),
                "{cut} bytes"
            );
        }
        let bare = parse_connect_response(b"HTTP/1.0 200\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (bare.status, bare.reason.as_str(), bare.head_len),
            (200, "", 16)
        );
    }

    #[test]
    fn interim_heads_are_skipped() {
        let buf = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nX";
        let got = parse_connect_response(buf).unwrap().unwrap();
        assert_eq!((got.status, got.head_len), (200, buf.len() - 1));
        assert_eq!(parse_connect_response(&buf[..30]), Ok(None));
    }

    #[test]
    fn failures() {
        let auth = parse_connect_response(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        let reason = "Proxy Authentication Required".into();
        assert_eq!(auth, Err(ConnectError::ProxyAuth { reason }));
        let err = parse_connect_response(b"HTTP/1.1 500 Internal Server Error\r\n\r\n");
        let reason = "Internal Server Error".into();
        assert_eq!(
            err,
            Err(ConnectError::Refused {
                status: 500,
                reason
            })
        );
        let switch = parse_connect_response(b"HTTP/1.1 101 Switching\r\n\r\n");
        assert!(matches!(
            switch,
            Err(ConnectError::Refused { status: 101, .. })
        ));
        let garbage = parse_connect_response(b"SSH-2.0-OpenSSH\r\n");
        assert!(matches!(garbage, Err(ConnectError::Malformed(_))));
    }

    #[test]
    fn head_length_cap() {
        let mut buf = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        buf.resize(MAX_HEAD_LEN - 1, b'a');
        assert_eq!(parse_connect_response(&buf), Ok(None));
        buf.push(b'a');
        assert_eq!(parse_connect_response(&buf), Err(ConnectError::HeadTooLong));
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_connect_response(&buf), Err(ConnectError::HeadTooLong));
        // A head of exactly the cap is accepted.
        buf.truncate(MAX_HEAD_LEN - 4);
        buf.extend_from_slice(b"\r\n\r\n");
        let got = parse_connect_response(&buf).unwrap().unwrap();
        assert_eq!(got.head_len, MAX_HEAD_LEN);
    }

    proptest! {
        #[test]
        fn request_parses_as_http(dst in arb::destination(), auth in any::<bool>()) {
            let mut out = Vec::new();
            let creds = auth.then_some(("user", "p:ss"));
            encode_connect(&dst, creds, &mut out).unwrap();
            let mut headers = [httparse::EMPTY_HEADER; 4];
            let mut req = httparse::Request::new(&mut headers);
            prop_assert_eq!(req.parse(&out), Ok(httparse::Status::Complete(out.len())));
            prop_assert_eq!(req.method, Some("CONNECT"));
            let target = req.path.unwrap_or_default();
            let port_suffix = format!(":{}", dst.port());
            prop_assert!(target.ends_with(&port_suffix));
            prop_assert_eq!(req.headers.len(), if auth { 2 } else { 1 });
        }

        #[test]
        fn any_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some(r)) = parse_connect_response(&buf) {
                prop_assert!(r.head_len <= buf.len());
            }
            let mut prefixed = b"HTTP/1.1 200 OK\r\n".to_vec();
            prefixed.extend_from_slice(&buf);
            if let Ok(Some(r)) = parse_connect_response(&prefixed) {
                prop_assert!((200..300).contains(&r.status) && r.head_len <= prefixed.len());
            }
        }
    }
}
