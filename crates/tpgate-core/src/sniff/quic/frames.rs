//! The frames a client may put in its Initial packets (RFC 9000 §12.4, §17.2.2): PADDING,
//! PING, ACK, CRYPTO and CONNECTION_CLOSE. Only CRYPTO carries what the sniffer wants; the
//! others are skipped, and any other frame ends the packet (it would be a protocol violation).

/// Why frame parsing stopped before the end of a packet.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FrameError {
    /// The client closes the connection: nothing more will come.
    Closed,
    /// A truncated frame or one not allowed in Initial packets.
    Malformed,
}

/// Calls `crypto(offset, data)` for each CRYPTO frame of a decrypted Initial payload, in
/// packet order; stops at the first error `crypto` returns.
pub(super) fn crypto_frames<'p, E>(
    payload: &'p [u8],
    mut crypto: impl FnMut(u64, &'p [u8]) -> Result<(), E>,
) -> Result<Result<(), FrameError>, E> {
    let mut r = Reader(payload);
    while let Some(kind) = r.varint() {
        let parsed = match kind {
            0x00 => {
                // Padding comes in long runs: skip them at once.
                let run = r.0.iter().take_while(|&&b| b == 0).count();
                r.0 = &r.0[run..];
                Some(())
            }
            0x01 => Some(()),
            0x02 | 0x03 => skip_ack(&mut r, kind == 0x03),
            0x06 => match crypto_frame(&mut r) {
                Some((offset, data)) => {
                    crypto(offset, data)?;
                    Some(())
                }
                None => None,
            },
            0x1c => return Ok(Err(FrameError::Closed)),
            _ => None,
        };
        if parsed.is_none() {
            return Ok(Err(FrameError::Malformed));
        }
    }
    if r.0.is_empty() {
        Ok(Ok(()))
    } else {
        Ok(Err(FrameError::Malformed))
    }
}

fn crypto_frame<'p>(r: &mut Reader<'p>) -> Option<(u64, &'p [u8])> {
    let offset = r.varint()?;
    let len = usize::try_from(r.varint()?).ok()?;
    Some((offset, r.take(len)?))
}

fn skip_ack(r: &mut Reader<'_>, ecn: bool) -> Option<()> {
    r.varint()?; // largest acknowledged
    r.varint()?; // ack delay
    let ranges = r.varint()?;
    r.varint()?; // first range
                 // Each further range is two varints of at least one byte: a count larger than what is
                 // left is malformed, and checking it first bounds the loop by the payload size.
    if ranges > (r.0.len() / 2) as u64 {
        return None;
    }
    for _ in 0..ranges {
        r.varint()?; // gap
        r.varint()?; // range length
    }
    if ecn {
        for _ in 0..3 {
            r.varint()?;
        }
    }
    Some(())
}

/// A cursor over a decrypted payload; `None` means truncated.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A variable-length integer (RFC 9000 §16).
    pub(super) fn varint(&mut self) -> Option<u64> {
        let first = *self.0.first()?;
        let len = 1usize << (first >> 6);
        let bytes = self.take(len)?;
        let mut value = u64::from(first & 0x3f);
        for &b in &bytes[1..] {
            value = value << 8 | u64::from(b);
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Collected = (Vec<(u64, Vec<u8>)>, Result<(), FrameError>);

    fn collect(payload: &[u8]) -> Collected {
        let mut out = Vec::new();
        let end = crypto_frames(payload, |offset, data| {
            out.push((offset, data.to_vec()));
            Ok::<(), ()>(())
        })
        .unwrap();
        (out, end)
    }

    #[test]
    fn varints_of_every_length() {
        // RFC 9000 §A.1 examples.
        for (bytes, value) in [
            (&[0x25][..], 37),
            (&[0x40, 0x25], 37),
            (&[0x7b, 0xbd], 15_293),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
        ] {
            assert_eq!(Reader(bytes).varint(), Some(value));
        }
        assert_eq!(Reader(&[0x9d, 0x7f]).varint(), None);
    }

    #[test]
    fn crypto_frames_among_padding_ping_and_acks() {
        let payload = [
            0x01, // PING
            0x06, 0x05, 0x03, b'a', b'b', b'c', // CRYPTO offset 5
            0x00, 0x00, 0x00, // PADDING
            0x02, 0x07, 0x00, 0x01, 0x02, 0x01, 0x01, 0x00, 0x00, // ACK with one extra range
            0x03, 0x01, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, // ACK_ECN
            0x06, 0x00, 0x02, b'x', b'y', // CRYPTO offset 0
            0x00,
        ];
        let (frames, end) = collect(&payload);
        assert_eq!(frames, vec![(5, b"abc".to_vec()), (0, b"xy".to_vec())]);
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn close_truncation_and_foreign_frames_stop_parsing() {
        assert_eq!(
            collect(&[0x06, 0x00, 0x01, b'a', 0x1c, 0x00]).1,
            Err(FrameError::Closed)
        );
        assert_eq!(
            collect(&[0x06, 0x00, 0x05, b'a']).1,
            Err(FrameError::Malformed)
        );
        assert_eq!(collect(&[0x08, 0x00]).1, Err(FrameError::Malformed)); // STREAM
        assert_eq!(
            collect(&[0x02, 0x00, 0x00, 0x3f, 0x00]).1,
            Err(FrameError::Malformed)
        );
    }
}
