//! What a Hysteria 2 server sends: the TCPResponse at the start of each stream and the
//! UDPMessages in QUIC datagrams. The first byte picks which parser reads the rest. A
//! response never claims more bytes than given; a message's payload is the tail of the
//! datagram, and framing it again (unfragmented) parses back to the same fields; fragments
//! pushed into the reassembler never panic.

use tpgate_core::proto::hysteria2::{
    encode_udp_message, parse_tcp_response, parse_udp_message, Defragger,
};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        if let Ok(Some((_, used))) = parse_tcp_response(rest) {
            assert!(used >= 3 && used <= rest.len());
        }
        return;
    }
    let mut defrag = Defragger::default();
    for datagram in rest.split(|b| *b == 0xff) {
        let Ok(m) = parse_udp_message(datagram) else {
            continue;
        };
        assert!(m.payload.len() < datagram.len());
        let mut again = Vec::new();
        encode_udp_message(m.session, m.packet, m.addr, m.payload, usize::MAX, |d| {
            again.push(d)
        })
        .expect("fits unfragmented");
        assert_eq!(again.len(), 1);
        let back = parse_udp_message(&again[0]).expect("re-encoded message parses");
        assert_eq!(
            (back.session, back.addr, back.payload),
            (m.session, m.addr, m.payload)
        );
        let _ = defrag.push(&m);
    }
}
