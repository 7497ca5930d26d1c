//! ShadowTLS version 3, client side (ihciah/shadow-tls's protocol-v3 document and
//! sing-shadowtls's `v3_client`, which mihomo uses). The client's TLS 1.3 handshake goes
//! through the ShadowTLS server to a real handshake server:
//!
//! - The ClientHello's session id is 28 random bytes and the first 4 bytes of HMAC-SHA1
//!   (keyed by the password) over the hello message with those 4 bytes zero
//!   ([`session_id`]).
//! - A server that recognises the hello signs every application-data record the handshake
//!   server sends: the content XORed with SHA-256(password ‖ ServerRandom), prefixed by 4
//!   bytes of a running HMAC seeded with the ServerRandom ([`Handshake::unwrap`]). A record
//!   that is not signed means the server did not recognise the client.
//! - After the handshake both sides send application-data records of 4 bytes of running
//!   HMAC (seeded with ServerRandom and "C" from the client, "S" from the server; each
//!   HMAC is fed into its own chain after use) and the data ([`Writer`], [`Reader`]). The
//!   handshake server's last records (session tickets) may still arrive, signed the
//!   handshake's way: they are dropped. An alert ends the stream (servers close so).

use ring::{digest, hmac};

use super::super::obfs::{record_header, RecordError, MAX_RECORD, RECORD_HEADER};

/// Bytes of HMAC in the session id and at the head of each record.
pub const HMAC_LEN: usize = 4;
/// Most data one record carries.
pub const MAX_DATA: usize = MAX_RECORD;

const HANDSHAKE: u8 = 0x16;
const APPLICATION_DATA: u8 = 0x17;
const ALERT: u8 = 0x15;
const SERVER_HELLO: u8 = 2;
/// Where the session id starts in the hello *message* (type, length, version, random,
/// session id length).
const SESSION_ID_AT: usize = 1 + 3 + 2 + 32 + 1;

/// A running HMAC-SHA1 keyed by the password.
#[derive(Clone)]
struct Mac(hmac::Context);

impl Mac {
    fn new(password: &str, seed: &[&[u8]]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
        let mut c = hmac::Context::with_key(&key);
        for s in seed {
            c.update(s);
        }
        Self(c)
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The first [`HMAC_LEN`] bytes of the HMAC so far (the chain goes on).
    fn peek(&self) -> [u8; HMAC_LEN] {
        let tag = self.0.clone().sign();
        let mut out = [0; HMAC_LEN];
        out.copy_from_slice(&tag.as_ref()[..HMAC_LEN]);
        out
    }

    /// Whether `record` (an application-data record) opens with the HMAC of its content;
    /// the content is fed in either way, and with `chain` the HMAC too.
    fn verify(&mut self, record: &[u8], chain: bool) -> bool {
        if record.len() < RECORD_HEADER + HMAC_LEN || record[1..3] != [3, 3] {
            return false;
        }
        self.update(&record[RECORD_HEADER + HMAC_LEN..]);
        let want = self.peek();
        if chain {
            self.update(&want);
        }
        record[RECORD_HEADER..RECORD_HEADER + HMAC_LEN] == want
    }
}

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mac(..)")
    }
}

/// The session id for the ClientHello record `hello` (one whole record): `random`, then the
/// HMAC over the hello message with those 28 bytes and 4 zero bytes as its session id.
/// `None` when `hello` is too short to hold a 32-byte session id.
pub fn session_id(password: &str, hello: &[u8], random: &[u8; 28]) -> Option<[u8; 32]> {
    let message = hello.get(RECORD_HEADER..)?;
    let rest = message.get(SESSION_ID_AT + 32..)?;
    let mut id = [0u8; 32];
    id[..28].copy_from_slice(random);
    let mut mac = Mac::new(password, &[]);
    mac.update(&message[..SESSION_ID_AT]);
    mac.update(&id);
    mac.update(rest);
    id[28..].copy_from_slice(&mac.peek());
    Some(id)
}

/// The server's random, when `record` is a ServerHello record.
pub fn server_random(record: &[u8]) -> Option<[u8; 32]> {
    if record.first() != Some(&HANDSHAKE) || record.get(RECORD_HEADER) != Some(&SERVER_HELLO) {
        return None;
    }
    record.get(11..43)?.try_into().ok()
}

