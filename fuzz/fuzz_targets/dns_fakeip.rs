//! The DNS path's own state, driven by arbitrary input: fake-ip allocations in a small pool
//! (so reuse kicks in), lookups of arbitrary addresses, and the persisted snapshot read back
//! from arbitrary text. Invariants: an answer is always inside the range, a name maps back
//! to itself while it keeps its address, and a malformed snapshot is an error, not a panic.
#![no_main]
#![forbid(unsafe_code)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tpgate_fuzz::dns_fakeip::run(data));
