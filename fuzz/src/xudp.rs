//! XUDP frames from a server: cut into frames or refused cleanly, never claiming more bytes
//! than given, a packet's payload never longer than its frame.

use tpgate_core::proto::xudp::{parse_frame, Frame};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((frame, used))) = parse_frame(rest) {
        assert!(used >= 6 && used <= rest.len());
        if let Frame::Packet(p) = frame {
            assert!(p.len() + 8 <= used);
        }
        rest = &rest[used..];
    }
}
