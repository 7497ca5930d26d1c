use proptest::prelude::*;

use super::*;

const ID: Uuid = Uuid([7; 16]);

/// A TLS 1.3 ServerHello record as rustls or Go sends it (cipher 0x1301,
/// supported_versions 0x0304), `session` bytes of legacy session id.
fn server_hello(cipher: u16, tls13: bool) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x11; 32]); // random
    body.push(32);
    body.extend_from_slice(&[0x22; 32]); // session id
    body.extend_from_slice(&cipher.to_be_bytes());
    body.push(0); // compression
    let mut ext = vec![0x00, 0x33, 0x00, 0x04, 1, 2, 3, 4]; // key_share (stand-in)
    if tls13 {
        ext.extend_from_slice(&TLS13_SUPPORTED_VERSIONS);
    }
    body.extend_from_slice(&u16::try_from(ext.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x02, 0];
    hs.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = TLS_SERVER_HANDSHAKE.to_vec();
    rec.extend_from_slice(&u16::try_from(hs.len()).unwrap().to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

const CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03";

fn unpad_all(frames: &[u8]) -> (Vec<u8>, Unpadded) {
    let mut u = Unpadder::new(ID);
    let mut out = Vec::new();
    let status = u.feed(frames, &mut out).unwrap();
    (out, status)
}

#[test]
fn frame_bytes() {
    let mut out = Vec::new();
    encode_frame(Some(&ID), Command::Continue, b"abc", 2, &mut out);
    let mut want = vec![7; 16];
    want.extend_from_slice(b"\x00\x00\x03\x00\x02abc\x00\x00");
    assert_eq!(out, want);
    out.clear();
    encode_frame(None, Command::Direct, b"", 0, &mut out);
    assert_eq!(out, b"\x02\x00\x00\x00\x00");
}

#[test]
fn padding_lengths() {
    assert_eq!(padding_len(0, true, 0), 900);
    assert_eq!(padding_len(100, true, 499), 1299);
    assert_eq!(padding_len(100, true, 500), 800);
    assert_eq!(padding_len(1000, true, 300), 44);
    assert_eq!(padding_len(10, false, 255), 255);
    assert_eq!(padding_len(CONTENT_MAX - 3, false, 255), 3);
    assert_eq!(padding_len(CONTENT_MAX, true, 7), 0);
}

#[test]
fn tls13_handshake_goes_direct_on_the_first_application_data() {
    let mut f = TlsFilter::default();
    let mut p = Padder::new(ID);
    let mut wire = Vec::new();
    p.empty(3, &mut wire);
    f.observe(CLIENT_HELLO);
    assert_eq!(
        p.write(&f, CLIENT_HELLO, || 5, &mut wire),
        WriteMode::Padded
    );
    f.observe(&server_hello(0x1301, true));
    assert!(f.direct_ok() && !f.filtering());
    // The client's Finished (after a ChangeCipherSpec) is padded on.
    let finished = b"\x14\x03\x03\x00\x01\x01\x17\x03\x03\x00\x05hello";
    assert_eq!(p.write(&f, finished, || 5, &mut wire), WriteMode::Padded);
    let data = b"\x17\x03\x03\x00\x03abc";
    assert_eq!(p.write(&f, data, || 5, &mut wire), WriteMode::Direct);
    let (content, status) = unpad_all(&wire);
    assert_eq!(status, Unpadded::Direct);
    let mut want = CLIENT_HELLO.to_vec();
    want.extend_from_slice(finished);
    want.extend_from_slice(data);
    assert_eq!(content, want);
}

#[test]
fn tls12_and_ccm8_end_padding_without_direct() {
    for hello in [server_hello(0xc02f, false), server_hello(0x1305, true)] {
        let mut f = TlsFilter::default();
        let mut p = Padder::new(ID);
        f.observe(CLIENT_HELLO);
        f.observe(&hello);
        assert!(!f.direct_ok());
        let mut wire = Vec::new();
        let data = b"\x17\x03\x03\x00\x03abc";
        assert_eq!(p.write(&f, data, || 1, &mut wire), WriteMode::Plain);
        assert_eq!(p.write(&f, b"more", || 1, &mut wire), WriteMode::Plain);
        let (content, status) = unpad_all(&wire);
        assert_eq!(status, Unpadded::Plain);
        assert_eq!(content, b"\x17\x03\x03\x00\x03abcmore");
    }
}

#[test]
fn plain_traffic_ends_padding_when_the_filter_gives_up() {
    let mut f = TlsFilter::default();
    let mut p = Padder::new(ID);
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    let mut modes = Vec::new();
    for i in 0..6u8 {
        let packet = [b'a' + i; 10];
        f.observe(&packet);
        f.observe(b"reply");
        modes.push(p.write(&f, &packet, || 9, &mut wire));
        sent.extend_from_slice(&packet);
    }
    assert_eq!(modes[..3], [WriteMode::Padded; 3]);
    assert_eq!(modes[3..], [WriteMode::Plain; 3]);
    let (content, status) = unpad_all(&wire);
    assert_eq!((content, status), (sent, Unpadded::Plain));
}

#[test]
fn big_writes_are_cut_at_application_data() {
    let mut f = TlsFilter::default();
    f.observe(CLIENT_HELLO);
    f.observe(&server_hello(0x1302, true));
    let mut p = Padder::new(ID);
    let mut data = b"\x17\x03\x03\x17\xf0".to_vec();
    data.resize(6000, 1);
    data.extend_from_slice(b"\x17\x03\x03\x17\xf0");
    data.resize(20000, 2);
    let mut wire = Vec::new();
    assert_eq!(p.write(&f, &data, || 0, &mut wire), WriteMode::Direct);
    let (content, status) = unpad_all(&wire);
    assert_eq!((content, status), (data, Unpadded::Direct));
    assert!(pieces(&vec![0; 20000])
        .iter()
        .all(|p| p.len() < CONTENT_MAX));
}

#[test]
fn unpadder_edge_cases() {
    // Not padded at all: passed on, including fewer than 16 bytes at the end.
    let (content, status) = unpad_all(b"SSH-2.0-OpenSSH_9.2\r\n");
    assert_eq!(
        (content.as_slice(), status),
        (&b"SSH-2.0-OpenSSH_9.2\r\n"[..], Unpadded::Plain)
    );
    let mut u = Unpadder::new(ID);
    let mut out = Vec::new();
    assert_eq!(u.feed(b"hi", &mut out), Ok(Unpadded::Padded));
    u.finish(&mut out);
    assert_eq!(out, b"hi");
    // An unknown command.
    let mut bad = vec![7; 16];
    bad.extend_from_slice(b"\x05\x00\x00\x00\x00");
    let mut u = Unpadder::new(ID);
    assert_eq!(u.feed(&bad, &mut out), Err(UnpadError::Command(5)));
    // Bytes after the end of padding in the same piece are plain.
    let mut wire = vec![7; 16];
    wire.extend_from_slice(b"\x01\x00\x01\x00\x01x\x00tail");
    assert_eq!(unpad_all(&wire), (b"xtail".to_vec(), Unpadded::Plain));
}

proptest! {
    #[test]
    fn frames_unpad_in_any_pieces(
        writes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..6),
        cuts in proptest::collection::vec(1usize..700, 1..40),
        random in any::<u32>(),
    ) {
        let f = TlsFilter::default();
        let mut p = Padder::new(ID);
        let mut wire = Vec::new();
        p.empty(random, &mut wire);
        let mut sent = Vec::new();
        for w in &writes {
            p.write(&f, w, || random, &mut wire);
            sent.extend_from_slice(w);
        }
        let mut u = Unpadder::new(ID);
        let mut got = Vec::new();
        let mut rest = &wire[..];
        for &c in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = c.min(rest.len());
            u.feed(&rest[..n], &mut got).unwrap();
            rest = &rest[n..];
        }
        prop_assert_eq!(got, sent);
        prop_assert_eq!(u.status(), Unpadded::Padded);
    }

    #[test]
    fn unpadder_never_panics_nor_invents_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut id_first = ID.0.to_vec();
        id_first.extend_from_slice(&data);
        for input in [&data[..], &id_first[..]] {
            let mut u = Unpadder::new(ID);
            let mut out = Vec::new();
            if u.feed(input, &mut out).is_ok() {
                prop_assert!(out.len() <= input.len());
            }
        }
    }
}

