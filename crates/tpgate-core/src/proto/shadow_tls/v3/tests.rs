//! The server's side written out from the protocol document (signing the handshake
//! server's records, the data chains), against the client's.

use ring::{digest, hmac};

use super::*;

const PW: &str = "lab-shadow-tls-pw";

fn hmac_sha1(parts: &[&[u8]]) -> [u8; 20] {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, PW.as_bytes());
    let mut c = hmac::Context::with_key(&key);
    for p in parts {
        c.update(p);
    }
    c.sign().as_ref().try_into().expect("20")
}

fn hello(extra: &[u8]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x42; 32]);
    body.push(32);
    body.extend_from_slice(&[0xee; 32]);
    body.extend_from_slice(extra);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[test]
fn the_session_id_is_random_then_the_hmac_of_the_hello_with_it_zeroed() {
    let rec = hello(b"\x00\x02\x13\x01ext");
    let random = [9u8; 28];
    let id = session_id(PW, &rec, &random).expect("id");
    assert_eq!(id[..28], random);
    let mut zeroed = rec[5..].to_vec();
    zeroed[39..67].copy_from_slice(&random);
    zeroed[67..71].fill(0);
    assert_eq!(id[28..], hmac_sha1(&[&zeroed])[..4]);
    // The old session id in the hello does not matter; every other byte does.
    let mut other = rec.clone();
    other[50] ^= 1;
    assert_eq!(session_id(PW, &other, &random), Some(id));
    other = rec.clone();
    other[80] ^= 1;
    assert_ne!(session_id(PW, &other, &random), Some(id));
    assert_eq!(session_id(PW, &rec[..70], &random), None);
}

#[test]
fn the_server_random_comes_from_a_server_hello_only() {
    let mut sh = vec![0x16, 3, 3, 0, 40, 2, 0, 0, 36, 3, 3];
    sh.extend_from_slice(&[0x5c; 32]);
    assert_eq!(server_random(&sh), Some([0x5c; 32]));
    let mut ch = sh.clone();
    ch[5] = 1;
    assert_eq!(server_random(&ch), None);
    assert_eq!(server_random(&sh[..40]), None);
    let mut ad = sh;
    ad[0] = 0x17;
    assert_eq!(server_random(&ad), None);
}

/// What the ShadowTLS server does to each application-data record of the handshake server.
struct Signer {
    chain: Vec<u8>,
    key: [u8; 32],
}

impl Signer {
    fn new(sr: &[u8; 32]) -> Self {
        let mut h = digest::Context::new(&digest::SHA256);
        h.update(PW.as_bytes());
        h.update(sr);
        Self {
            chain: sr.to_vec(),
            key: h.finish().as_ref().try_into().expect("32"),
        }
    }

    fn sign(&mut self, record: &[u8]) -> Vec<u8> {
        let content: Vec<u8> = record[5..]
            .iter()
            .zip(self.key.iter().cycle())
            .map(|(b, k)| b ^ k)
            .collect();
        self.chain.extend_from_slice(&content);
        let tag = hmac_sha1(&[&self.chain]);
        let mut out = record[..3].to_vec();
        out.extend_from_slice(&((content.len() + 4) as u16).to_be_bytes());
        out.extend_from_slice(&tag[..4]);
        out.extend_from_slice(&content);
        out
    }
}

fn app_data(content: &[u8]) -> Vec<u8> {
    let mut r = vec![0x17, 3, 3];
    r.extend_from_slice(&(content.len() as u16).to_be_bytes());
    r.extend_from_slice(content);
    r
}

#[test]
fn signed_handshake_records_unwrap_to_what_the_handshake_server_sent() {
    let sr = [0x31; 32];
    let mut signer = Signer::new(&sr);
    let mut hs = Handshake::new(PW, sr);
    for content in [
        &b"encrypted extensions and certificate"[..],
        b"finished",
        b"",
    ] {
        let original = app_data(content);
        let signed = signer.sign(&original);
        assert_eq!(hs.unwrap(&signed), Ok(original));
    }
    // A record the server did not sign (it relays a stranger untouched), or one altered.
    let plain = app_data(b"not signed");
    assert_eq!(hs.clone().unwrap(&plain), Err(NotSigned));
    let mut altered = signer.sign(&app_data(b"x"));
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert_eq!(hs.unwrap(&altered), Err(NotSigned));
    // Another password's server random key.
    let mut other = Handshake::new("other", sr);
    assert_eq!(
        other.unwrap(&Signer::new(&sr).sign(&app_data(b"y"))),
        Err(NotSigned)
    );
}

