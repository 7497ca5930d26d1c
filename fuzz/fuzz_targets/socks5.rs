//! Whatever a SOCKS5 server or relay sends must parse or fail cleanly, never claiming more
//! bytes than it was given; what parses must encode back to the same bytes.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::socks5::run(data));
