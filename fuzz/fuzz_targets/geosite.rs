//! A v2ray `geosite.dat` (downloaded by users from anywhere) must decode or fail cleanly,
//! whatever the bytes, and the lists built from it must match without panicking. The first
//! byte picks which list names (with or without an `@attribute`) the rules ask for.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::geosite::run(data));