/// The server's data records: HMAC chained with ServerRandom + "S", fed back after use.
struct ServerData {
    chain: Vec<u8>,
}

impl ServerData {
    fn record(&mut self, data: &[u8]) -> Vec<u8> {
        self.chain.extend_from_slice(data);
        let tag = hmac_sha1(&[&self.chain]);
        self.chain.extend_from_slice(&tag[..4]);
        let mut r = vec![0x17, 3, 3];
        r.extend_from_slice(&((data.len() + 4) as u16).to_be_bytes());
        r.extend_from_slice(&tag[..4]);
        r.extend_from_slice(data);
        r
    }
}

#[test]
fn data_both_ways_after_leftover_handshake_records() {
    let sr = [0x77; 32];
    let mut signer = Signer::new(&sr);
    let mut hs = Handshake::new(PW, sr);
    let finished = signer.sign(&app_data(b"server finished"));
    hs.unwrap(&finished).expect("signed");
    let (mut writer, mut reader) = hs.into_data(PW);

    // The client's records verify with ServerRandom + "C", chained.
    let mut c_chain = [&sr[..], b"C"].concat();
    for data in [&b"request"[..], b"", &[5u8; 1000]] {
        let mut out = Vec::new();
        writer.encode(data, &mut out).expect("fits");
        c_chain.extend_from_slice(data);
        let tag = hmac_sha1(&[&c_chain]);
        c_chain.extend_from_slice(&tag[..4]);
        assert_eq!(out[..3], [0x17, 3, 3]);
        assert_eq!(out[3..5], ((data.len() + 4) as u16).to_be_bytes());
        assert_eq!(out[5..9], tag[..4]);
        assert_eq!(&out[9..], data);
    }
    assert!(writer
        .encode(&vec![0; MAX_DATA + 1], &mut Vec::new())
        .is_none());

    // Session tickets signed the handshake's way are dropped, then data flows.
    let ticket = signer.sign(&app_data(b"new session ticket"));
    let mut server = ServerData {
        chain: [&sr[..], b"S"].concat(),
    };
    let data = server.record(b"response");
    let mut stream = ticket.clone();
    stream.extend_from_slice(&data);
    assert_eq!(reader.next(&stream[..ticket.len() - 1]), Ok(None));
    assert_eq!(reader.next(&stream), Ok(Some(Next::Skip(ticket.len()))));
    assert_eq!(
        reader.next(&data),
        Ok(Some(Next::Data { header: 9, len: 8 }))
    );
    let more = server.record(b"more");
    assert_eq!(
        reader.next(&more),
        Ok(Some(Next::Data { header: 9, len: 4 }))
    );
    // Once data has come, a handshake-signed record is an error, as is a replayed one.
    let late = signer.sign(&app_data(b"late ticket"));
    assert_eq!(reader.clone().next(&late), Err(RecordError::BadMac));
    assert_eq!(reader.clone().next(&more), Err(RecordError::BadMac));
    // An alert is how the server ends the stream.
    assert_eq!(
        reader.next(&[0x15, 3, 3, 0, 2, 2, 40]),
        Ok(Some(Next::End { header: 7 }))
    );
}

#[test]
fn a_wrong_record_type_or_short_record_is_an_error() {
    let (_, mut reader) = Handshake::new(PW, [1; 32]).into_data(PW);
    assert!(matches!(
        reader.clone().next(&[0x16, 3, 3, 0, 1, 0]),
        Err(RecordError::Unexpected { kind: 0x16, .. })
    ));
    assert_eq!(
        reader.next(&[0x17, 3, 3, 0, 2, 0, 0]),
        Err(RecordError::BadMac)
    );
}
