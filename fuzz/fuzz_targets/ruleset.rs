//! A rule-provider file (any behaviour and format, mrs included) must parse or fail cleanly, and a
//! parsed set must match without panicking.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::ruleset::run(data));
