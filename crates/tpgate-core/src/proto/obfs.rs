//! simple-obfs, the `obfs` plugin of Shadowsocks (mihomo's `plugin: obfs`), client side.
//! HTTP mode: the first bytes of the tunnel ride as the body of a fake WebSocket upgrade
//! request, the server's `101` head comes before its first bytes (read with
//! [`super::ws::parse_upgrade_response`]), then the stream is raw both ways. TLS mode: the
//! first bytes ride as the session ticket of a fake TLS 1.2 ClientHello, later ones in
//! application-data records; the server answers a fake ServerHello and ChangeCipherSpec, then
//! its bytes come in one handshake record and application-data records after it
//! ([`TlsObfsReader`]). Nothing here is encrypted: the obfuscation only changes the look of
//! the Shadowsocks stream, which is encrypted already.

use std::fmt::Write as _;

use base64::Engine as _;
use thiserror::Error;

/// Largest record body TLS allows, and so the most data one record carries.
pub const MAX_RECORD: usize = 16 * 1024;
/// Bytes of a TLS record header: type, version, length.
pub const RECORD_HEADER: usize = 5;
/// Most data the fake ClientHello carries: what is left of one record after the hello's
/// own fields (212 bytes) and a host name of at most 255 bytes.
pub const MAX_HELLO_DATA: usize = MAX_RECORD - 212 - 255;

const HANDSHAKE: u8 = 0x16;
const CHANGE_CIPHER_SPEC: u8 = 0x14;
const ALERT: u8 = 0x15;
const APPLICATION_DATA: u8 = 0x17;

/// Why a fake request cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ObfsEncodeError {
    /// The host holds a byte that would end or split the line (CR, LF, NUL, space).
    #[error("obfs host `{0}` cannot go into a request")]
    UnsafeHost(String),
    /// A host name longer than a TLS server name may be.
    #[error("obfs host is {0} bytes, at most 255 fit")]
    HostTooLong(usize),
    /// More data than one hello or record carries (the caller splits).
    #[error("{0} bytes do not fit in one record")]
    TooMuchData(usize),
}

/// The HTTP-mode request head carrying `body`: `Host` is `host`, with `:port` unless the
/// port is 80 (as simple-obfs and mihomo write it); `key` is the `Sec-WebSocket-Key`'s 16
/// random bytes and `curl` the two minor numbers of the `curl/7.x.y` user agent. Appends
/// head and body to `out` (left untouched on error).
pub fn encode_http_request(
    host: &str,
    port: u16,
    key: &[u8; 16],
    curl: (u8, u8),
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ObfsEncodeError> {
    check_host(host)?;
    let mut head = String::with_capacity(200);
    head.push_str("GET / HTTP/1.1\r\nHost: ");
    head.push_str(host);
    if port != 80 {
        let _ = write!(head, ":{port}");
    }
    let _ = write!(
        head,
        "\r\nUser-Agent: curl/7.{}.{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nContent-Length: {}\r\n\r\n",
        curl.0 % 54,
        curl.1 % 2,
        base64::engine::general_purpose::STANDARD.encode(key),
        body.len()
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    Ok(())
}

fn check_host(host: &str) -> Result<(), ObfsEncodeError> {
    if host.len() > 255 {
        return Err(ObfsEncodeError::HostTooLong(host.len()));
    }
    if host.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0 | b' ')) {
        return Err(ObfsEncodeError::UnsafeHost(host.to_owned()));
    }
    Ok(())
}

/// Random parts of one fake ClientHello.
#[derive(Debug, Clone, Copy)]
pub struct HelloRandom {
    /// Seconds since the epoch, the first four bytes of the hello's random (TLS 1.2 style).
    pub time: u32,
    pub random: [u8; 28],
    pub session_id: [u8; 32],
}

