//! The client side of the V2Ray WebSocket and HTTP-upgrade transports (RFC 6455 §4.1, and
//! V2Ray's `httpupgrade`: the same GET with `Upgrade: websocket`, then raw bytes with no
//! framing): the upgrade request head out, the server's `101` head in. Early data (the
//! first bytes of the tunnel sent inside the request, base64url without padding) goes in
//! a header, or appended to the path when no header is named, as mihomo and V2Ray do.
//! WebSocket framing after the upgrade is not here: the daemon uses tungstenite for it.

use std::fmt::Write as _;

use base64::Engine as _;
use sha1::{Digest as _, Sha1};
use thiserror::Error;

/// Longest response head accepted (the same bound as HTTP CONNECT's).
pub use super::http::MAX_HEAD_LEN;
const MAX_HEADERS: usize = 64;
/// RFC 6455 §1.3: appended to the key before hashing it for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// One upgrade request.
#[derive(Debug, Clone, Copy)]
pub struct Upgrade<'a> {
    /// The `Host` header (a `Host` in `headers` takes its place).
    pub host: &'a str,
    /// Path and query as configured (`/ray?x=1`).
    pub path: &'a str,
    /// Headers as written in the config, `Host` among them possibly.
    pub headers: &'a [(String, String)],
    /// The 16 random bytes of `Sec-WebSocket-Key`; `None` for HTTP upgrade, which sends
    /// neither key nor version.
    pub key: Option<[u8; 16]>,
    /// Early data: the header to carry it (`None`: appended to the path) and the bytes.
    pub early_data: Option<(Option<&'a str>, &'a [u8])>,
}

/// Why an upgrade request cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpgradeEncodeError {
    /// A header name or value, the host or the path holds a byte that would end the line
    /// (CR, LF, or NUL), or a space in the path or a name.
    #[error("`{0}` cannot go into an HTTP request head")]
    Unsafe(String),
}

/// Why the server's answer is not an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpgradeError {
    /// The bytes are not an HTTP/1.x response head.
    #[error("malformed upgrade response")]
    Malformed(#[source] httparse::Error),
    /// A head longer than [`MAX_HEAD_LEN`].
    #[error("upgrade response head too long")]
    HeadTooLong,
    /// Any status but 101 (a wrong path, or not a WebSocket server).
    #[error("server answered {status} {reason} instead of 101 Switching Protocols")]
    Status { status: u16, reason: String },
    /// 101 without `Upgrade: websocket` and `Connection: upgrade`.
    #[error("101 response without Upgrade: websocket")]
    NotWebSocket,
    /// `Sec-WebSocket-Accept` is not the hash of the key sent.
    #[error("wrong Sec-WebSocket-Accept")]
    Accept,
}

