//! SNI of a QUIC client (v1, RFC 9000/9001, and v2, RFC 9369): its Initial packets are
//! protected only with keys anyone can derive from the packet itself, and carry the TLS
//! ClientHello in CRYPTO frames, possibly spread over several packets and datagrams, out of
//! order and interleaved with padding and pings.
//!
//! Deliberately absent: anything past the client's Initials (Handshake and 1-RTT packets are
//! unreadable without the TLS secrets), Retry handling beyond accepting the new connection
//! ID, and draft versions.

mod crypto_stream;
mod frames;
mod keys;
mod packet;

use self::crypto_stream::CryptoStream;
use self::frames::{crypto_frames, FrameError};
use self::keys::{InitialKeys, PacketType, Version};
use self::packet::{long_packet, HeaderError, LongPacket};
use super::client_hello::sniff_handshake;
use super::Sniffed;

/// Datagrams looked at before giving up: a ClientHello fits in two or three 1200-byte
/// Initials even with post-quantum key shares; the rest is slack for reordering and
/// retransmissions.
pub const MAX_DATAGRAMS: usize = 16;
/// Initial keys kept at once: the client's original connection ID, plus the few it may
/// switch to (after a Retry, or a compatible version change).
const MAX_KEYS: usize = 4;

/// Follows the client→server datagrams of one UDP flow until their Initial packets reveal
/// the ClientHello's SNI. Feed datagrams in arrival order with [`QuicSniffer::push`].
pub struct QuicSniffer {
    /// The final verdict once reached; later datagrams do not change it.
    done: Option<Sniffed>,
    /// Datagrams pushed so far, to give up after [`MAX_DATAGRAMS`].
    datagrams: usize,
    /// Destination Connection ID of the client's first Initial: its keys open every later
    /// client Initial unless a Retry changed the connection ID.
    original: Option<Vec<u8>>,
    /// Derived keys by version and connection ID, so each is derived once.
    keys: Vec<(Version, Vec<u8>, InitialKeys)>,
    /// Largest packet number opened, to expand truncated packet numbers.
    largest_pn: Option<u64>,
    crypto: CryptoStream,
}

impl Default for QuicSniffer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for QuicSniffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicSniffer")
            .field("done", &self.done)
            .field("datagrams", &self.datagrams)
            .field("largest_pn", &self.largest_pn)
            .finish_non_exhaustive()
    }
}

/// What one packet contributed.
enum Step {
    Continue,
    Stop,
}

impl QuicSniffer {
    pub fn new() -> Self {
        Self {
            done: None,
            datagrams: 0,
            original: None,
            keys: Vec::new(),
            largest_pn: None,
            crypto: CryptoStream::default(),
        }
    }

    /// Takes the next client→server datagram of the flow. [`Sniffed::NeedMore`] until the
    /// ClientHello is complete; once a final verdict is returned, it is returned again for
    /// any later datagram.
    pub fn push(&mut self, datagram: &[u8]) -> Sniffed {
        if let Some(done) = &self.done {
            return done.clone();
        }
        self.datagrams += 1;
        let verdict = match self.absorb(datagram) {
            Step::Stop => Sniffed::NotThis,
            Step::Continue => match sniff_handshake(self.crypto.contiguous()) {
                Sniffed::NeedMore if self.datagrams >= MAX_DATAGRAMS => Sniffed::NotThis,
                verdict => verdict,
            },
        };
        if verdict != Sniffed::NeedMore {
            self.done = Some(verdict.clone());
        }
        verdict
    }

    /// Opens every client Initial packet coalesced in `datagram` and stores its CRYPTO data.
    fn absorb(&mut self, datagram: &[u8]) -> Step {
        let mut rest = datagram;
        while !rest.is_empty() {
            let packet = match long_packet(rest) {
                Ok(packet) => packet,
                // The first datagram of a QUIC flow starts with a client Initial of a version
                // the sniffer knows, or the flow is not something it can read.
                Err(_) if self.original.is_none() => return Step::Stop,
                // Later: short header packets and padding end the datagram; junk is skipped.
                Err(
                    HeaderError::NotLong | HeaderError::UnknownVersion | HeaderError::Malformed,
                ) => break,
            };
            rest = &rest[packet.bytes.len()..];
            if packet.kind != PacketType::Initial {
                if self.original.is_none() {
                    return Step::Stop;
                }
                continue;
            }
            match self.initial(&packet) {
                Some(Step::Stop) => return Step::Stop,
                Some(Step::Continue) => {}
                None if self.original.is_none() => return Step::Stop,
                None => {} // not for these keys (spoofed, or corrupted): ignore it
            }
        }
        if self.original.is_none() {
            return Step::Stop; // an empty first datagram
        }
        Step::Continue
    }

    /// Decrypts one Initial and feeds its CRYPTO frames; `None` when it does not open.
    fn initial(&mut self, packet: &LongPacket<'_>) -> Option<Step> {
        let dcid = match &self.original {
            Some(dcid) => dcid.clone(),
            None => packet.dcid.to_vec(),
        };
        // The original connection ID's keys first (with the packet's own version: a client
        // may move to v2 by compatible version negotiation), then the packet's own ID.
        let opened = self.open_with(packet, &dcid).or_else(|| {
            (packet.dcid != dcid)
                .then(|| self.open_with(packet, packet.dcid))
                .flatten()
        })?;
        if self.original.is_none() {
            self.original = Some(dcid);
        }
        self.largest_pn = Some(self.largest_pn.map_or(opened.pn, |l| l.max(opened.pn)));
        let crypto = &mut self.crypto;
        match crypto_frames(&opened.payload, |offset, data| crypto.insert(offset, data)) {
            Err(_too_much) => Some(Step::Stop),
            Ok(Err(FrameError::Closed)) => Some(Step::Stop),
            // CRYPTO data before the bad frame is kept: it authenticated.
            Ok(Err(FrameError::Malformed) | Ok(())) => Some(Step::Continue),
        }
    }

    fn open_with(&mut self, packet: &LongPacket<'_>, dcid: &[u8]) -> Option<packet::Opened> {
        let version = packet.version;
        let index = match self
            .keys
            .iter()
            .position(|(v, id, _)| *v == version && id == dcid)
        {
            Some(index) => index,
            None => {
                let keys = InitialKeys::client(version, dcid)?;
                if self.keys.len() >= MAX_KEYS {
                    // Keep the original's keys (slot 0); drop the oldest other.
                    self.keys.remove(1);
                }
                self.keys.push((version, dcid.to_vec(), keys));
                self.keys.len() - 1
            }
        };
        packet.open(&self.keys[index].2, self.largest_pn)
    }
}

#[cfg(test)]
pub(super) mod tests;
