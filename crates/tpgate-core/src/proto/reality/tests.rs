//! The seal opened as a REALITY server opens it (the server's steps written out here: the
//! additional data is the hello with the session id zeroed), and the certificate check
//! against certificates built byte by byte.

use ring::{aead, hmac};

use super::*;

/// One ClientHello record with `body_extra` bytes after the session id (cipher suites,
/// extensions: REALITY does not read them, but the seal covers them).
fn hello_record(random: [u8; 32], body_extra: &[u8]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&random);
    body.push(32);
    body.extend_from_slice(&[0xee; 32]);
    body.extend_from_slice(body_extra);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// What a server does: open the session id with the auth key it derived.
fn server_open(record: &[u8], key: &[u8; 32]) -> Option<[u8; 16]> {
    let mut hs = record[5..].to_vec();
    let sealed: Vec<u8> = hs[39..71].to_vec();
    hs[39..71].fill(0);
    let random = &record[11..43];
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, key).ok()?);
    let nonce = aead::Nonce::try_assume_unique_for_key(&random[20..]).ok()?;
    let mut buf = sealed;
    let plain = key
        .open_in_place(nonce, aead::Aad::from(&hs[..]), &mut buf)
        .ok()?;
    plain.try_into().ok()
}

fn with_session_id(record: &[u8], id: &[u8; 32]) -> Vec<u8> {
    let mut r = record.to_vec();
    r[44..76].copy_from_slice(id);
    r
}

#[test]
fn the_session_id_opens_with_the_auth_key_and_carries_version_time_and_short_id() {
    let random: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
    let record = hello_record(random, b"\x00\x02\x13\x01\x01\x00\x00\x05extns");
    let hello = Hello::parse(&record).expect("hello");
    assert_eq!(hello.random(), &random);
    assert_eq!(hello.session_id(), &[0xee; 32]);
    let shared = [9u8; 32];
    let key = auth_key(&shared, hello.random());
    // The auth key depends on the secret and on the random's first 20 bytes only.
    assert_ne!(key, auth_key(&[8u8; 32], hello.random()));
    let mut other = random;
    other[19] ^= 1;
    assert_ne!(key, auth_key(&shared, &other));
    other = random;
    other[20] ^= 1;
    assert_eq!(key, auth_key(&shared, &other));

    let short_id = [0xa1, 0xb2, 0xc3, 0, 0, 0, 0, 0];
    let id = session_id(&hello, &key, &short_id, 0x6789_abcd);
    let sent = with_session_id(&record, &id);
    let plain = server_open(&sent, &key).expect("the server opens the seal");
    assert_eq!(&plain[..4], &[26, 3, 27, 0]);
    assert_eq!(&plain[4..8], &0x6789_abcd_u32.to_be_bytes());
    assert_eq!(&plain[8..], &short_id);
    // The session id the hello held before does not matter (it is zeroed for the seal).
    let mut zeroed = record.clone();
    zeroed[44..76].fill(0);
    assert_eq!(
        session_id(
            &Hello::parse(&zeroed).expect("hello"),
            &key,
            &short_id,
            0x6789_abcd
        ),
        id
    );
}

#[test]
fn the_seal_covers_every_byte_of_the_hello_and_the_key() {
    let record = hello_record([3; 32], b"some extensions here");
    let hello = Hello::parse(&record).expect("hello");
    let key = auth_key(&[1; 32], hello.random());
    let sent = with_session_id(&record, &session_id(&hello, &key, &[0; 8], 1));
    assert!(server_open(&sent, &key).is_some());
    for i in (5..sent.len()).filter(|i| !(44..76).contains(i)) {
        let mut t = sent.clone();
        t[i] ^= 0x40;
        assert!(server_open(&t, &key).is_none(), "byte {i} is not covered");
    }
    let mut wrong = key;
    wrong[0] ^= 1;
    assert!(server_open(&sent, &wrong).is_none());
}

#[test]
fn only_one_whole_hello_with_a_32_byte_session_id_parses() {
    let record = hello_record([0; 32], b"x");
    assert!(Hello::parse(&record).is_ok());
    for cut in [0, 10, 75, record.len() - 1] {
        assert_eq!(
            Hello::parse(&record[..cut]),
            Err(HelloError::NotOneHello),
            "{cut}"
        );
    }
    let mut two = record.clone();
    two.extend_from_slice(&record);
    assert_eq!(Hello::parse(&two), Err(HelloError::NotOneHello));
    let mut not_hs = record.clone();
    not_hs[0] = 0x17;
    assert_eq!(Hello::parse(&not_hs), Err(HelloError::NotOneHello));
    let mut server_hello = record.clone();
    server_hello[5] = 2;
    assert_eq!(Hello::parse(&server_hello), Err(HelloError::NotOneHello));
    let mut short_id = record.clone();
    short_id[43] = 16;
    assert_eq!(Hello::parse(&short_id), Err(HelloError::NoSessionId));
}

/// A certificate-shaped DER: something, the Ed25519 key info, something, the signature.
fn cert(key: &[u8; 32], signature: &[u8; 64]) -> Vec<u8> {
    let mut der = vec![0x30, 0x82, 0x01, 0x00, 0x30, 0x81, 0xa0, 0x02, 0x01, 0x00];
    der.extend_from_slice(&ED25519_SPKI);
    der.extend_from_slice(key);
    der.extend_from_slice(&[
        0xa3, 0x02, 0x30, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
    ]);
    der.extend_from_slice(&SIGNATURE_HEAD);
    der.extend_from_slice(signature);
    der
}

fn hmac_of(auth: &[u8; 32], key: &[u8; 32]) -> [u8; 64] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA512, auth), key);
    tag.as_ref().try_into().expect("64 bytes")
}

#[test]
fn the_certificate_must_be_signed_with_the_hmac_of_its_key() {
    let auth = [5u8; 32];
    let key = [7u8; 32];
    assert_eq!(
        check_certificate(&cert(&key, &hmac_of(&auth, &key)), &auth),
        Ok(key)
    );
    // Another connection's key, another certificate key, a real signature: refused.
    assert_eq!(
        check_certificate(&cert(&key, &hmac_of(&[6; 32], &key)), &auth),
        Err(CertError::WrongHmac)
    );
    assert_eq!(
        check_certificate(&cert(&key, &hmac_of(&auth, &[8; 32])), &auth),
        Err(CertError::WrongHmac)
    );
    assert_eq!(
        check_certificate(&cert(&key, &[0x11; 64]), &auth),
        Err(CertError::WrongHmac)
    );
    // No Ed25519 key, or a signature of another shape: not a REALITY certificate.
    let mut rsa = cert(&key, &hmac_of(&auth, &key));
    rsa[16] = 0x71;
    assert_eq!(check_certificate(&rsa, &auth), Err(CertError::NotEd25519));
    let good = cert(&key, &hmac_of(&auth, &key));
    let mut long_sig = good.clone();
    long_sig.push(0);
    assert_eq!(
        check_certificate(&long_sig, &auth),
        Err(CertError::NotEd25519)
    );
    for cut in [0, 5, 22, 40, good.len() - 1] {
        assert!(check_certificate(&good[..cut], &auth).is_err(), "{cut}");
    }
}
