//! Whatever a TCP client sends first, the HTTP sniffer must answer without panicking, and a
//! name it reports must be a normalised hostname.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::sniff_http::run(data));
