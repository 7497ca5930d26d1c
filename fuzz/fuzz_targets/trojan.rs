//! A Trojan UDP stream must cut into packets or fail cleanly, each packet re-encoding to the
//! bytes it came from.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::trojan::run(data));
