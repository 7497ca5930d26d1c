//! The built-in DNS server's request path on arbitrary bytes: one UDP datagram, or a TCP
//! stream cut into arbitrary chunks and split into frames, each answered from `hosts`, a
//! small fake-ip pool, or a fake upstream (no answer, a big answer, NXDOMAIN) through the
//! cache. Invariants: no panic; a reply parses, is a response, carries the request's id and,
//! over UDP, fits the size the request allows.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::dns_request::run(data));
