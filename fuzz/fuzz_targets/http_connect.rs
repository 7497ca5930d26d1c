//! Whatever an HTTP proxy answers to CONNECT must parse or fail cleanly, and a success must
//! not claim more head than it was given or than the cap allows.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::http_connect::run(data));