#[test]
fn writes_are_cut_at_inner_record_ends() {
    let mut f = TlsFilter::default();
    f.observe(CLIENT_HELLO);
    f.observe(&server_hello(0x1301, true));
    let mut p = Padder::new(ID);
    // Finished, then two application-data records, read by the proxy as one lump that
    // starts at the Finished.
    let mut stream = b"\x14\x03\x03\x00\x01\x01\x17\x03\x03\x00\x02ab".to_vec();
    for body in [300usize, 20000] {
        stream.extend_from_slice(b"\x17\x03\x03");
        stream.extend_from_slice(&u16::try_from(body).unwrap().to_be_bytes());
        stream.resize(stream.len() + body, 0x55);
    }
    let mut wire = Vec::new();
    let mut rest = &stream[..];
    let mut modes = Vec::new();
    // The first cut ends with the CCS record; the Finished record's write goes direct.
    while !rest.is_empty() && modes.last() != Some(&WriteMode::Direct) {
        let n = p.next_len(rest);
        modes.push(p.write(&f, &rest[..n], || 7, &mut wire));
        rest = &rest[n..];
    }
    assert_eq!(modes, [WriteMode::Padded, WriteMode::Direct]);
    assert_eq!(stream.len() - rest.len(), 6 + 7);
    // Not TLS: one frame's worth at a time.
    let plain = Padder::new(ID);
    assert_eq!(plain.next_len(&[b'G'; 20000]), CONTENT_MAX - 1);
    assert_eq!(plain.next_len(b"GET"), 3);
}

proptest! {
    #[test]
    fn cuts_follow_records_in_any_pieces(
        bodies in proptest::collection::vec(0usize..20000, 1..5),
        pieces in proptest::collection::vec(1usize..9000, 1..20),
    ) {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for b in &bodies {
            stream.extend_from_slice(b"\x17\x03\x03");
            stream.extend_from_slice(&u16::try_from(*b).unwrap().to_be_bytes());
            stream.resize(stream.len() + b, 1);
            ends.push(stream.len());
        }
        let mut r = Records::default();
        let mut at = 0;
        for &piece in pieces.iter().cycle() {
            if at == stream.len() {
                break;
            }
            let avail = &stream[at..stream.len().min(at + piece)];
            let n = r.cut(avail, CONTENT_MAX - 1).min(avail.len());
            prop_assert!(n >= 1);
            r.advance(&avail[..n]);
            at += n;
            // A cut never crosses a record end.
            let next_end = ends.iter().find(|&&e| e > at - n).copied().unwrap();
            prop_assert!(at <= next_end);
        }
        prop_assert!(!r.lost);
    }
}
