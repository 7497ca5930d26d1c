//! Any sequence of UDP datagrams must leave the QUIC sniffer without panicking, and once it
//! gives a final verdict it must keep giving it. The input is a series of datagrams, each
//! prefixed by its length as a big-endian u16 (the format of the captured fixtures).
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::sniff_quic::run(data));
