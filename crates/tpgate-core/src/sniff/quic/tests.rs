//! QUIC sniffer tests: the RFC 9001 / RFC 9369 sample client Initials, Initials captured
//! from a real client (aioquic, see tests/fixtures/capture.sh), and Initials built here with
//! the same ring primitives to cover what no capture shows (reordering, coalescing, Retry).

use proptest::prelude::*;

use super::keys::{InitialKeys, Version};
use super::*;
use crate::sniff::client_hello::tests::{hello_with, sni_ext};
use crate::sniff::fixtures::{self, QUIC_FIXTURES};

pub(super) fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

const RFC9001_CLIENT_INITIAL: &str =
    include_str!("../../../tests/fixtures/rfc9001-client-initial.hex");
const RFC9369_CLIENT_INITIAL: &str =
    include_str!("../../../tests/fixtures/rfc9369-client-initial.hex");
const RFC_DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

/// The unprotected payload of the RFC sample client Initial (RFC 9001 §A.2, RFC 9369 §A.2):
/// one CRYPTO frame with the ClientHello, then PADDING up to 1162 bytes.
fn rfc_plain_payload() -> Vec<u8> {
    let mut payload = unhex(
        "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868
         04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578
         616d706c652e636f6dff01000100000a00080006001d00170018001000070005
         04616c706e000500050100000000003300260024001d00209370b2c9caa47fba
         baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400
         0d0010000e0403050306030203080408050806002d00020101001c0002400100
         3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000
         75300901100f088394c8f03e51570806048000ffff",
    );
    payload.resize(payload.len() + 917, 0);
    payload
}

fn name(s: &str) -> Sniffed {
    Sniffed::Name(s.to_owned())
}

/// Protects an Initial packet: AEAD over `payload` with `header` (whose last `pn_len` bytes
/// are the packet number) as associated data, then header protection.
fn protect(
    version: Version,
    dcid: &[u8],
    header: &[u8],
    pn: u64,
    pn_len: usize,
    payload: &[u8],
) -> Vec<u8> {
    let keys = InitialKeys::client(version, dcid).unwrap();
    let mut body = payload.to_vec();
    keys.seal(pn, header, &mut body);
    let mut packet = [header, &body].concat();
    let pn_offset = header.len() - pn_len;
    let mask = keys.mask(&packet[pn_offset + 4..pn_offset + 20]).unwrap();
    packet[0] ^= mask[0] & 0x0f;
    for i in 0..pn_len {
        packet[pn_offset + i] ^= mask[1 + i];
    }
    packet
}

/// A client Initial carrying `frames`, padded with PADDING frames to at least `min_len`.
fn initial(version: Version, dcid: &[u8], pn: u32, frames: &[u8], min_len: usize) -> Vec<u8> {
    let type_bits = match version {
        Version::V1 => 0x00,
        Version::V2 => 0x10,
    };
    let wire_version: u32 = match version {
        Version::V1 => 1,
        Version::V2 => 0x6b33_43cf,
    };
    let mut header = vec![0xc0 | type_bits | 0x03];
    header.extend(wire_version.to_be_bytes());
    header.push(dcid.len() as u8);
    header.extend(dcid);
    header.extend([4, 0xc0, 0xff, 0xee, 0x01]); // source connection ID
    header.push(0); // no token
    let fixed = header.len() + 2 + 4 + 16;
    let mut payload = frames.to_vec();
    payload.resize(payload.len().max(min_len.saturating_sub(fixed)).max(4), 0);
    let len = 4 + payload.len() + 16;
    header.extend((0x4000 | len as u16).to_be_bytes());
    header.extend(pn.to_be_bytes());
    protect(version, dcid, &header, u64::from(pn), 4, &payload)
}

fn crypto_frame(offset: usize, data: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x06];
    frame.extend((0x8000_0000 | offset as u32).to_be_bytes());
    frame.extend((0x4000 | data.len() as u16).to_be_bytes());
    frame.extend(data);
    frame
}

/// `hello` as CRYPTO frames of `size` bytes, one per Initial packet, each its own datagram.
fn datagrams_of(version: Version, dcid: &[u8], hello: &[u8], size: usize) -> Vec<Vec<u8>> {
    hello
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            initial(
                version,
                dcid,
                i as u32,
                &crypto_frame(i * size, chunk),
                1200,
            )
        })
        .collect()
}

#[test]
fn rfc9001_sample_client_initial_yields_example_com() {
    let packet = unhex(RFC9001_CLIENT_INITIAL);
    assert_eq!(QuicSniffer::new().push(&packet), name("example.com"));
}

#[test]
fn rfc9369_sample_client_initial_yields_example_com() {
    let packet = unhex(RFC9369_CLIENT_INITIAL);
    assert_eq!(QuicSniffer::new().push(&packet), name("example.com"));
}