/// base64url without padding: how early data travels.
pub fn encode_early_data(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// `Sec-WebSocket-Key` for 16 random bytes.
pub fn key_text(key: &[u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The `Sec-WebSocket-Accept` a server must answer to `key` (RFC 6455 §4.2.2).
pub fn accept_for(key: &[u8; 16]) -> String {
    let mut h = Sha1::new();
    h.update(key_text(key).as_bytes());
    h.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

fn safe(text: &str, space_ok: bool) -> Result<&str, UpgradeEncodeError> {
    if text
        .bytes()
        .any(|b| matches!(b, b'\r' | b'\n' | 0) || (!space_ok && b == b' '))
    {
        return Err(UpgradeEncodeError::Unsafe(text.to_owned()));
    }
    Ok(text)
}

/// Appends the request head to `out` (left untouched on error).
pub fn encode_upgrade(req: &Upgrade<'_>, out: &mut Vec<u8>) -> Result<(), UpgradeEncodeError> {
    let early = req
        .early_data
        .map(|(header, data)| (header, encode_early_data(data)));
    let (path, query) = match req.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.path, None),
    };
    let mut target = String::with_capacity(req.path.len() + 1);
    if !path.starts_with('/') {
        target.push('/');
    }
    target.push_str(safe(path, false)?);
    if let Some((None, text)) = &early {
        target.push_str(text);
    }
    if let Some(q) = query {
        target.push('?');
        target.push_str(safe(q, false)?);
    }
    let host = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map_or(req.host, |(_, v)| v.as_str());
    let mut head = String::with_capacity(256);
    // Writing to a String cannot fail.
    let _ = write!(
        head,
        "GET {target} HTTP/1.1\r\nHost: {}\r\n",
        safe(host, true)?
    );
    for (name, value) in req.headers {
        if name.eq_ignore_ascii_case("host") {
            continue;
        }
        let _ = write!(head, "{}: {}\r\n", safe(name, false)?, safe(value, true)?);
    }
    head.push_str("Connection: Upgrade\r\nUpgrade: websocket\r\n");
    if let Some(key) = &req.key {
        let _ = write!(
            head,
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n",
            key_text(key)
        );
    }
    if let Some((Some(name), text)) = &early {
        let _ = write!(head, "{}: {text}\r\n", safe(name, false)?);
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    Ok(())
}

/// Reads the server's answer: `Ok(None)` while the head is incomplete, the head's length
/// once it is a `101` with `Upgrade: websocket` (and, when `key` is given, the right
/// `Sec-WebSocket-Accept`). Bytes past the head belong to the tunnel.
pub fn parse_upgrade_response(
    buf: &[u8],
    key: Option<&[u8; 16]>,
) -> Result<Option<usize>, UpgradeError> {
    let window = &buf[..buf.len().min(MAX_HEAD_LEN)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(window).map_err(UpgradeError::Malformed)? {
        httparse::Status::Partial if buf.len() >= MAX_HEAD_LEN => {
            return Err(UpgradeError::HeadTooLong)
        }
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(used) => used,
    };
    let status = response.code.unwrap_or_default();
    if status != 101 {
        let reason = response.reason.unwrap_or_default().to_owned();
        return Err(UpgradeError::Status { status, reason });
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = header("connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !upgrade || !connection {
        return Err(UpgradeError::NotWebSocket);
    }
    if let Some(key) = key {
        if header("sec-websocket-accept").as_deref() != Some(accept_for(key).as_str()) {
            return Err(UpgradeError::Accept);
        }
    }
    Ok(Some(used))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn head(req: &Upgrade<'_>) -> String {
        let mut out = Vec::new();
        encode_upgrade(req, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    const KEY: [u8; 16] = *b"the sample nonce";

    #[test]
    fn rfc6455_accept_example() {
        // RFC 6455 §1.3: key "dGhlIHNhbXBsZSBub25jZQ==" answers "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".
        assert_eq!(key_text(&KEY), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept_for(&KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn websocket_request_with_host_header_and_early_data() {
        let headers = vec![
            ("Host".to_owned(), "cdn.example".to_owned()),
            ("User-Agent".to_owned(), "x".to_owned()),
        ];
        let req = Upgrade {
            host: "192.0.2.1",
            path: "ray?a=1",
            headers: &headers,
            key: Some(KEY),
            early_data: Some((Some("Sec-WebSocket-Protocol"), b"\xff\xfe hi")),
        };
        assert_eq!(
            head(&req),
            "GET /ray?a=1 HTTP/1.1\r\nHost: cdn.example\r\nUser-Agent: x\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: __4gaGk\r\n\r\n"
        );
    }

    #[test]
    fn http_upgrade_has_no_key_and_early_data_may_ride_the_path() {
        let req = Upgrade {
            host: "up.example",
            path: "/p?q",
            headers: &[],
            key: None,
            early_data: Some((None, b"ab")),
        };
        assert_eq!(
            head(&req),
            "GET /pYWI?q HTTP/1.1\r\nHost: up.example\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn injection_is_refused_and_out_untouched() {
        let headers = vec![("X".to_owned(), "a\r\nEvil: 1".to_owned())];
        let req = Upgrade {
            host: "h",
            path: "/",
            headers: &headers,
            key: None,
            early_data: None,
        };
        let mut out = vec![1];
        assert!(encode_upgrade(&req, &mut out).is_err());
        assert_eq!(out, [1]);
        let req = Upgrade {
            path: "/a b",
            headers: &[],
            ..req
        };
        assert!(encode_upgrade(&req, &mut out).is_err());
    }

    #[test]
    fn responses() {
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\nDATA",
            accept_for(&KEY)
        );
        let b = ok.as_bytes();
        assert_eq!(parse_upgrade_response(b, Some(&KEY)), Ok(Some(b.len() - 4)));
        assert_eq!(parse_upgrade_response(&b[..20], Some(&KEY)), Ok(None));
        assert_eq!(
            parse_upgrade_response(b, Some(&[0; 16])),
            Err(UpgradeError::Accept)
        );
        let plain = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\
                      Upgrade: WebSocket\r\n\r\n";
        assert_eq!(parse_upgrade_response(plain, None), Ok(Some(plain.len())));
        let nf = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse_upgrade_response(nf, None),
            Err(UpgradeError::Status { status: 404, .. })
        ));
        let bare = b"HTTP/1.1 101 OK\r\n\r\n";
        assert_eq!(
            parse_upgrade_response(bare, None),
            Err(UpgradeError::NotWebSocket)
        );
        assert!(matches!(
            parse_upgrade_response(b"SSH-2.0-x\r\n\r\n", None),
            Err(UpgradeError::Malformed(_))
        ));
        let long = vec![b'a'; MAX_HEAD_LEN + 1];
        assert!(parse_upgrade_response(&long, None).is_err());
    }

    proptest! {
        #[test]
        fn responses_never_claim_more_than_given(
            data in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            if let Ok(Some(used)) = parse_upgrade_response(&data, None) {
                prop_assert!(used <= data.len());
            }
        }

        #[test]
        fn early_data_is_url_safe(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let text = encode_early_data(&data);
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let back = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&text).unwrap();
            prop_assert_eq!(back, data);
        }
    }
}
