//! What an upstream nameserver sends back, on arbitrary bytes: read as the forwarder reads
//! it, kept by the cache when cacheable, and turned into the client's reply by
//! `Pending::finish`. The first byte picks the question's type, UDP or TCP, and how long
//! the answer sits in the cache. Invariants: no panic; the client's reply parses, is a
//! response carrying the request's id and question, fits 512 bytes over UDP, and is
//! SERVFAIL when the upstream said nothing usable; the cache keeps no truncated answer and
//! serves no TTL above the one that came.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::dns_reply::run(data));
