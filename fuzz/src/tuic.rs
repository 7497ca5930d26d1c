//! What a TUIC server sends: `Packet` commands, one per QUIC datagram or back to back on a
//! stream. A packet never claims more bytes than given; framing its payload again to the
//! same address (unfragmented) parses back to the same fields; pieces pushed into the
//! reassembler never panic.

use tpgate_core::proto::fragments::Defragger;
use tpgate_core::proto::tuic::{encode_packet, parse_packet};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let mut rest = data;
    let mut defrag = Defragger::default();
    while let Ok(Some((p, used))) = parse_packet(rest) {
        assert!(used >= 11 && used <= rest.len());
        assert!(p.payload.len() < used);
        if let Some(addr) = &p.addr {
            let mut again = Vec::new();
            if encode_packet(p.assoc, p.packet, addr, p.payload, usize::MAX, |m| {
                again.push(m)
            })
            .is_ok()
            {
                let (back, n) = parse_packet(&again[0]).expect("parses").expect("whole");
                assert_eq!(n, again[0].len());
                assert_eq!(
                    (back.assoc, back.payload, back.addr.as_ref()),
                    (p.assoc, p.payload, Some(addr))
                );
            }
        }
        let _ = defrag.push(&p);
        rest = &rest[used..];
    }
}
