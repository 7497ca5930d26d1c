//! What a gRPC (gun) server sends back must cut into messages or fail cleanly, each
//! message's pieces re-encoding to a message with the same pieces.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::gun::run(data));
