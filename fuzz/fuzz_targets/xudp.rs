//! XUDP frames from a server must cut into frames or fail cleanly, never claiming more
//! bytes than they were given.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::xudp::run(data));
