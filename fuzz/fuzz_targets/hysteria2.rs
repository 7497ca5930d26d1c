//! What a Hysteria 2 server sends (TCPResponse, UDPMessage and its reassembly) must parse
//! or fail cleanly, and re-encode to the same fields.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::hysteria2::run(data));