/// The TLS-mode ClientHello carrying `data` as its session ticket and `host` as its server
/// name, byte for byte as simple-obfs and mihomo build it. At most [`MAX_HELLO_DATA`].
pub fn encode_client_hello(
    data: &[u8],
    host: &str,
    r: &HelloRandom,
    out: &mut Vec<u8>,
) -> Result<(), ObfsEncodeError> {
    check_host(host)?;
    if data.len() > MAX_HELLO_DATA {
        return Err(ObfsEncodeError::TooMuchData(data.len()));
    }
    let (d, h) = (data.len(), host.len());
    let u16_of = |n: usize| u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes();
    out.reserve(217 + d + h);
    out.extend_from_slice(&[HANDSHAKE, 0x03, 0x01]);
    out.extend_from_slice(&u16_of(212 + d + h));
    // ClientHello, a 24-bit length, TLS 1.2.
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&u16_of(208 + d + h));
    out.extend_from_slice(&[0x03, 0x03]);
    out.extend_from_slice(&r.time.to_be_bytes());
    out.extend_from_slice(&r.random);
    out.push(32);
    out.extend_from_slice(&r.session_id);
    out.extend_from_slice(&[0x00, 0x38]);
    out.extend_from_slice(&[
        0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa, 0xc0, 0x2b, 0xc0,
        0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27, 0x00, 0x67,
        0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d, 0x00,
        0x9c, 0x00, 0x3d, 0x00, 0x3c, 0x00, 0x35, 0x00, 0x2f, 0x00, 0xff,
    ]);
    // Compression: null only.
    out.extend_from_slice(&[0x01, 0x00]);
    out.extend_from_slice(&u16_of(79 + d + h));
    // Session ticket: the data.
    out.extend_from_slice(&[0x00, 0x23]);
    out.extend_from_slice(&u16_of(d));
    out.extend_from_slice(data);
    // Server name.
    out.extend_from_slice(&[0x00, 0x00]);
    out.extend_from_slice(&u16_of(h + 5));
    out.extend_from_slice(&u16_of(h + 3));
    out.push(0);
    out.extend_from_slice(&u16_of(h));
    out.extend_from_slice(host.as_bytes());
    // EC point formats, supported groups, signature algorithms, encrypt-then-MAC, extended
    // master secret.
    out.extend_from_slice(&[0x00, 0x0b, 0x00, 0x04, 0x03, 0x01, 0x00, 0x02]);
    out.extend_from_slice(&[
        0x00, 0x0a, 0x00, 0x0a, 0x00, 0x08, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x19, 0x00, 0x18,
    ]);
    out.extend_from_slice(&[
        0x00, 0x0d, 0x00, 0x20, 0x00, 0x1e, 0x06, 0x01, 0x06, 0x02, 0x06, 0x03, 0x05, 0x01, 0x05,
        0x02, 0x05, 0x03, 0x04, 0x01, 0x04, 0x02, 0x04, 0x03, 0x03, 0x01, 0x03, 0x02, 0x03, 0x03,
        0x02, 0x01, 0x02, 0x02, 0x02, 0x03,
    ]);
    out.extend_from_slice(&[0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00]);
    Ok(())
}

/// Appends one application-data record holding `data` (at most [`MAX_RECORD`] bytes).
pub fn encode_app_data(data: &[u8], out: &mut Vec<u8>) -> Result<(), ObfsEncodeError> {
    let len = u16::try_from(data.len())
        .ok()
        .filter(|_| data.len() <= MAX_RECORD)
        .ok_or(ObfsEncodeError::TooMuchData(data.len()))?;
    out.extend_from_slice(&[APPLICATION_DATA, 0x03, 0x03]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}

/// A TLS record header: its type and body length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u8,
    pub len: usize,
}

/// Why the server's bytes are not what a simple-obfs (or shadow-tls) server sends.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// A record longer than TLS allows (with room for a real server's encryption overhead).
    #[error("a TLS record of {0} bytes")]
    TooLong(usize),
    /// The server sent an alert: not an obfs server, or it refused the hello.
    #[error("the server sent a TLS alert")]
    Alert,
    /// A record type that cannot come at this point.
    #[error("unexpected TLS record type {kind:#04x} {during}")]
    Unexpected { kind: u8, during: &'static str },
    /// ShadowTLS v3: a record whose HMAC does not verify (altered on the way, or not this
    /// connection's).
    #[error("a record whose HMAC does not verify")]
    BadMac,
}

/// The header at the start of `buf`; `Ok(None)` until five bytes have arrived.
pub fn record_header(buf: &[u8]) -> Result<Option<RecordHeader>, RecordError> {
    let Some(h) = buf.get(..RECORD_HEADER) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
    // RFC 8446 §5.2: ciphertext may exceed the plaintext limit by 256 bytes.
    if len > MAX_RECORD + 256 {
        return Err(RecordError::TooLong(len));
    }
    Ok(Some(RecordHeader { kind: h[0], len }))
}

