//! A v2ray `geoip.dat` (`geodata-mode`) must decode or fail cleanly, whatever the bytes.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::geoip_dat::run(data));
