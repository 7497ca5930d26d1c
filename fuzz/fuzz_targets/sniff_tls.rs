//! Whatever a TCP client sends first, the TLS sniffer must answer without panicking, and a
//! name it reports must be a normalised hostname that more bytes cannot change.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::sniff_tls::run(data));
