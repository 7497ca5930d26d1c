//! What an XTLS Vision server sends back: taken off its padding without panicking, never
//! yielding more bytes than were given, and the same content and state whether it arrives
//! in one piece or in many.
//!
//! Input: a selector byte (bit 0: put the user id in front, so the frames are read; the
//! other bits: the size of the pieces), then the server's bytes.

use tpgate_core::proto::vision::Unpadder;
use tpgate_core::proto::vless::Uuid;

const ID: Uuid = Uuid([0x5a; 16]);

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::with_capacity(rest.len() + 16);
    if sel & 1 == 1 {
        input.extend_from_slice(&ID.0);
    }
    input.extend_from_slice(rest);

    let mut whole = Unpadder::new(ID);
    let mut out_whole = Vec::new();
    let r_whole = whole.feed(&input, &mut out_whole);
    if r_whole.is_ok() {
        assert!(out_whole.len() <= input.len());
    }

    let piece = usize::from(sel >> 1).max(1);
    let mut pieces = Unpadder::new(ID);
    let mut out_pieces = Vec::new();
    let mut r_pieces = Ok(pieces.status());
    for chunk in input.chunks(piece) {
        r_pieces = pieces.feed(chunk, &mut out_pieces);
        if r_pieces.is_err() {
            break;
        }
    }
    assert_eq!(r_whole.is_ok(), r_pieces.is_ok());
    if r_whole.is_ok() {
        assert_eq!(out_whole, out_pieces);
        assert_eq!(whole.status(), pieces.status());
    }
}
