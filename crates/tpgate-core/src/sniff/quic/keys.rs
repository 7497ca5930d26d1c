//! Client Initial packet protection of QUIC v1 (RFC 9001 §5.2) and v2 (RFC 9369 §3.3): keys
//! derived from the client's Destination Connection ID and a public salt, so anyone on the
//! path can remove them. Only the client direction and only opening (tests also seal).

use ring::aead::quic::{HeaderProtectionKey, AES_128};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::hkdf;

/// The QUIC versions whose Initial packets can be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V1,
    V2,
}

/// Long header packet types, decoded per version (RFC 9369 §3.2 permutes the bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PacketType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
}

impl Version {
    pub(super) fn from_wire(version: u32) -> Option<Self> {
        match version {
            0x0000_0001 => Some(Self::V1),
            0x6b33_43cf => Some(Self::V2),
            _ => None,
        }
    }

    /// The type of a long header packet from the two type bits of its first byte.
    pub(super) fn packet_type(self, first: u8) -> PacketType {
        let bits = (first >> 4) & 0x03;
        let bits = match self {
            Self::V1 => bits,
            // v2: Initial 0b01, 0-RTT 0b10, Handshake 0b11, Retry 0b00.
            Self::V2 => (bits + 3) & 0x03,
        };
        match bits {
            0 => PacketType::Initial,
            1 => PacketType::ZeroRtt,
            2 => PacketType::Handshake,
            _ => PacketType::Retry,
        }
    }

    fn salt(self) -> &'static [u8] {
        match self {
            Self::V1 => &[
                0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8,
                0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a,
            ],
            Self::V2 => &[
                0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26,
                0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9,
            ],
        }
    }

    /// HKDF labels for the packet protection key, IV and header protection key.
    fn labels(self) -> [&'static [u8]; 3] {
        match self {
            Self::V1 => [b"quic key", b"quic iv", b"quic hp"],
            Self::V2 => [b"quicv2 key", b"quicv2 iv", b"quicv2 hp"],
        }
    }
}

/// The raw client Initial secrets, kept apart from the ring keys so tests can compare them
/// with the RFC vectors.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Secrets {
    pub(super) client_initial: [u8; 32],
    pub(super) key: [u8; 16],
    pub(super) iv: [u8; 12],
    pub(super) hp: [u8; 16],
}

impl Secrets {
    pub(super) fn client(version: Version, dcid: &[u8]) -> Option<Self> {
        let initial = hkdf::Salt::new(hkdf::HKDF_SHA256, version.salt()).extract(dcid);
        let mut client_initial = [0; 32];
        expand_label(&initial, b"client in", &mut client_initial)?;
        let client = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &client_initial);
        let [key_label, iv_label, hp_label] = version.labels();
        let mut secrets = Self {
            client_initial,
            key: [0; 16],
            iv: [0; 12],
            hp: [0; 16],
        };
        expand_label(&client, key_label, &mut secrets.key)?;
        expand_label(&client, iv_label, &mut secrets.iv)?;
        expand_label(&client, hp_label, &mut secrets.hp)?;
        Some(secrets)
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context, as QUIC uses it.
fn expand_label(prk: &hkdf::Prk, label: &[u8], out: &mut [u8]) -> Option<()> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let out_len = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(b"tls13 ".len() + label.len()).ok()?];
    let info: [&[u8]; 5] = [&out_len, &label_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len())).ok()?.fill(out).ok()
}

/// Ready-to-use client Initial keys of one connection ID and version.
pub(super) struct InitialKeys {
    aead: LessSafeKey,
    iv: [u8; 12],
    hp: HeaderProtectionKey,
}

