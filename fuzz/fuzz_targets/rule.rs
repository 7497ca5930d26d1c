//! A rule line must parse or fail cleanly, and a parsed rule must match without panicking.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::rule::run(data));
