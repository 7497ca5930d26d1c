//! What the client reads of a REALITY server (its certificate) must check or fail cleanly.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::reality::run(data));
