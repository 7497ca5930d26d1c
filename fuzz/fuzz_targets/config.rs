//! `config::load` must never panic, whatever the bytes.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::config::run(data));
