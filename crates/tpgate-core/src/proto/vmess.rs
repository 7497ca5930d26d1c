//! VMess AEAD client framing (alterId 0): the sealed request header, the chunked body in
//! both directions, and the sealed response header. Randomness (body key and IV, the
//! auth id's nonce, padding) and the clock are the caller's, so tests are deterministic.
//!
//! Request: `auth id (16) | sealed length (2 + 16) | connection nonce (8) | sealed header`;
//! the auth id is AES-128 of `time (u64 BE) | 4 random bytes | CRC32 of those 12`, and every
//! key comes from the "VMess AEAD KDF" chain of nested HMAC-SHA256. The header holds the
//! body key and IV, the option bits, the data cipher and the destination (port first).
//! Body: chunks of `length (u16 BE) | sealed payload`, nonce `count (u16 BE) | iv[2..12]`;
//! tpgate asks for neither length masking nor global padding, so lengths are plain.
//! Deliberately absent: the legacy (non-AEAD) header, Mux, and the response commands.

use md5::{Digest as _, Md5};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::{digest, hmac};
use thiserror::Error;

use super::vless::Uuid;
use crate::net::Destination;

/// The body cipher (`cipher:` in mihomo; `auto` is AES-128-GCM, as on x86 servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Aes128Gcm,
    Chacha20Poly1305,
    /// Chunked but unencrypted: only for an outer TLS.
    None,
}

impl Security {
    const fn code(self) -> u8 {
        match self {
            Self::Aes128Gcm => 3,
            Self::Chacha20Poly1305 => 4,
            Self::None => 5,
        }
    }
}

/// What the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Tcp,
    Udp,
}

/// The per-connection secrets the caller draws at random.
#[derive(Debug, Clone, Copy)]
pub struct Randomness {
    pub body_key: [u8; 16],
    pub body_iv: [u8; 16],
    /// The byte the server must echo in its response header.
    pub response_auth: u8,
    pub auth_nonce: [u8; 4],
    pub connection_nonce: [u8; 8],
    /// 0..=15 bytes of header padding.
    pub padding: [u8; 15],
    pub padding_len: u8,
}

/// Why a VMess frame cannot be written or read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VmessError {
    #[error("domain name is empty or longer than 255 bytes")]
    Domain,
    #[error("chunk of {0} bytes exceeds the 16-bit length")]
    ChunkTooLong(usize),
    /// The response header or a chunk did not authenticate: a wrong uuid, or tampering.
    #[error("authentication failed")]
    Open,
    /// The server did not echo the response byte it was given.
    #[error("response header does not match the request")]
    ResponseMismatch,
    /// A chunk shorter than its tag.
    #[error("chunk of {0} bytes is shorter than its tag")]
    ShortChunk(usize),
}

/// `MD5(uuid | magic)`: the key the auth id and the header are sealed with.
pub fn cmd_key(uuid: &Uuid) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(uuid.0);
    h.update(b"c48619fe-8f02-49e0-b9e9-edf763e17e21");
    h.finalize().into()
}

/// The KDF: HMAC whose hash is HMAC keyed by the previous path element, down to
/// HMAC-SHA256 keyed "VMess AEAD KDF"; the last element is the outermost.
pub fn kdf(key: &[u8], path: &[&[u8]]) -> [u8; 32] {
    nested(path, key)
}

fn nested(path: &[&[u8]], msg: &[u8]) -> [u8; 32] {
    let Some((last, inner)) = path.split_last() else {
        let k = hmac::Key::new(hmac::HMAC_SHA256, b"VMess AEAD KDF");
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&k, msg).as_ref());
        return out;
    };
    // HMAC over a hash with a 64-byte block; every path element is shorter than that.
    let mut k = [0u8; 64];
    let n = last.len().min(64);
    k[..n].copy_from_slice(&last[..n]);
    let mut ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    ipad.extend_from_slice(msg);
    let inner_hash = nested(inner, &ipad);
    let mut opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    opad.extend_from_slice(&inner_hash);
    nested(inner, &opad)
}

fn kdf16(key: &[u8], path: &[&[u8]]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&kdf(key, path)[..16]);
    out
}

