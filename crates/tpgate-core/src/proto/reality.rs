//! REALITY, the client's side as Xray defines it (XTLS/REALITY and Xray-core's
//! `transport/internet/reality`): a TLS 1.3 ClientHello whose 32-byte session id carries,
//! sealed with AES-256-GCM, the client's version, the time and its short id. The key
//! (the *auth key*) is HKDF-SHA256 of the X25519 secret between the hello's own key share
//! and the server's REALITY public key, salted with the first 20 bytes of the hello's
//! random; the nonce is the random's last 12 bytes; the additional data is the whole
//! ClientHello message with its session id zeroed. A server that opens the seal answers
//! with a throwaway Ed25519 certificate whose signature field is HMAC-SHA512 of its public
//! key under the auth key; any other server (REALITY forwards strangers to its target)
//! shows a certificate that fails this check.
//!
//! Pure: the caller does the X25519 agreement (it holds the key share's secret) and the
//! handshake; here are the hello's layout, the seal and the certificate check.

use ring::{aead, hkdf, hmac};

/// The client version the session id claims. A REALITY server may require a minimum
/// (`minClientVer`); Xray since 26.3.27 refuses older versions unless its owner opts out,
/// so tpgate claims that one.
pub const CLIENT_VERSION: [u8; 3] = [26, 3, 27];

/// Offsets in the ClientHello *record* (5-byte record header, 4-byte handshake header,
/// 2-byte legacy version, 32-byte random, 1-byte session id length, session id).
const RECORD_HEADER: usize = 5;
const RANDOM: usize = RECORD_HEADER + 4 + 2;
const SESSION_ID: usize = RANDOM + 32 + 1;

/// Why a ClientHello cannot carry REALITY's seal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("the first TLS record is not one whole ClientHello")]
    NotOneHello,
    #[error("the ClientHello has no 32-byte session id")]
    NoSessionId,
}

/// Where the parts REALITY uses sit in one ClientHello record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    record: &'a [u8],
}

impl<'a> Hello<'a> {
    /// `record` must be exactly one TLS handshake record holding one whole ClientHello with
    /// a 32-byte session id (what a TLS 1.3 client in compatibility mode sends first).
    pub fn parse(record: &'a [u8]) -> Result<Self, HelloError> {
        if record.len() < SESSION_ID + 32
            || record[0] != 0x16
            || usize::from(u16::from_be_bytes([record[3], record[4]])) != record.len() - 5
            || record[5] != 1
        {
            return Err(HelloError::NotOneHello);
        }
        let body = u32::from_be_bytes([0, record[6], record[7], record[8]]) as usize;
        if body != record.len() - 9 {
            return Err(HelloError::NotOneHello);
        }
        if record[SESSION_ID - 1] != 32 {
            return Err(HelloError::NoSessionId);
        }
        Ok(Self { record })
    }

    /// The whole record.
    pub fn record(&self) -> &'a [u8] {
        self.record
    }

    pub fn random(&self) -> &'a [u8] {
        &self.record[RANDOM..RANDOM + 32]
    }

    pub fn session_id(&self) -> &'a [u8] {
        &self.record[SESSION_ID..SESSION_ID + 32]
    }

    /// The handshake message (no record header) with the session id zeroed: the seal's
    /// additional data.
    fn aad(&self) -> Vec<u8> {
        let mut m = self.record[RECORD_HEADER..].to_vec();
        m[SESSION_ID - RECORD_HEADER..SESSION_ID - RECORD_HEADER + 32].fill(0);
        m
    }
}

/// The auth key: HKDF-SHA256 of the X25519 `shared` secret, salted with the random's first
/// 20 bytes, info "REALITY".
pub fn auth_key(shared: &[u8; 32], random: &[u8]) -> [u8; 32] {
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let mut key = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, &random[..20])
        .extract(shared)
        .expand(&[b"REALITY"], Len32)
        .and_then(|okm| okm.fill(&mut key))
        .expect("32 bytes is a valid HKDF-SHA256 length");
    key
}

/// The session id to put in `hello`: [version (3), 0, unix time (4, big-endian),
/// short id (8)] sealed under `auth_key` (16 bytes of ciphertext and 16 of tag).
pub fn session_id(
    hello: &Hello<'_>,
    auth_key: &[u8; 32],
    short_id: &[u8; 8],
    unix_time: u32,
) -> [u8; 32] {
    let mut plain = [0u8; 16];
    plain[..3].copy_from_slice(&CLIENT_VERSION);
    plain[4..8].copy_from_slice(&unix_time.to_be_bytes());
    plain[8..].copy_from_slice(short_id);
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, auth_key).expect("a 32-byte AES-256 key"),
    );
    let nonce =
        aead::Nonce::try_assume_unique_for_key(&hello.random()[20..]).expect("12 bytes of nonce");
    let tag = key
        .seal_in_place_separate_tag(nonce, aead::Aad::from(hello.aad()), &mut plain)
        .expect("16 bytes fit AES-GCM");
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&plain);
    out[16..].copy_from_slice(tag.as_ref());
    out
}

/// Why the server's certificate is not the REALITY one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("the certificate has no Ed25519 key (a REALITY server shows a throwaway Ed25519 one)")]
    NotEd25519,
    #[error("the certificate's signature is not REALITY's HMAC under this connection's key")]
    WrongHmac,
}

/// DER of an Ed25519 SubjectPublicKeyInfo (RFC 8410) up to the key's 32 bytes.
const ED25519_SPKI: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER of the 64-byte signature BIT STRING that ends an Ed25519-signed certificate.
const SIGNATURE_HEAD: [u8; 3] = [0x03, 0x41, 0x00];

/// Checks the server's end-entity certificate `der` under `auth_key`; returns its Ed25519
/// public key (the handshake's CertificateVerify is signed with it).
pub fn check_certificate(der: &[u8], auth_key: &[u8; 32]) -> Result<[u8; 32], CertError> {
    let at = der
        .windows(ED25519_SPKI.len())
        .position(|w| w == ED25519_SPKI)
        .ok_or(CertError::NotEd25519)?;
    let key: [u8; 32] = der
        .get(at + ED25519_SPKI.len()..at + ED25519_SPKI.len() + 32)
        .and_then(|k| k.try_into().ok())
        .ok_or(CertError::NotEd25519)?;
    let signature = der
        .len()
        .checked_sub(64 + SIGNATURE_HEAD.len())
        .filter(|&s| der[s..s + 3] == SIGNATURE_HEAD)
        .map(|s| &der[s + 3..])
        .ok_or(CertError::NotEd25519)?;
    let mac = hmac::Key::new(hmac::HMAC_SHA512, auth_key);
    hmac::verify(&mac, &key, signature).map_err(|_| CertError::WrongHmac)?;
    Ok(key)
}

#[cfg(test)]
mod tests;