/// What the next bytes from a TLS-mode server are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A whole record of this length that carries nothing (the fake ServerHello or
    /// ChangeCipherSpec): drop it.
    Skip(usize),
    /// A record header (drop its [`RECORD_HEADER`] bytes) followed by this many bytes of
    /// the server's stream.
    Data(usize),
}

/// Reads a TLS-mode server's answer: the fake ServerHello, ChangeCipherSpec, then data.
#[derive(Debug, Clone, Default)]
pub struct TlsObfsReader {
    stage: Stage,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Stage {
    #[default]
    ServerHello,
    ChangeCipherSpec,
    Data,
}

impl TlsObfsReader {
    /// The next step for the bytes at the start of `buf` (a record boundary): `Ok(None)`
    /// while more are needed (a record to skip must be whole).
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<Step>, RecordError> {
        let Some(h) = record_header(buf)? else {
            return Ok(None);
        };
        if h.kind == ALERT {
            return Err(RecordError::Alert);
        }
        let whole = RECORD_HEADER + h.len;
        match (self.stage, h.kind) {
            (Stage::ServerHello, HANDSHAKE) => {
                if buf.len() < whole {
                    return Ok(None);
                }
                // A ServerHello (type 2) and nothing else.
                if buf.get(RECORD_HEADER) != Some(&2) {
                    return Err(RecordError::Unexpected {
                        kind: h.kind,
                        during: "instead of a ServerHello",
                    });
                }
                self.stage = Stage::ChangeCipherSpec;
                Ok(Some(Step::Skip(whole)))
            }
            (Stage::ChangeCipherSpec, CHANGE_CIPHER_SPEC) => {
                if buf.len() < whole {
                    return Ok(None);
                }
                self.stage = Stage::Data;
                Ok(Some(Step::Skip(whole)))
            }
            // The first data comes as a (fake encrypted) handshake record.
            (Stage::Data, HANDSHAKE | APPLICATION_DATA) => Ok(Some(Step::Data(h.len))),
            (stage, kind) => Err(RecordError::Unexpected {
                kind,
                during: match stage {
                    Stage::ServerHello => "instead of a ServerHello",
                    Stage::ChangeCipherSpec => "instead of ChangeCipherSpec",
                    Stage::Data => "among data records",
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const R: HelloRandom = HelloRandom {
        time: 0x0102_0304,
        random: [7; 28],
        session_id: [9; 32],
    };

    #[test]
    fn http_request_is_simple_obfs_template() {
        let mut out = Vec::new();
        encode_http_request(
            "cdn.example",
            8388,
            b"the sample nonce",
            (60, 3),
            b"DATA",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nHost: cdn.example:8388\r\nUser-Agent: curl/7.6.1\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 4\r\n\r\nDATA"
        );
        let mut out = Vec::new();
        encode_http_request("a.b", 80, &[0; 16], (0, 0), b"", &mut out).unwrap();
        assert!(out.starts_with(b"GET / HTTP/1.1\r\nHost: a.b\r\n"));
        assert!(encode_http_request("a\r\nb", 80, &[0; 16], (0, 0), b"", &mut out).is_err());
    }

    #[test]
    fn client_hello_lengths_and_ticket() {
        let mut out = Vec::new();
        encode_client_hello(b"hello", "bing.com", &R, &mut out).unwrap();
        // Record length, handshake length and extensions length agree with the bytes.
        assert_eq!(out.len(), 5 + 212 + 5 + 8);
        assert_eq!(
            usize::from(u16::from_be_bytes([out[3], out[4]])),
            out.len() - 5
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([out[7], out[8]])),
            out.len() - 9
        );
        assert_eq!(&out[11..15], &[1, 2, 3, 4]);
        // After random (32), session id (1 + 32), suites (2 + 56), compression (2).
        let ext = 11 + 32 + 33 + 58 + 2;
        assert_eq!(
            usize::from(u16::from_be_bytes([out[ext], out[ext + 1]])),
            out.len() - ext - 2
        );
        assert_eq!(&out[ext + 2..ext + 6], &[0x00, 0x23, 0x00, 0x05]);
        assert_eq!(&out[ext + 6..ext + 11], b"hello");
        let sni = ext + 11;
        assert_eq!(&out[sni + 9..sni + 17], b"bing.com");
        let big = vec![0; MAX_HELLO_DATA + 1];
        assert!(encode_client_hello(&big, "h", &R, &mut Vec::new()).is_err());
    }

    /// The answer simple-obfs's server writes: ServerHello (91 bytes), ChangeCipherSpec,
    /// the first data in a handshake record, then application data.
    fn server_answer(first: &[u8], later: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![0x16, 0x03, 0x01, 0, 91, 2];
        v.extend_from_slice(&[0; 90]);
        v.extend_from_slice(&[0x14, 0x03, 0x03, 0, 1, 1]);
        v.extend_from_slice(&[0x16, 0x03, 0x03]);
        v.extend_from_slice(&u16::try_from(first.len()).unwrap().to_be_bytes());
        v.extend_from_slice(first);
        for l in later {
            encode_app_data(l, &mut v).unwrap();
        }
        v
    }

    /// Everything `reader` makes of `bytes`, fed in pieces of `step`.
    fn read_all(bytes: &[u8], step: usize) -> Result<Vec<u8>, RecordError> {
        let mut r = TlsObfsReader::default();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut remaining = 0;
        for piece in bytes.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                if remaining > 0 {
                    let n = remaining.min(buf.len());
                    out.extend(buf.drain(..n));
                    remaining -= n;
                    if remaining > 0 {
                        break;
                    }
                    continue;
                }
                match r.next(&buf)? {
                    None => break,
                    Some(Step::Skip(n)) => {
                        buf.drain(..n);
                    }
                    Some(Step::Data(n)) => {
                        buf.drain(..RECORD_HEADER);
                        remaining = n;
                    }
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn server_answer_yields_the_data() {
        let bytes = server_answer(b"first", &[b"second", b"", b"third"]);
        assert_eq!(read_all(&bytes, 1).unwrap(), b"firstsecondthird");
        assert_eq!(read_all(&bytes, 1000).unwrap(), b"firstsecondthird");
    }

    #[test]
    fn refusals() {
        let alert = [0x15, 0x03, 0x03, 0, 2, 2, 40];
        assert_eq!(read_all(&alert, 7), Err(RecordError::Alert));
        let http = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        assert!(read_all(http, 100).is_err());
        let mut not_hello = server_answer(b"x", &[]);
        not_hello[5] = 1;
        assert!(read_all(&not_hello, 100).is_err());
        assert_eq!(
            record_header(&[0x17, 3, 3, 0xff, 0xff]),
            Err(RecordError::TooLong(0xffff))
        );
        assert_eq!(record_header(&[0x17, 3, 3, 0]), Ok(None));
    }

    proptest! {
        #[test]
        fn data_survives_any_split(
            first in proptest::collection::vec(any::<u8>(), 0..3000),
            later in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..4),
            step in 1usize..700,
        ) {
            let refs: Vec<&[u8]> = later.iter().map(Vec::as_slice).collect();
            let bytes = server_answer(&first, &refs);
            let mut want = first.clone();
            for l in &later {
                want.extend_from_slice(l);
            }
            prop_assert_eq!(read_all(&bytes, step).unwrap(), want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut r = TlsObfsReader::default();
            let mut at = 0;
            while let Ok(Some(step)) = r.next(&bytes[at..]) {
                let n = match step {
                    Step::Skip(n) => n,
                    Step::Data(n) => RECORD_HEADER + n,
                };
                prop_assert!(n <= bytes.len() - at || matches!(step, Step::Data(_)));
                at = (at + n).min(bytes.len());
            }
        }

        #[test]
        fn hello_carries_any_data(data in proptest::collection::vec(any::<u8>(), 0..MAX_HELLO_DATA)) {
            let mut out = Vec::new();
            encode_client_hello(&data, "h.example", &R, &mut out).unwrap();
            prop_assert_eq!(usize::from(u16::from_be_bytes([out[3], out[4]])), out.len() - 5);
            let ticket = 5 + 4 + 2 + 32 + 33 + 58 + 2 + 2;
            prop_assert_eq!(&out[ticket + 4..ticket + 4 + data.len()], &data[..]);
        }
    }
}
