//! Long header packets (RFC 9000 §17.2) of the versions the sniffer knows: where each packet
//! in a datagram ends, and how a client Initial loses its header protection (RFC 9001 §5.4)
//! and its AEAD protection.

use super::frames::Reader;
use super::keys::{InitialKeys, PacketType, Version};

/// Connection IDs are at most 20 bytes in QUIC v1 and v2.
const MAX_CID_LEN: usize = 20;
/// Header protection samples 16 bytes, starting 4 bytes after the packet number offset.
const SAMPLE_LEN: usize = 16;

/// A long header packet at the start of a datagram remainder.
#[derive(Debug)]
pub(super) struct LongPacket<'d> {
    pub(super) version: Version,
    pub(super) kind: PacketType,
    pub(super) dcid: &'d [u8],
    /// The whole packet, header and protected payload.
    pub(super) bytes: &'d [u8],
    /// Where the (protected) packet number starts.
    pn_offset: usize,
}

/// Why no long packet could be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeaderError {
    /// A short header packet or padding: nothing more in this datagram for the sniffer.
    NotLong,
    /// A version the sniffer cannot open.
    UnknownVersion,
    Malformed,
}

/// Reads the long header packet at the start of `datagram`; the bytes after
/// `packet.bytes.len()` are the next coalesced packet.
pub(super) fn long_packet(datagram: &[u8]) -> Result<LongPacket<'_>, HeaderError> {
    let mut r = Reader(datagram);
    let first = r.u8().ok_or(HeaderError::Malformed)?;
    if first & 0x80 == 0 {
        return Err(HeaderError::NotLong);
    }
    let wire_version = r.take(4).ok_or(HeaderError::Malformed)?;
    let wire_version = u32::from_be_bytes([
        wire_version[0],
        wire_version[1],
        wire_version[2],
        wire_version[3],
    ]);
    let version = Version::from_wire(wire_version).ok_or(HeaderError::UnknownVersion)?;
    let dcid = cid(&mut r)?;
    cid(&mut r)?; // source connection ID
    let kind = version.packet_type(first);
    match kind {
        PacketType::Retry => {
            // No length field: the rest of the datagram (clients never send these anyway).
            return Ok(LongPacket {
                version,
                kind,
                dcid,
                bytes: datagram,
                pn_offset: datagram.len(),
            });
        }
        PacketType::Initial => {
            let token_len = r.varint().ok_or(HeaderError::Malformed)?;
            let token_len = usize::try_from(token_len).map_err(|_| HeaderError::Malformed)?;
            r.take(token_len).ok_or(HeaderError::Malformed)?;
        }
        PacketType::ZeroRtt | PacketType::Handshake => {}
    }
    let len = r.varint().ok_or(HeaderError::Malformed)?;
    let len = usize::try_from(len).map_err(|_| HeaderError::Malformed)?;
    let pn_offset = datagram.len() - r.0.len();
    let end = pn_offset.checked_add(len).ok_or(HeaderError::Malformed)?;
    let bytes = datagram.get(..end).ok_or(HeaderError::Malformed)?;
    Ok(LongPacket {
        version,
        kind,
        dcid,
        bytes,
        pn_offset,
    })
}

fn cid<'d>(r: &mut Reader<'d>) -> Result<&'d [u8], HeaderError> {
    let len = usize::from(r.u8().ok_or(HeaderError::Malformed)?);
    if len > MAX_CID_LEN {
        return Err(HeaderError::Malformed);
    }
    r.take(len).ok_or(HeaderError::Malformed)
}

/// A decrypted Initial packet.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) pn: u64,
    pub(super) payload: Vec<u8>,
}

impl LongPacket<'_> {
    /// Removes header protection and decrypts this Initial packet with `keys`; `largest_pn`
    /// is the largest packet number opened so far, to rebuild the full packet number.
    /// `None` when the packet is too short or does not authenticate with these keys.
    pub(super) fn open(&self, keys: &InitialKeys, largest_pn: Option<u64>) -> Option<Opened> {
        let sample_at = self.pn_offset + 4;
        let sample = self.bytes.get(sample_at..sample_at + SAMPLE_LEN)?;
        let mask = keys.mask(sample)?;
        let mut packet = self.bytes.to_vec();
        packet[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(packet[0] & 0x03) + 1;
        let mut truncated = 0u64;
        for i in 0..pn_len {
            packet[self.pn_offset + i] ^= mask[1 + i];
            truncated = truncated << 8 | u64::from(packet[self.pn_offset + i]);
        }
        let pn = decode_packet_number(largest_pn, truncated, pn_len * 8);
        let (header, payload) = packet.split_at_mut(self.pn_offset + pn_len);
        let plain_len = keys.open(pn, header, payload)?.len();
        let mut payload = packet;
        payload.drain(..self.pn_offset + pn_len);
        payload.truncate(plain_len);
        Some(Opened { pn, payload })
    }
}

/// The full packet number closest to the next expected one (RFC 9000 §A.3).
fn decode_packet_number(largest: Option<u64>, truncated: u64, bits: usize) -> u64 {
    let expected = largest.map_or(0, |l| l.saturating_add(1));
    let win = 1u64 << bits;
    let half = win / 2;
    let mask = win - 1;
    let candidate = (expected & !mask) | truncated;
    if candidate.saturating_add(half) <= expected && candidate < (1 << 62) - win {
        candidate + win
    } else if candidate > expected.saturating_add(half) && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9000_packet_number_example() {
        // §A.3: largest 0xa82f30ea, truncated 0x9b32 over 16 bits.
        assert_eq!(
            decode_packet_number(Some(0xa82f_30ea), 0x9b32, 16),
            0xa82f_9b32
        );
        assert_eq!(decode_packet_number(None, 2, 32), 2);
        assert_eq!(decode_packet_number(Some(0xff), 0x01, 8), 0x101);
    }

    #[test]
    fn headers_that_are_not_for_the_sniffer() {
        assert_eq!(
            long_packet(&[0x40, 1, 2]).unwrap_err(),
            HeaderError::NotLong
        );
        assert_eq!(
            long_packet(&[0xc0, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            HeaderError::UnknownVersion
        );
        assert_eq!(
            long_packet(&[0xc0, 0, 0, 0, 1, 21]).unwrap_err(),
            HeaderError::Malformed
        );
        assert_eq!(
            long_packet(&[0xc0, 0, 0, 0, 1, 0, 0, 0, 0x10]).unwrap_err(),
            HeaderError::Malformed
        );
        assert_eq!(long_packet(&[0xc0]).unwrap_err(), HeaderError::Malformed);
    }
}