fn kdf12(key: &[u8], path: &[&[u8]]) -> [u8; 12] {
    let mut out = [0u8; 12];
    out.copy_from_slice(&kdf(key, path)[..12]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5, |h: u32, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// `time | nonce | crc32`, encrypted with AES-128 under a key derived from `cmd_key`.
pub fn auth_id(cmd_key: &[u8; 16], unix_time: u64, nonce: [u8; 4]) -> [u8; 16] {
    use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
    let mut block = [0u8; 16];
    block[..8].copy_from_slice(&unix_time.to_be_bytes());
    block[8..12].copy_from_slice(&nonce);
    let crc = crc32(&block[..12]);
    block[12..].copy_from_slice(&crc.to_be_bytes());
    let aes = aes::Aes128::new(&Array::from(kdf16(cmd_key, &[b"AES Auth ID Encryption"])));
    let mut b = Array::from(block);
    aes.encrypt_block(&mut b);
    b.into()
}

fn seal(
    key: &[u8],
    algo: &'static aead::Algorithm,
    nonce: [u8; 12],
    aad: &[u8],
    data: &mut Vec<u8>,
) {
    // Keys are always of the algorithm's length here: 16 for AES-128-GCM, 32 for ChaCha.
    if let Ok(k) = UnboundKey::new(algo, key) {
        let k = LessSafeKey::new(k);
        let _ =
            k.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data);
    }
}

fn open<'a>(
    key: &[u8],
    algo: &'static aead::Algorithm,
    nonce: [u8; 12],
    data: &'a mut [u8],
) -> Result<&'a mut [u8], VmessError> {
    let k = UnboundKey::new(algo, key).map_err(|_| VmessError::Open)?;
    LessSafeKey::new(k)
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), data)
        .map_err(|_| VmessError::Open)
}

/// Appends the whole request: the sealed header, ready for body chunks to follow.
pub fn encode_request(
    uuid: &Uuid,
    security: Security,
    cmd: Command,
    dst: &Destination,
    rand: &Randomness,
    unix_time: u64,
    out: &mut Vec<u8>,
) -> Result<(), VmessError> {
    let mut h = Vec::with_capacity(96);
    h.push(1);
    h.extend_from_slice(&rand.body_iv);
    h.extend_from_slice(&rand.body_key);
    h.push(rand.response_auth);
    h.push(0x01); // chunk stream, no masking, no padding
    let pad = rand.padding_len.min(15);
    h.push(pad << 4 | security.code());
    h.push(0);
    h.push(match cmd {
        Command::Tcp => 1,
        Command::Udp => 2,
    });
    h.extend_from_slice(&dst.port().to_be_bytes());
    match dst {
        Destination::Addr(std::net::SocketAddr::V4(a)) => {
            h.push(1);
            h.extend_from_slice(&a.ip().octets());
        }
        Destination::Addr(std::net::SocketAddr::V6(a)) => {
            h.push(3);
            h.extend_from_slice(&a.ip().octets());
        }
        Destination::Domain(name, _) => {
            let len = u8::try_from(name.len()).map_err(|_| VmessError::Domain)?;
            if len == 0 {
                return Err(VmessError::Domain);
            }
            h.push(2);
            h.push(len);
            h.extend_from_slice(name.as_bytes());
        }
    }
    h.extend_from_slice(&rand.padding[..usize::from(pad)]);
    let f = fnv1a(&h);
    h.extend_from_slice(&f.to_be_bytes());

    let key = cmd_key(uuid);
    let id = auth_id(&key, unix_time, rand.auth_nonce);
    let cn = rand.connection_nonce;
    let path = |salt: &'static [u8]| [salt, &id[..], &cn[..]];
    let mut len = u16::try_from(h.len())
        .map_err(|_| VmessError::ChunkTooLong(h.len()))?
        .to_be_bytes()
        .to_vec();
    seal(
        &kdf16(&key, &path(b"VMess Header AEAD Key_Length")),
        &aead::AES_128_GCM,
        kdf12(&key, &path(b"VMess Header AEAD Nonce_Length")),
        &id,
        &mut len,
    );
    seal(
        &kdf16(&key, &path(b"VMess Header AEAD Key")),
        &aead::AES_128_GCM,
        kdf12(&key, &path(b"VMess Header AEAD Nonce")),
        &id,
        &mut h,
    );
    out.extend_from_slice(&id);
    out.extend_from_slice(&len);
    out.extend_from_slice(&cn);
    out.extend_from_slice(&h);
    Ok(())
}

