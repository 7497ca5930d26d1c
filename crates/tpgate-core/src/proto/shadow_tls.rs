//! ShadowTLS version 2, client side (sing-shadowtls's `v2_client`, which mihomo uses): the
//! client completes a real TLS handshake with the handshake server the ShadowTLS server
//! relays to, hashing every byte it reads with HMAC-SHA1 keyed by the password; its first
//! application-data record opens with the first 8 bytes of that MAC, which is how the
//! server tells its client from a prober and switches to its backend. From then on the
//! stream travels as plain application-data records (type 23, TLS 1.2 header) both ways:
//! the bytes inside are the Shadowsocks stream, not TLS ciphertext. The TLS handshake
//! itself is rustls's, in the daemon.

use ring::hmac;

pub mod v3;

use super::obfs::{record_header, RecordError, MAX_RECORD};

/// Bytes of the MAC that open the first record.
pub const MAC_LEN: usize = 8;
/// Most data the first record carries after the MAC.
pub const MAX_FIRST_DATA: usize = MAX_RECORD - MAC_LEN;

const APPLICATION_DATA: u8 = 0x17;
const ALERT: u8 = 0x15;

/// HMAC-SHA1 over everything the handshake server sent, as the client read it.
#[derive(Clone)]
pub struct HandshakeMac(hmac::Context);

impl std::fmt::Debug for HandshakeMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandshakeMac(..)")
    }
}

impl HandshakeMac {
    pub fn new(password: &str) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
        Self(hmac::Context::with_key(&key))
    }

    pub fn update(&mut self, read: &[u8]) {
        self.0.update(read);
    }

    /// The first [`MAC_LEN`] bytes of the MAC over what was read so far.
    pub fn sum(&self) -> [u8; MAC_LEN] {
        let tag = self.0.clone().sign();
        let mut out = [0; MAC_LEN];
        out.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
        out
    }
}

/// Appends the first record: the MAC, then `data` (at most [`MAX_FIRST_DATA`]).
pub fn encode_first(mac: &[u8; MAC_LEN], data: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let len = u16::try_from(MAC_LEN + data.len())
        .ok()
        .filter(|_| data.len() <= MAX_FIRST_DATA)?;
    out.extend_from_slice(&[APPLICATION_DATA, 0x03, 0x03]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(mac);
    out.extend_from_slice(data);
    Some(())
}

/// The length of the data record at the start of `buf` (its [`RECORD_HEADER`] bytes come
/// first); `Ok(None)` until the header has arrived. Anything but application data is an
/// error: an alert is what the handshake server says to a client the ShadowTLS server did
/// not recognise (a wrong password).
pub fn data_record(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    let Some(h) = record_header(buf)? else {
        return Ok(None);
    };
    match h.kind {
        APPLICATION_DATA => Ok(Some(h.len)),
        ALERT => Err(RecordError::Alert),
        kind => Err(RecordError::Unexpected {
            kind,
            during: "after the handshake",
        }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::obfs::RECORD_HEADER;

    #[test]
    fn mac_is_hmac_sha1_truncated() {
        // RFC 2202 test case 2: key "Jefe", "what do ya want for nothing?".
        let mut m = HandshakeMac::new("Jefe");
        m.update(b"what do ya ");
        m.update(b"want for nothing?");
        assert_eq!(m.sum(), [0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2]);
        // Taking the sum does not end the MAC.
        assert_eq!(m.sum(), [0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2]);
    }

    #[test]
    fn first_record_and_data_records() {
        let mut out = Vec::new();
        encode_first(&[1; 8], b"abc", &mut out).unwrap();
        assert_eq!(
            out,
            [0x17, 3, 3, 0, 11, 1, 1, 1, 1, 1, 1, 1, 1, b'a', b'b', b'c']
        );
        assert_eq!(data_record(&out), Ok(Some(11)));
        assert!(encode_first(&[0; 8], &vec![0; MAX_FIRST_DATA + 1], &mut out).is_none());
        assert_eq!(data_record(&[0x17, 3, 3]), Ok(None));
        assert_eq!(data_record(&[0x15, 3, 3, 0, 2]), Err(RecordError::Alert));
        assert!(data_record(&[0x16, 3, 3, 0, 2]).is_err());
    }

    proptest! {
        #[test]
        fn any_first_data_round_trips(data in proptest::collection::vec(any::<u8>(), 0..MAX_FIRST_DATA)) {
            let mut out = Vec::new();
            encode_first(&[7; 8], &data, &mut out).unwrap();
            prop_assert_eq!(data_record(&out), Ok(Some(MAC_LEN + data.len())));
            prop_assert_eq!(&out[RECORD_HEADER + MAC_LEN..], &data[..]);
        }

        #[test]
        fn arbitrary_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
            if let Ok(Some(len)) = data_record(&bytes) {
                prop_assert!(len <= MAX_RECORD + 256);
            }
        }
    }
}
