//! A server's answer to a WebSocket or HTTP upgrade must be recognised, asked more of, or
//! refused without panicking, never claiming more bytes than it was given.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::ws_upgrade::run(data));
