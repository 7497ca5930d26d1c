//! `config::load` must never panic, whatever the bytes.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tpgate_core::config::load(text);
    }
});