/// One direction of the body: its cipher, key, IV and chunk count.
#[derive(Debug)]
pub struct BodyCipher {
    security: Security,
    key: Vec<u8>,
    iv: [u8; 16],
    count: u16,
}

impl BodyCipher {
    fn new(security: Security, key: [u8; 16], iv: [u8; 16]) -> Self {
        let key = match security {
            Security::Chacha20Poly1305 => {
                let a: [u8; 16] = Md5::digest(key).into();
                let b: [u8; 16] = Md5::digest(a).into();
                [a, b].concat()
            }
            _ => key.to_vec(),
        };
        Self {
            security,
            key,
            iv,
            count: 0,
        }
    }

    /// The client's sending side.
    pub fn request(security: Security, rand: &Randomness) -> Self {
        Self::new(security, rand.body_key, rand.body_iv)
    }

    /// The client's receiving side: key and IV are SHA-256 of the request's, cut to 16.
    pub fn response(security: Security, rand: &Randomness) -> Self {
        let (key, iv) = response_key_iv(rand);
        Self::new(security, key, iv)
    }

    fn algo(&self) -> Option<&'static aead::Algorithm> {
        match self.security {
            Security::Aes128Gcm => Some(&aead::AES_128_GCM),
            Security::Chacha20Poly1305 => Some(&aead::CHACHA20_POLY1305),
            Security::None => None,
        }
    }

    fn next_nonce(&mut self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..2].copy_from_slice(&self.count.to_be_bytes());
        n[2..].copy_from_slice(&self.iv[2..12]);
        self.count = self.count.wrapping_add(1);
        n
    }

    /// Bytes a chunk adds to its payload (length field and tag).
    pub fn overhead(&self) -> usize {
        2 + if self.algo().is_some() { 16 } else { 0 }
    }

    /// Appends one chunk carrying `payload`; an empty payload ends the stream.
    pub fn seal_chunk(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), VmessError> {
        let len = payload.len() + self.overhead() - 2;
        let len16 = u16::try_from(len).map_err(|_| VmessError::ChunkTooLong(len))?;
        out.extend_from_slice(&len16.to_be_bytes());
        let mut data = payload.to_vec();
        let nonce = self.next_nonce();
        if let Some(algo) = self.algo() {
            seal(&self.key, algo, nonce, &[], &mut data);
        }
        out.extend_from_slice(&data);
        Ok(())
    }

    /// Reads one chunk from the start of `buf`: `Ok(None)` until all of it has arrived,
    /// then its payload (decrypted in place) and how many bytes it took. An empty payload
    /// is the end of the stream.
    pub fn open_chunk<'a>(
        &mut self,
        buf: &'a mut [u8],
    ) -> Result<Option<(&'a [u8], usize)>, VmessError> {
        let &[hi, lo, ..] = &*buf else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let Some(data) = buf.get_mut(2..2 + len) else {
            return Ok(None);
        };
        let nonce = self.next_nonce();
        let payload: &[u8] = match self.algo() {
            Some(_) if len < 16 => return Err(VmessError::ShortChunk(len)),
            Some(algo) => open(&self.key, algo, nonce, data)?,
            None => data,
        };
        Ok(Some((payload, 2 + len)))
    }
}

fn response_key_iv(rand: &Randomness) -> ([u8; 16], [u8; 16]) {
    let cut = |d: digest::Digest| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&d.as_ref()[..16]);
        o
    };
    (
        cut(digest::digest(&digest::SHA256, &rand.body_key)),
        cut(digest::digest(&digest::SHA256, &rand.body_iv)),
    )
}

