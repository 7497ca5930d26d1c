//! Reassembly of the Initial CRYPTO stream from frames that may arrive in any order, repeat
//! or overlap (retransmissions, several packets, deliberate shuffling by some clients).

use std::ops::Range;

/// Highest stream offset buffered: far beyond any real ClientHello, small enough that a
/// hostile client cannot make the sniffer hold much.
pub(super) const MAX_CRYPTO_LEN: usize = 64 * 1024;
/// Most disjoint pieces tracked at once; real clients produce a handful.
const MAX_PIECES: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub(super) struct TooMuch;

#[derive(Debug, Default)]
pub(super) struct CryptoStream {
    /// Stream bytes by offset; holes are zero until filled.
    buf: Vec<u8>,
    /// The received offset ranges, sorted, disjoint and not adjacent.
    have: Vec<Range<usize>>,
}

impl CryptoStream {
    /// Stores `data` at `offset`; refuses data beyond [`MAX_CRYPTO_LEN`] or too fragmented.
    pub(super) fn insert(&mut self, offset: u64, data: &[u8]) -> Result<(), TooMuch> {
        let start = usize::try_from(offset).map_err(|_| TooMuch)?;
        let end = start.checked_add(data.len()).ok_or(TooMuch)?;
        if end > MAX_CRYPTO_LEN {
            return Err(TooMuch);
        }
        if data.is_empty() {
            return Ok(());
        }
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.buf[start..end].copy_from_slice(data);
        self.add_range(start..end);
        if self.have.len() > MAX_PIECES {
            return Err(TooMuch);
        }
        Ok(())
    }

    /// The bytes received without a gap from offset 0.
    pub(super) fn contiguous(&self) -> &[u8] {
        match self.have.first() {
            Some(first) if first.start == 0 => &self.buf[..first.end],
            _ => &[],
        }
    }

    fn add_range(&mut self, new: Range<usize>) {
        // Ranges overlapping or touching `new` merge into it.
        let first = self.have.partition_point(|r| r.end < new.start);
        let last = self.have.partition_point(|r| r.start <= new.end);
        let merged = if first < last {
            self.have[first].start.min(new.start)..self.have[last - 1].end.max(new.end)
        } else {
            new
        };
        self.have.splice(first..last, [merged]);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn out_of_order_pieces_join_up() {
        let mut s = CryptoStream::default();
        s.insert(6, b"world").unwrap();
        assert_eq!(s.contiguous(), b"");
        s.insert(0, b"hel").unwrap();
        assert_eq!(s.contiguous(), b"hel");
        s.insert(2, b"llo ").unwrap(); // overlaps both sides
        assert_eq!(s.contiguous(), b"hello world");
        assert_eq!(s.have, vec![0..11]);
    }

    #[test]
    fn limits_hold() {
        let mut s = CryptoStream::default();
        assert_eq!(s.insert(MAX_CRYPTO_LEN as u64, b"x"), Err(TooMuch));
        assert_eq!(s.insert(u64::MAX, b"x"), Err(TooMuch));
        assert_eq!(s.insert(MAX_CRYPTO_LEN as u64 - 1, b"x"), Ok(()));
        let mut s = CryptoStream::default();
        let results: Vec<_> = (0..=MAX_PIECES as u64)
            .map(|i| s.insert(i * 2, b"x"))
            .collect();
        assert_eq!(results.last(), Some(&Err(TooMuch)));
        assert!(results[..MAX_PIECES].iter().all(Result::is_ok));
    }

    proptest! {
        #[test]
        fn any_order_of_pieces_rebuilds_the_stream(
            data in proptest::collection::vec(any::<u8>(), 1..3000),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
            order in any::<u64>(),
        ) {
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(data.len())).collect();
            bounds.extend([0, data.len()]);
            bounds.sort_unstable();
            bounds.dedup();
            let mut pieces: Vec<Range<usize>> = bounds.windows(2).map(|w| w[0]..w[1]).collect();
            let n = pieces.len();
            pieces.rotate_left((order as usize) % n);
            pieces.reverse();
            let mut s = CryptoStream::default();
            for piece in pieces {
                s.insert(piece.start as u64, &data[piece]).unwrap();
            }
            prop_assert_eq!(s.contiguous(), &data[..]);
        }
    }
}
