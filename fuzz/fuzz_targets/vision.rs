//! What an XTLS Vision server sends must come off its padding without panicking, never
//! yielding more than it was given, the same in one piece as in many.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::vision::run(data));