/// The server sent an application-data record during the handshake that it did not sign:
/// it did not recognise this client (a wrong password) and relays to the handshake server
/// untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the handshake server's records are not signed for this password")]
pub struct NotSigned;

/// The handshake after the ServerHello.
#[derive(Debug, Clone)]
pub struct Handshake {
    server_random: [u8; 32],
    mac: Mac,
    key: [u8; 32],
}

impl Handshake {
    pub fn new(password: &str, server_random: [u8; 32]) -> Self {
        let mut h = digest::Context::new(&digest::SHA256);
        h.update(password.as_bytes());
        h.update(&server_random);
        let key = h.finish().as_ref().try_into().expect("32 bytes");
        Self {
            server_random,
            mac: Mac::new(password, &[&server_random]),
            key,
        }
    }

    /// The application-data record `record` (whole) as the handshake server sent it: its
    /// HMAC checked and removed, its content XORed back.
    pub fn unwrap(&mut self, record: &[u8]) -> Result<Vec<u8>, NotSigned> {
        if !self.mac.verify(record, false) {
            return Err(NotSigned);
        }
        let content = &record[RECORD_HEADER + HMAC_LEN..];
        let len = u16::try_from(content.len()).map_err(|_| NotSigned)?;
        let mut out = Vec::with_capacity(RECORD_HEADER + content.len());
        out.extend_from_slice(&record[..3]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend(
            content
                .iter()
                .zip(self.key.iter().cycle())
                .map(|(b, k)| b ^ k),
        );
        Ok(out)
    }

    /// The two directions of the data that follows.
    pub fn into_data(self, password: &str) -> (Writer, Reader) {
        let sr = self.server_random;
        (
            Writer {
                mac: Mac::new(password, &[&sr, b"C"]),
            },
            Reader {
                mac: Mac::new(password, &[&sr, b"S"]),
                ignore: Some(self.mac),
            },
        )
    }
}

/// The client's data records.
#[derive(Debug, Clone)]
pub struct Writer {
    mac: Mac,
}

impl Writer {
    /// Appends one record carrying `data` (at most [`MAX_DATA`] bytes).
    pub fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let len = u16::try_from(HMAC_LEN + data.len())
            .ok()
            .filter(|_| data.len() <= MAX_DATA)?;
        self.mac.update(data);
        let tag = self.mac.peek();
        self.mac.update(&tag);
        out.extend_from_slice(&[APPLICATION_DATA, 3, 3]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&tag);
        out.extend_from_slice(data);
        Some(())
    }
}

/// The next piece of the server's data records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A whole record of this length left over from the handshake: drop it.
    Skip(usize),
    /// A record: drop `header` bytes, then `len` bytes of the stream.
    Data { header: usize, len: usize },
    /// An alert of `header` bytes: the server closes the stream (its way of ending it).
    End { header: usize },
}

/// The server's data records.
#[derive(Debug, Clone)]
pub struct Reader {
    mac: Mac,
    /// The handshake's chain, until the first record that is not the handshake's.
    ignore: Option<Mac>,
}

impl Reader {
    /// Reads the record at the start of `pending` once it is whole (`Ok(None)` before);
    /// checks it once, so call it again only past the record it returned.
    pub fn next(&mut self, pending: &[u8]) -> Result<Option<Next>, RecordError> {
        let Some(h) = record_header(pending)? else {
            return Ok(None);
        };
        let Some(record) = pending.get(..RECORD_HEADER + h.len) else {
            return Ok(None);
        };
        match h.kind {
            APPLICATION_DATA => {}
            ALERT => {
                return Ok(Some(Next::End {
                    header: record.len(),
                }))
            }
            kind => {
                return Err(RecordError::Unexpected {
                    kind,
                    during: "after the handshake",
                })
            }
        }
        if let Some(ignore) = &mut self.ignore {
            if ignore.verify(record, false) {
                return Ok(Some(Next::Skip(record.len())));
            }
            self.ignore = None;
        }
        if !self.mac.verify(record, true) {
            return Err(RecordError::BadMac);
        }
        Ok(Some(Next::Data {
            header: RECORD_HEADER + HMAC_LEN,
            len: h.len - HMAC_LEN,
        }))
    }
}

#[cfg(test)]
mod tests;
