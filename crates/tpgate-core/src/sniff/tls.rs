//! SNI of a TLS client: the record layer (RFC 8446 §5.1) around the first ClientHello, which
//! a client may split over several records and the network over several TCP segments. The
//! caller re-calls [`sniff_sni`] with the longer buffer as bytes arrive.

use super::client_hello::{message_len, sniff_handshake, MAX_HELLO_LEN};
use super::Sniffed;

const RECORD_HEADER_LEN: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
/// TLSPlaintext.length limit (RFC 8446 §5.1, RFC 5246 §6.2.1).
const MAX_RECORD_LEN: usize = 1 << 14;

/// The SNI of the ClientHello at the start of a TCP stream. `buf` is every byte received so
/// far: possibly several records, possibly ending mid-record.
pub fn sniff_sni(buf: &[u8]) -> Sniffed {
    // Fast path, and the common case: the whole hello in the first record.
    match first_record(buf) {
        Err(verdict) => verdict,
        Ok(payload) => match sniff_handshake(payload) {
            Sniffed::NeedMore if complete_record(buf) => reassemble(buf),
            verdict => verdict,
        },
    }
}

/// The (possibly partial) payload of the first record, or the verdict when there is none.
fn first_record(buf: &[u8]) -> Result<&[u8], Sniffed> {
    let (header, rest) = match record_header(buf) {
        Ok(Some(header)) => header,
        Ok(None) => return Err(Sniffed::NeedMore),
        Err(()) => return Err(Sniffed::NotThis),
    };
    Ok(&rest[..header.min(rest.len())])
}

fn complete_record(buf: &[u8]) -> bool {
    matches!(record_header(buf), Ok(Some((len, rest))) if rest.len() >= len)
}

/// Length and remaining bytes of a handshake record starting at `buf`: `Ok(None)` while the
/// header is incomplete but plausible, `Err` as soon as it is not a handshake record.
fn record_header(buf: &[u8]) -> Result<Option<(usize, &[u8])>, ()> {
    // Check each header byte as it arrives so non-TLS streams are refused from the first byte.
    if buf.first().is_some_and(|&b| b != CONTENT_HANDSHAKE) {
        return Err(());
    }
    // legacy_record_version is 0x0301 (or 0x0300..=0x0303 from older clients).
    if buf.get(1).is_some_and(|&b| b != 3) || buf.get(2).is_some_and(|&b| b > 4) {
        return Err(());
    }
    let Some(header) = buf.get(..RECORD_HEADER_LEN) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    // Empty handshake records are forbidden; over-long ones are not TLS plaintext.
    if len == 0 || len > MAX_RECORD_LEN {
        return Err(());
    }
    Ok(Some((len, &buf[RECORD_HEADER_LEN..])))
}

