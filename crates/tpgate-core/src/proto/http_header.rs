//! V2Ray's HTTP header obfuscation for a TCP stream (mihomo's `network: http`): the client
//! sends an HTTP/1.1 request head in front of its first bytes, the server a response head
//! in front of its own; after that the stream flows as it is. The server does not read the
//! head's fields, so any method, path and headers do; the response's status is not a
//! verdict either (a server may be set to answer `404` and still carry the stream).

use thiserror::Error;

use super::http::MAX_HEAD_LEN;

/// Most headers a response head may carry.
const MAX_HEADERS: usize = 64;

/// The request head to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The `Host` header's value.
    pub host: &'a str,
    /// Other headers, in order (a `Host` among them is skipped: `host` is sent).
    pub headers: &'a [(&'a str, &'a str)],
}

/// A field that would break the head.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{0}` cannot go into an HTTP head (spaces, CR, LF or NUL where they do not belong)")]
pub struct EncodeError(pub String);

/// Appends the request head (ending with its blank line) to `out`.
pub fn encode_request(r: &Request<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let bad_token = |t: &str| t.is_empty() || t.bytes().any(|b| !b.is_ascii_graphic());
    let bad_value = |t: &str| t.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
    for t in [r.method, r.path, r.host] {
        if bad_token(t) {
            return Err(EncodeError(t.to_owned()));
        }
    }
    if let Some((n, v)) = r
        .headers
        .iter()
        .find(|(n, v)| bad_token(n) || n.contains(':') || bad_value(v))
    {
        return Err(EncodeError(format!("{n}: {v}")));
    }
    out.extend_from_slice(r.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(r.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in r
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
    {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Why the server's first bytes are not a response head.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeadError {
    #[error("the server's answer is not an HTTP/1.x response head")]
    Malformed(#[source] httparse::Error),
    #[error("the server's response head is longer than {MAX_HEAD_LEN} bytes")]
    TooLong,
}

/// The length of the response head at the start of `buf`; `Ok(None)` until it is whole.
pub fn response_head_len(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    let window = &buf[..buf.len().min(MAX_HEAD_LEN)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(window).map_err(HeadError::Malformed)? {
        httparse::Status::Complete(n) => Ok(Some(n)),
        httparse::Status::Partial if buf.len() >= MAX_HEAD_LEN => Err(HeadError::TooLong),
        httparse::Status::Partial => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_request_head_is_v2rays_shape() {
        let mut out = Vec::new();
        encode_request(
            &Request {
                method: "GET",
                path: "/video",
                host: "www.example.com",
                headers: &[
                    ("Host", "ignored.example"),
                    ("User-Agent", "Mozilla/5.0 (X11)"),
                    ("Connection", "keep-alive"),
                ],
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "GET /video HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11)\r\nConnection: keep-alive\r\n\r\n"
        );
        // A server-side parser reads it as one whole request.
        let mut h = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut h);
        assert_eq!(req.parse(&out), Ok(httparse::Status::Complete(out.len())));
        assert_eq!((req.method, req.path), (Some("GET"), Some("/video")));
    }

    #[test]
    fn fields_that_would_break_the_head_are_refused() {
        for (method, path, host, header) in [
            ("GE T", "/", "h", ("A", "b")),
            ("GET", "/a b", "h", ("A", "b")),
            ("GET", "/", "h\r\nX: y", ("A", "b")),
            ("GET", "/", "h", ("A:B", "b")),
            ("GET", "/", "h", ("A", "b\r\nInjected: 1")),
            ("", "/", "h", ("A", "b")),
        ] {
            let mut out = Vec::new();
            let r = Request {
                method,
                path,
                host,
                headers: &[header],
            };
            assert!(encode_request(&r, &mut out).is_err(), "{r:?}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn response_heads_of_any_status_end_where_the_stream_starts() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: keep-alive\r\n\r\n";
        let mut buf = head.to_vec();
        buf.extend_from_slice(b"\x01\x02stream");
        assert_eq!(response_head_len(&buf), Ok(Some(head.len())));
        assert_eq!(response_head_len(&head[..20]), Ok(None));
        assert_eq!(
            response_head_len(b"HTTP/1.1 404 Not Found\r\n\r\nx"),
            Ok(Some(26))
        );
        assert!(matches!(
            response_head_len(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        while long.len() < MAX_HEAD_LEN {
            long.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(response_head_len(&long).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_answers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some(n)) = response_head_len(&bytes) {
                prop_assert!(n <= bytes.len());
            }
        }
    }
}
