//! Whatever a SOCKS5 server or relay sends must parse or fail cleanly, never claiming more
//! bytes than it was given; what parses must encode back to the same bytes.

use tpgate_core::proto::{addr, socks5};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let _ = socks5::parse_method_selection(data, data.first() == Some(&0));
    let _ = socks5::parse_auth_reply(data);
    if let Ok(Some((bound, used))) = socks5::parse_reply(data) {
        assert!(used <= data.len());
        let mut again = Vec::new();
        socks5::encode_request(socks5::Command::Connect, &bound, &mut again).unwrap();
        assert_eq!(again.len(), used);
        assert_eq!(again[3..], data[3..used]);
    }
    if let Ok((dst, offset)) = socks5::parse_udp_datagram(data) {
        assert!(offset <= data.len());
        let mut again = Vec::new();
        socks5::encode_udp_datagram(&dst, &data[offset..], &mut again).unwrap();
        assert_eq!(again[3..], data[3..]);
    }
    if let Ok(Some((dst, used))) = addr::parse(data) {
        assert_eq!(used, addr::encoded_len(&dst));
    }
}