#[test]
fn sealing_the_rfc_plaintext_gives_the_rfc_packets() {
    // Proves the test-side packet builder protects exactly as the RFCs do, so the packets
    // built below are what a real client would send.
    let v1_header = unhex("c300000001088394c8f03e5157080000449e00000002");
    let sealed = protect(
        Version::V1,
        &RFC_DCID,
        &v1_header,
        2,
        4,
        &rfc_plain_payload(),
    );
    assert_eq!(sealed, unhex(RFC9001_CLIENT_INITIAL));
    let v2_header = unhex("d36b3343cf088394c8f03e5157080000449e00000002");
    let sealed = protect(
        Version::V2,
        &RFC_DCID,
        &v2_header,
        2,
        4,
        &rfc_plain_payload(),
    );
    assert_eq!(sealed, unhex(RFC9369_CLIENT_INITIAL));
}

#[test]
fn real_client_initials_yield_their_names() {
    for (file, expected) in QUIC_FIXTURES {
        let datagrams = fixtures::datagrams(file);
        let mut sniffer = QuicSniffer::new();
        let verdicts: Vec<Sniffed> = datagrams.iter().map(|d| sniffer.push(d)).collect();
        let first_name = verdicts.iter().position(|v| *v != Sniffed::NeedMore);
        let first_name = first_name.unwrap_or_else(|| panic!("{file}: no verdict"));
        assert_eq!(verdicts[first_name], name(expected), "{file}");
        assert!(
            verdicts[first_name..].iter().all(|v| *v == name(expected)),
            "{file}"
        );
    }
}

#[test]
fn real_multi_packet_hello_needs_several_datagrams() {
    // aioquic with a long ALPN list: its ClientHello does not fit one Initial, so the name
    // only appears once a later datagram completes the CRYPTO stream.
    let mut sniffer = QuicSniffer::new();
    let verdicts: Vec<Sniffed> = fixtures::datagrams("quic-aioquic-multi.bin")
        .iter()
        .map(|d| sniffer.push(d))
        .collect();
    let at = verdicts.iter().position(|v| *v != Sniffed::NeedMore);
    assert!(matches!(at, Some(i) if i >= 2), "{verdicts:?}");
    assert_eq!(verdicts[at.unwrap_or(0)], name("multi.example.com"));
}

#[test]
fn hello_spread_over_initials_in_any_datagram_order() {
    let hello = fixtures::handshake("openssl-fragmented.bin");
    for version in [Version::V1, Version::V2] {
        let mut datagrams = datagrams_of(version, &[0x11; 8], &hello, 1000);
        assert_eq!(datagrams.len(), 4);
        // Keep the first one first (it fixes the keys), then the rest in reverse.
        datagrams[1..].reverse();
        let mut sniffer = QuicSniffer::new();
        for datagram in &datagrams[..3] {
            assert_eq!(sniffer.push(datagram), Sniffed::NeedMore);
        }
        assert_eq!(sniffer.push(&datagrams[3]), name("fragmented.example.com"));
        assert_eq!(
            sniffer.push(b"anything later"),
            name("fragmented.example.com")
        );
    }
}

#[test]
fn coalesced_initials_and_trailing_packets_in_one_datagram() {
    let hello = hello_with(&sni_ext(b"coalesced.example"));
    let dcid = [0x22; 12];
    let (a, b) = hello.split_at(30);
    let mut datagram = initial(Version::V1, &dcid, 0, &crypto_frame(30, b), 0);
    datagram.extend(initial(Version::V1, &dcid, 1, &crypto_frame(0, a), 0));
    // A 0-RTT packet (type 1) whose contents the sniffer cannot and need not read, then
    // zero padding after the last packet, as some clients pad datagrams.
    datagram.extend([0xd3, 0, 0, 0, 1, 12]);
    datagram.extend(dcid);
    datagram.extend([0, 0x40, 0x20]);
    datagram.extend([0xaa; 0x20]);
    datagram.resize(1200, 0);
    assert_eq!(
        QuicSniffer::new().push(&datagram),
        name("coalesced.example")
    );
}

#[test]
fn changed_connection_ids_still_open() {
    let hello = hello_with(&sni_ext(b"cid.example"));
    let (a, b) = hello.split_at(20);
    let original = [0x33; 8];
    // After the server's Initial the client addresses the server's chosen ID but keeps the
    // keys of the original ID (RFC 9001 §5.2).
    let mut sniffer = QuicSniffer::new();
    assert_eq!(
        sniffer.push(&initial(
            Version::V1,
            &original,
            0,
            &crypto_frame(0, a),
            1200
        )),
        Sniffed::NeedMore
    );
    let later = rebuild_with_dcid(Version::V1, &original, &[0x44; 8], 1, &crypto_frame(20, b));
    assert_eq!(sniffer.push(&later), name("cid.example"));

    // After a Retry, keys come from the new ID itself.
    let mut sniffer = QuicSniffer::new();
    assert_eq!(
        sniffer.push(&initial(
            Version::V1,
            &original,
            0,
            &crypto_frame(0, a),
            1200
        )),
        Sniffed::NeedMore
    );
    let retried = initial(Version::V1, &[0x55; 10], 1, &crypto_frame(20, b), 1200);
    assert_eq!(sniffer.push(&retried), name("cid.example"));
}