/// The slow path: the hello continues past its first record. Concatenates record payloads
/// (bounded by the hello size cap) and sniffs the result.
fn reassemble(buf: &[u8]) -> Sniffed {
    let mut stream = Vec::new();
    let mut rest = buf;
    loop {
        let (len, after_header) = match record_header(rest) {
            Ok(Some(header)) => header,
            Ok(None) => break,
            Err(()) => return Sniffed::NotThis,
        };
        let payload = &after_header[..len.min(after_header.len())];
        stream.extend_from_slice(payload);
        if stream.len() > MAX_HELLO_LEN + 4 + MAX_RECORD_LEN {
            return Sniffed::NotThis;
        }
        if payload.len() < len {
            break;
        }
        rest = &after_header[len..];
        // Once the message is whole, whatever follows (more records) does not matter.
        if message_len(&stream).is_some_and(|n| stream.len() >= n) {
            break;
        }
    }
    sniff_handshake(&stream)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sniff::fixtures::{self, TLS_FIXTURES};

    fn name(s: &str) -> Sniffed {
        Sniffed::Name(s.to_owned())
    }

    #[test]
    fn real_client_hellos_yield_their_names() {
        for (file, expected) in TLS_FIXTURES {
            assert_eq!(sniff_sni(fixtures::file(file)), name(expected), "{file}");
        }
    }

    #[test]
    fn every_prefix_of_a_real_hello_needs_more() {
        // Byte-by-byte TCP arrival, including the hellos the clients themselves split over
        // several records (openssl-large: 16384 + 2806, openssl-fragmented: 512-byte records).
        for (file, expected) in TLS_FIXTURES {
            let bytes = fixtures::file(file);
            for cut in 0..bytes.len() {
                assert_eq!(
                    sniff_sni(&bytes[..cut]),
                    Sniffed::NeedMore,
                    "{file} cut at {cut}"
                );
            }
            assert_eq!(sniff_sni(bytes), name(expected));
        }
    }

    #[test]
    fn refragmented_hellos_yield_the_same_name() {
        for (file, expected) in TLS_FIXTURES {
            let hello = fixtures::handshake(file);
            for size in [1, 2, 3, 7, 100, 1000] {
                let stream = fixtures::reframe(&hello, &[size]);
                assert_eq!(
                    sniff_sni(&stream),
                    name(expected),
                    "{file} in {size}-byte records"
                );
            }
        }
    }

    #[test]
    fn bytes_after_the_hello_do_not_matter() {
        let mut stream = fixtures::file("openssl-tls13.bin").to_vec();
        stream.extend([23, 3, 3, 0, 1, 0]); // early application data
        assert_eq!(sniff_sni(&stream), name("tls13.example.com"));
        let mut stream = fixtures::reframe(&fixtures::handshake("curl.bin"), &[100]);
        stream.extend([0xff; 7]);
        assert_eq!(sniff_sni(&stream), name("curl.example.com"));
    }

    #[test]
    fn ech_outer_hello_reports_the_public_name() {
        let hello = fixtures::with_ech_outer(&fixtures::handshake("curl.bin"));
        assert_eq!(
            sniff_sni(&fixtures::reframe(&hello, &[16384])),
            name("curl.example.com")
        );
    }

    #[test]
    fn other_protocols_are_refused_at_once() {
        for other in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"\x16\x02",             // not TLS version 3.x
            b"\x16\x03\x01\x00\x00", // empty handshake record
            b"\x16\x03\x01\x40\x01", // longer than TLS allows
            b"\x15\x03\x03\x00\x02\x02\x28",
            b"\x16\x03\x03\x00\x04\x02\x00\x00\x00", // ServerHello
        ] {
            assert_eq!(sniff_sni(other), Sniffed::NotThis, "{other:?}");
        }
        assert_eq!(sniff_sni(b""), Sniffed::NeedMore);
        assert_eq!(sniff_sni(b"\x16\x03"), Sniffed::NeedMore);
    }

    #[test]
    fn a_non_handshake_record_inside_the_hello_is_refused() {
        let hello = fixtures::handshake("openssl-tls12.bin");
        let mut stream = fixtures::reframe(&hello[..50], &[50]);
        stream.extend([21, 3, 3, 0, 2, 2, 40]);
        assert_eq!(sniff_sni(&stream), Sniffed::NotThis);
    }

    #[test]
    fn oversized_hello_is_refused_without_buffering_it() {
        let header = [1, 0x01, 0x00, 0x01]; // declares 65537 bytes
        let stream = fixtures::reframe(&header, &[4]);
        assert_eq!(sniff_sni(&stream), Sniffed::NotThis);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = sniff_sni(&bytes);
        }

        #[test]
        fn arbitrary_records_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..300, 1..6),
        ) {
            let _ = sniff_sni(&fixtures::reframe(&body, &sizes));
        }

        #[test]
        fn any_split_of_a_real_hello_gives_the_same_name(
            which in 0..TLS_FIXTURES.len(),
            sizes in proptest::collection::vec(1usize..2000, 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let (file, expected) = TLS_FIXTURES[which];
            let stream = fixtures::reframe(&fixtures::handshake(file), &sizes);
            prop_assert_eq!(sniff_sni(&stream), name(expected));
            let cut = cut.index(stream.len());
            prop_assert_eq!(sniff_sni(&stream[..cut]), Sniffed::NeedMore);
        }
    }
}
