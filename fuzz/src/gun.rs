//! What a gRPC (gun) server sends back: cut into messages or refused cleanly, never
//! claiming more bytes than given, and the pieces of one message never longer than it;
//! a message made of those pieces parses back to the same pieces.

use tpgate_core::proto::gun::{encode_message, parse_message};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((msg, used))) = parse_message(rest) {
        assert!(used >= 5 && used <= rest.len());
        let pieces: Vec<u8> = msg.pieces().flatten().copied().collect();
        assert!(pieces.len() <= used);
        let mut again = Vec::new();
        encode_message(&pieces, &mut again);
        let (m, n) = parse_message(&again)
            .expect("re-encoded message parses")
            .expect("whole");
        assert_eq!(n, again.len());
        assert_eq!(m.pieces().flatten().copied().collect::<Vec<u8>>(), pieces);
        rest = &rest[used..];
    }
}