impl InitialKeys {
    pub(super) fn client(version: Version, dcid: &[u8]) -> Option<Self> {
        let secrets = Secrets::client(version, dcid)?;
        Some(Self {
            aead: LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &secrets.key).ok()?),
            iv: secrets.iv,
            hp: HeaderProtectionKey::new(&AES_128, &secrets.hp).ok()?,
        })
    }

    /// The header protection mask for a 16-byte ciphertext sample (RFC 9001 §5.4.3).
    pub(super) fn mask(&self, sample: &[u8]) -> Option<[u8; 5]> {
        self.hp.new_mask(sample).ok()
    }

    /// Decrypts `payload` (ciphertext and tag) in place with `header` as associated data and
    /// returns the plaintext; `None` when it does not authenticate.
    pub(super) fn open<'p>(
        &self,
        pn: u64,
        header: &[u8],
        payload: &'p mut [u8],
    ) -> Option<&'p [u8]> {
        let plain = self
            .aead
            .open_in_place(self.nonce(pn), Aad::from(header), payload)
            .ok()?;
        Some(plain)
    }

    /// Encrypts `payload` in place, appending the tag. Only tests build packets.
    #[cfg(test)]
    pub(super) fn seal(&self, pn: u64, header: &[u8], payload: &mut Vec<u8>) {
        self.aead
            .seal_in_place_append_tag(self.nonce(pn), Aad::from(header), payload)
            .expect("AES-GCM seals any test-sized payload");
    }

    /// The per-packet nonce: the IV with the packet number XORed into its low bytes.
    fn nonce(&self, pn: u64) -> Nonce {
        let mut nonce = self.iv;
        for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= p;
        }
        Nonce::assume_unique_for_key(nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sniff::quic::tests::unhex;

    const RFC_DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

    fn secrets(initial: &str, key: &str, iv: &str, hp: &str) -> Secrets {
        Secrets {
            client_initial: unhex(initial).try_into().unwrap(),
            key: unhex(key).try_into().unwrap(),
            iv: unhex(iv).try_into().unwrap(),
            hp: unhex(hp).try_into().unwrap(),
        }
    }

    #[test]
    fn rfc9001_appendix_a1_client_keys() {
        let expected = secrets(
            "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea",
            "1f369613dd76d5467730efcbe3b1a22d",
            "fa044b2f42a3fd3b46fb255c",
            "9f50449e04a0e810283a1e9933adedd2",
        );
        assert_eq!(Secrets::client(Version::V1, &RFC_DCID), Some(expected));
    }

    #[test]
    fn rfc9369_appendix_a1_client_keys() {
        let expected = secrets(
            "14ec9d6eb9fd7af83bf5a668bc17a7e283766aade7ecd0891f70f9ff7f4bf47b",
            "8b1a0bc121284290a29e0971b5cd045d",
            "91f73e2351d8fa91660e909f",
            "45b95e15235d6f45a6b19cbcb0294ba9",
        );
        assert_eq!(Secrets::client(Version::V2, &RFC_DCID), Some(expected));
    }

    #[test]
    fn rfc_appendix_a2_header_protection_masks() {
        let v1 = InitialKeys::client(Version::V1, &RFC_DCID).unwrap();
        let mask = v1.mask(&unhex("d1b1c98dd7689fb8ec11d242b123dc9b")).unwrap();
        assert_eq!(mask.to_vec(), unhex("437b9aec36"));
        let v2 = InitialKeys::client(Version::V2, &RFC_DCID).unwrap();
        let mask = v2.mask(&unhex("ffe67b6abcdb4298b485dd04de806071")).unwrap();
        assert_eq!(mask.to_vec(), unhex("94a0c95e80"));
    }

    #[test]
    fn packet_types_follow_each_version() {
        assert_eq!(Version::V1.packet_type(0xc3), PacketType::Initial);
        assert_eq!(Version::V1.packet_type(0xd0), PacketType::ZeroRtt);
        assert_eq!(Version::V1.packet_type(0xe0), PacketType::Handshake);
        assert_eq!(Version::V1.packet_type(0xf0), PacketType::Retry);
        assert_eq!(Version::V2.packet_type(0xd3), PacketType::Initial);
        assert_eq!(Version::V2.packet_type(0xe0), PacketType::ZeroRtt);
        assert_eq!(Version::V2.packet_type(0xf0), PacketType::Handshake);
        assert_eq!(Version::V2.packet_type(0xc0), PacketType::Retry);
    }
}
