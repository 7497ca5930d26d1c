//! What a Shadowsocks plugin's server sends (simple-obfs TLS, ShadowTLS v2 records,
//! Mux.Cool frames) must be walked without panicking or claiming bytes it was not given.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::ss_plugins::run(data));
