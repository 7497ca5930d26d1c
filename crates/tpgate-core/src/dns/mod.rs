//! Pure state of the built-in DNS server: the fake-ip pool (name <-> address, LRU reuse,
//! a snapshot that survives restarts) and the redir-host mapping (address -> the name it
//! was last answered for, with a TTL). No sockets and no clock: callers pass `now`.

mod fakeip;
mod mapping;

pub use fakeip::{FakePool, Snapshot, MAX_POOL};
pub use mapping::{Mapping, MIN_MAPPING_TTL};
