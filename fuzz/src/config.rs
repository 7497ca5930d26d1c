//! `config::load` must never panic, whatever the bytes.

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tpgate_core::config::load(text);
    }
}
