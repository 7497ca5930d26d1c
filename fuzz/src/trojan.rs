//! A Trojan UDP stream must cut into packets or fail cleanly, each packet re-encoding to the
//! bytes it came from.

use tpgate_core::proto::trojan::{encode_udp_packet, parse_udp_packet};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((packet, used))) = parse_udp_packet(rest) {
        assert!(used > 0 && used <= rest.len());
        let mut again = Vec::new();
        encode_udp_packet(&packet.dst, packet.payload, &mut again).unwrap();
        assert_eq!(again, rest[..used]);
        rest = &rest[used..];
    }
}
