//! The TLS ClientHello handshake message (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2) and its
//! server_name extension (RFC 6066 §3), shared by the TLS sniffer (which first strips the
//! record layer) and the QUIC sniffer (whose CRYPTO frames carry handshake messages bare).
//!
//! Only the outer ClientHello is ever visible: with Encrypted Client Hello the server_name
//! here is the public name of the client-facing server, which is what tpgate reports.

use super::name::hostname;
use super::Sniffed;

/// Largest ClientHello body accepted. Real ones stay under a few KiB (post-quantum key shares
/// included); the handshake header allows 16 MiB, which nobody should make us buffer.
pub(super) const MAX_HELLO_LEN: usize = 64 * 1024;

const HANDSHAKE_HEADER_LEN: usize = 4;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const SNI_HOST_NAME: u8 = 0;

/// Sniffs the handshake byte stream `stream` (its first bytes, possibly more arriving later):
/// [`Sniffed::NeedMore`] until the whole first message is there, then the SNI, or
/// [`Sniffed::NotThis`] as soon as the bytes cannot start a ClientHello.
pub(super) fn sniff_handshake(stream: &[u8]) -> Sniffed {
    match stream.first() {
        None => return Sniffed::NeedMore,
        Some(&CLIENT_HELLO) => {}
        Some(_) => return Sniffed::NotThis,
    }
    let Some(header) = stream.get(..HANDSHAKE_HEADER_LEN) else {
        return Sniffed::NeedMore;
    };
    let len = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    if len > MAX_HELLO_LEN {
        return Sniffed::NotThis;
    }
    match stream.get(HANDSHAKE_HEADER_LEN..HANDSHAKE_HEADER_LEN + len) {
        None => Sniffed::NeedMore,
        Some(body) => server_name(body).map_or(Sniffed::NotThis, hostname),
    }
}

/// Length of the first handshake message once its header is there, for callers that must
/// know where it ends; `None` before that.
pub(super) fn message_len(stream: &[u8]) -> Option<usize> {
    let header = stream.get(..HANDSHAKE_HEADER_LEN)?;
    let len = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    Some(HANDSHAKE_HEADER_LEN + len)
}

/// The host_name entry of the server_name extension of a complete ClientHello body; `None`
/// when the body is malformed or carries no such entry.
fn server_name(body: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(body);
    let version = r.u16()?;
    // SSL 3.0 up to TLS 1.2 in legacy_version (1.3 keeps 0x0303 there); anything else is not
    // a ClientHello we can read.
    if !(0x0300..=0x0303).contains(&version) {
        return None;
    }
    r.take(32)?; // random
    let session_id = r.vec8()?;
    if session_id.len() > 32 {
        return None;
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    if r.vec8()?.is_empty() {
        return None; // compression methods: at least "null"
    }
    if r.0.is_empty() {
        return None; // no extensions, so no SNI
    }
    let mut extensions = Reader(r.vec16()?);
    if !r.0.is_empty() {
        return None;
    }
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind == EXT_SERVER_NAME {
            return host_name_entry(data);
        }
    }
    None
}

fn host_name_entry(ext: &[u8]) -> Option<&[u8]> {
    let mut outer = Reader(ext);
    let mut list = Reader(outer.vec16()?);
    if !outer.0.is_empty() {
        return None;
    }
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind == SNI_HOST_NAME {
            return Some(name);
        }
    }
    None
}

/// A cursor over a complete message: every read either succeeds or reports malformed input.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::sniff::fixtures;

    /// A minimal but well-formed ClientHello handshake message with `extensions` appended.
    pub(in crate::sniff) fn hello_with(extensions: &[u8]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]);
        body.extend([1, 0]);
        body.extend((extensions.len() as u16).to_be_bytes());
        body.extend(extensions);
        let mut msg = vec![CLIENT_HELLO];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        msg
    }

    pub(in crate::sniff) fn sni_ext(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![SNI_HOST_NAME];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name);
        let mut ext = EXT_SERVER_NAME.to_be_bytes().to_vec();
        ext.extend(((entry.len() + 2) as u16).to_be_bytes());
        ext.extend((entry.len() as u16).to_be_bytes());
        ext.extend(entry);
        ext
    }

    #[test]
    fn minimal_hello_yields_its_name() {
        let msg = hello_with(&sni_ext(b"Example.com"));
        assert_eq!(sniff_handshake(&msg), Sniffed::Name("example.com".into()));
        for cut in 0..msg.len() {
            assert_eq!(sniff_handshake(&msg[..cut]), Sniffed::NeedMore, "cut {cut}");
        }
        assert_eq!(message_len(&msg), Some(msg.len()));
    }

    #[test]
    fn hello_without_usable_name_is_not_this() {
        assert_eq!(sniff_handshake(&hello_with(&[])), Sniffed::NotThis);
        assert_eq!(
            sniff_handshake(&hello_with(&sni_ext(b"192.0.2.7"))),
            Sniffed::NotThis
        );
        // An extension other than server_name only.
        assert_eq!(
            sniff_handshake(&hello_with(&[0, 0x10, 0, 0])),
            Sniffed::NotThis
        );
        // Truncated extension block inside a complete message.
        let mut msg = hello_with(&sni_ext(b"example.com"));
        let n = msg.len();
        msg[n - 3] = 0xff;
        assert_eq!(sniff_handshake(&msg), Sniffed::NotThis);
    }

    #[test]
    fn other_messages_and_huge_lengths_are_rejected_early() {
        assert_eq!(sniff_handshake(&[2]), Sniffed::NotThis); // ServerHello
        assert_eq!(sniff_handshake(&[1, 0xff, 0xff]), Sniffed::NeedMore);
        assert_eq!(sniff_handshake(&[1, 0xff, 0xff, 0xff]), Sniffed::NotThis);
    }

    #[test]
    fn ech_outer_hello_reports_the_public_name() {
        // A real OpenSSL ClientHello with an outer encrypted_client_hello extension (0xfe0d)
        // added beside its server_name, as an ECH client sends it: the public name is all
        // that is visible and is what gets reported.
        let msg = fixtures::with_ech_outer(&fixtures::handshake("openssl-tls13.bin"));
        assert_eq!(
            sniff_handshake(&msg),
            Sniffed::Name("tls13.example.com".into())
        );
    }
}
