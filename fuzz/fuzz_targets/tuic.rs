//! What a TUIC server sends (Packet commands and their reassembly) must parse or fail
//! cleanly, and re-encode to the same fields.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::tuic::run(data));