/// Reads the sealed response header from the start of `buf`: `Ok(None)` until all of it
/// has arrived, then how many bytes it took; what follows is the first response chunk.
pub fn parse_response(rand: &Randomness, buf: &[u8]) -> Result<Option<usize>, VmessError> {
    let (key, iv) = response_key_iv(rand);
    let Some(len) = buf.get(..18) else {
        return Ok(None);
    };
    let mut len = len.to_vec();
    let plain = open(
        &kdf16(&key, &[b"AEAD Resp Header Len Key"]),
        &aead::AES_128_GCM,
        kdf12(&iv, &[b"AEAD Resp Header Len IV"]),
        &mut len,
    )?;
    let &[hi, lo] = &*plain else {
        return Err(VmessError::Open);
    };
    let end = 18 + usize::from(u16::from_be_bytes([hi, lo])) + 16;
    let Some(header) = buf.get(18..end) else {
        return Ok(None);
    };
    let mut header = header.to_vec();
    let plain = open(
        &kdf16(&key, &[b"AEAD Resp Header Key"]),
        &aead::AES_128_GCM,
        kdf12(&iv, &[b"AEAD Resp Header IV"]),
        &mut header,
    )?;
    if plain.first() != Some(&rand.response_auth) {
        return Err(VmessError::ResponseMismatch);
    }
    Ok(Some(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    }

    #[test]
    fn kdf_is_nested_hmac() {
        // No path: plain HMAC-SHA256 keyed "VMess AEAD KDF".
        let k = hmac::Key::new(hmac::HMAC_SHA256, b"VMess AEAD KDF");
        assert_eq!(kdf(b"x", &[]), hmac::sign(&k, b"x").as_ref());
        // One level is HMAC over that hash: inner and outer pads with the element as key.
        let one = kdf(b"x", &[b"p"]);
        let mut k64 = [0u8; 64];
        k64[0] = b'p';
        let mut i: Vec<u8> = k64.iter().map(|b| b ^ 0x36).collect();
        i.extend_from_slice(b"x");
        let mut o: Vec<u8> = k64.iter().map(|b| b ^ 0x5c).collect();
        o.extend_from_slice(&kdf(&i, &[]));
        assert_eq!(one, kdf(&o, &[]));
        assert_ne!(kdf(b"x", &[b"p", b"q"]), kdf(b"x", &[b"q", b"p"]));
    }

    #[test]
    fn chunks_round_trip() {
        let rand = Randomness {
            body_key: [7; 16],
            body_iv: [9; 16],
            response_auth: 0,
            auth_nonce: [0; 4],
            connection_nonce: [0; 8],
            padding: [0; 15],
            padding_len: 0,
        };
        for sec in [
            Security::Aes128Gcm,
            Security::Chacha20Poly1305,
            Security::None,
        ] {
            let mut tx = BodyCipher::request(sec, &rand);
            let mut rx = BodyCipher::request(sec, &rand);
            let mut wire = Vec::new();
            tx.seal_chunk(b"hello", &mut wire).unwrap();
            tx.seal_chunk(b"world!", &mut wire).unwrap();
            assert_eq!(rx.open_chunk(&mut wire[..3]), Ok(None));
            let (p, used) = rx.open_chunk(&mut wire).unwrap().unwrap();
            assert_eq!(p, b"hello");
            let mut rest = wire[used..].to_vec();
            let (p, used2) = rx.open_chunk(&mut rest).unwrap().unwrap();
            assert_eq!((p, used + used2), (&b"world!"[..], wire.len()));
            if sec != Security::None {
                let mut again = wire.clone();
                let mut fresh = BodyCipher::request(sec, &rand);
                again[5] ^= 1;
                assert_eq!(fresh.open_chunk(&mut again), Err(VmessError::Open));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn hostile_bytes_never_panic(buf in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let rand = Randomness {
                body_key: [1; 16],
                body_iv: [2; 16],
                response_auth: 3,
                auth_nonce: [0; 4],
                connection_nonce: [0; 8],
                padding: [0; 15],
                padding_len: 0,
            };
            if let Ok(Some(used)) = parse_response(&rand, &buf) {
                proptest::prop_assert!(used <= buf.len());
            }
            for sec in [Security::None, Security::Aes128Gcm, Security::Chacha20Poly1305] {
                let mut rx = BodyCipher::response(sec, &rand);
                let mut rest = buf.clone();
                while let Ok(Some((payload, used))) = rx.open_chunk(&mut rest) {
                    proptest::prop_assert!(used >= 2 + payload.len() && used <= rest.len());
                    rest.drain(..used);
                }
            }
        }
    }

    #[test]
    fn auth_id_carries_a_checksum() {
        let key = cmd_key(&Uuid([1; 16]));
        let a = auth_id(&key, 1_700_000_000, [1, 2, 3, 4]);
        assert_ne!(a, auth_id(&key, 1_700_000_001, [1, 2, 3, 4]));
        assert_eq!(a, auth_id(&key, 1_700_000_000, [1, 2, 3, 4]));
    }
}