/// An Initial addressed to `dcid` but protected with the keys of `keys_dcid`.
fn rebuild_with_dcid(
    version: Version,
    keys_dcid: &[u8],
    dcid: &[u8],
    pn: u32,
    frames: &[u8],
) -> Vec<u8> {
    let mut header = vec![0xc3, 0, 0, 0, 1, dcid.len() as u8];
    header.extend(dcid);
    header.extend([0, 0]); // empty source ID, no token
    let mut payload = frames.to_vec();
    payload.resize(1100, 0);
    header.extend((0x4000 | (4 + payload.len() + 16) as u16).to_be_bytes());
    header.extend(pn.to_be_bytes());
    protect(version, keys_dcid, &header, u64::from(pn), 4, &payload)
}

#[test]
fn what_is_not_a_readable_client_initial_is_refused() {
    let good = initial(Version::V1, &[1; 8], 0, &crypto_frame(0, b"\x01\x00"), 1200);
    let mut bad_tag = good.clone();
    *bad_tag.last_mut().unwrap() ^= 1;
    let mut draft29 = good.clone();
    draft29[1..5].copy_from_slice(&[0xff, 0, 0, 29]);
    for (what, datagram) in [
        ("short header", vec![0x40; 1200]),
        ("draft version", draft29),
        ("tag mismatch", bad_tag),
        ("empty", vec![]),
        (
            "dns query",
            unhex("123401000001000000000000076578616d706c6503636f6d0000010001"),
        ),
    ] {
        assert_eq!(
            QuicSniffer::new().push(&datagram),
            Sniffed::NotThis,
            "{what}"
        );
    }
    // A ClientHello-less Initial whose CRYPTO data starts another message.
    let server_hello = initial(
        Version::V1,
        &[1; 8],
        0,
        &crypto_frame(0, b"\x02\x00\x00\x04"),
        1200,
    );
    assert_eq!(QuicSniffer::new().push(&server_hello), Sniffed::NotThis);
}

#[test]
fn close_far_offsets_and_endless_flows_end_sniffing() {
    let dcid = [9; 8];
    let close = [crypto_frame(0, b"\x01\x00"), vec![0x1c, 0x0a, 0x00, 0x00]].concat();
    assert_eq!(
        QuicSniffer::new().push(&initial(Version::V1, &dcid, 0, &close, 1200)),
        Sniffed::NotThis
    );

    let far = crypto_frame(crypto_stream::MAX_CRYPTO_LEN, b"x");
    assert_eq!(
        QuicSniffer::new().push(&initial(Version::V1, &dcid, 0, &far, 1200)),
        Sniffed::NotThis
    );

    let mut sniffer = QuicSniffer::new();
    let start = initial(
        Version::V1,
        &dcid,
        0,
        &crypto_frame(0, b"\x01\x00\x01"),
        1200,
    );
    assert_eq!(sniffer.push(&start), Sniffed::NeedMore);
    for _ in 2..MAX_DATAGRAMS {
        assert_eq!(sniffer.push(&[0x40; 100]), Sniffed::NeedMore);
    }
    assert_eq!(sniffer.push(&[0x40; 100]), Sniffed::NotThis);
    assert_eq!(sniffer.push(&start), Sniffed::NotThis);
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic(
        datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1400), 1..5),
    ) {
        let mut sniffer = QuicSniffer::new();
        for datagram in &datagrams {
            let _ = sniffer.push(datagram);
        }
    }

    #[test]
    fn corrupted_real_initials_never_panic(
        which in 0..QUIC_FIXTURES.len(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut sniffer = QuicSniffer::new();
        for datagram in fixtures::datagrams(QUIC_FIXTURES[which].0) {
            let mut datagram = datagram.to_vec();
            for (at, value) in &flips {
                let at = at.index(datagram.len());
                datagram[at] = *value;
            }
            let _ = sniffer.push(&datagram);
        }
    }

    #[test]
    fn any_split_and_order_of_crypto_frames_gives_the_same_name(
        version in prop_oneof![Just(Version::V1), Just(Version::V2)],
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        order in any::<u64>(),
        per_datagram in 1usize..4,
    ) {
        let hello = fixtures::handshake("curl.bin");
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(hello.len())).collect();
        bounds.extend([0, hello.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let mut frames: Vec<Vec<u8>> = bounds.windows(2).map(|w| crypto_frame(w[0], &hello[w[0]..w[1]])).collect();
        let n = frames.len();
        frames.rotate_left((order as usize) % n);
        let dcid = [0x66; 8];
        let packets: Vec<Vec<u8>> = frames
            .chunks(2)
            .enumerate()
            .map(|(i, f)| initial(version, &dcid, i as u32, &f.concat(), 0))
            .collect();
        let mut sniffer = QuicSniffer::new();
        let mut last = Sniffed::NeedMore;
        for datagram in packets.chunks(per_datagram) {
            last = sniffer.push(&datagram.concat());
        }
        prop_assert_eq!(last, name("curl.example.com"));
    }
}
