//! Reassembly of UDP datagrams that a QUIC proxy protocol cut into fragments to fit QUIC's
//! datagram room (Hysteria 2's UDPMessage, TUIC's Packet): pieces of one packet id, each
//! with its index and the count.

/// One fragment as the protocols describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    pub packet: u16,
    pub fragment: u8,
    pub fragments: u8,
    pub payload: &'a [u8],
}

/// Reassembles one session's fragmented datagrams. Like Hysteria's and TUIC's own, it holds
/// one packet at a time: a fragment of another packet drops an unfinished one (UDP's way: a
/// lost fragment loses the datagram).
#[derive(Debug, Default)]
pub struct Defragger {
    packet: u16,
    pieces: Vec<Option<Vec<u8>>>,
    have: usize,
}

impl Defragger {
    /// Takes one piece; returns the whole datagram once its last missing piece arrives.
    /// A piece whose index is not below its count is ignored.
    pub fn push<'a>(&mut self, piece: impl Into<Piece<'a>>) -> Option<Vec<u8>> {
        let m = piece.into();
        if m.fragments == 1 {
            return Some(m.payload.to_vec());
        }
        if self.pieces.len() != usize::from(m.fragments) || self.packet != m.packet {
            self.packet = m.packet;
            self.pieces = vec![None; usize::from(m.fragments)];
            self.have = 0;
        }
        let slot = self.pieces.get_mut(usize::from(m.fragment))?;
        if slot.is_none() {
            *slot = Some(m.payload.to_vec());
            self.have += 1;
        }
        if self.have < self.pieces.len() {
            return None;
        }
        let whole = self.pieces.drain(..).flatten().flatten().collect();
        self.have = 0;
        Some(whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(packet: u16, fragment: u8, fragments: u8, payload: &[u8]) -> Piece<'_> {
        Piece {
            packet,
            fragment,
            fragments,
            payload,
        }
    }

    #[test]
    fn pieces_come_together_in_any_order_once() {
        let mut d = Defragger::default();
        assert_eq!(d.push(p(1, 1, 3, b"b")), None);
        assert_eq!(d.push(p(1, 2, 3, b"c")), None);
        assert_eq!(d.push(p(1, 2, 3, b"c")), None, "a repeat counts once");
        assert_eq!(d.push(p(1, 0, 3, b"a")), Some(b"abc".to_vec()));
        assert_eq!(d.push(p(2, 5, 3, b"x")), None, "an index past the count");
        assert_eq!(d.push(p(3, 0, 1, b"whole")), Some(b"whole".to_vec()));
    }
}
