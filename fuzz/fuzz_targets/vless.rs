//! A VLESS response header must be recognised, asked more of, or refused without panicking,
//! and never claim more bytes than it was given; a VLESS UDP stream must cut into packets
//! that re-encode to the bytes they came from.
#![no_main]
#![forbid(unsafe_code)]
use tpgate_core::proto::vless::{encode_udp_packet, parse_response, parse_udp_packet};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Some(used)) = parse_response(data) {
        assert!((2..=data.len()).contains(&used));
    }
    let mut rest = data;
    while let Some((payload, used)) = parse_udp_packet(rest) {
        assert!(used >= 2 && used <= rest.len());
        let mut again = Vec::new();
        encode_udp_packet(payload, &mut again).unwrap();
        assert_eq!(again, rest[..used]);
        rest = &rest[used..];
    }
});
