//! Pure part of the built-in DNS server: answering a request (parse, hosts / fake-ip /
//! "ask upstream", reply bytes), the answer cache, TCP framing, the fake-ip pool (name <->
//! address, LRU reuse, a snapshot that survives restarts) and the redir-host mapping
//! (address -> the name it was last answered for, with a TTL), and whether an upstream's
//! reply answers the query at all (`reply`). No sockets and no clock: callers pass `now`,
//! and do the upstream I/O themselves.

pub mod answer;
mod cache;
mod fakeip;
mod frame;
mod mapping;
pub mod reply;

pub use cache::{Cache, Key as CacheKey, FAILURE_TTL};
pub use fakeip::{FakePool, Snapshot, MAX_POOL};
pub use frame::{frame, Frames};
pub use mapping::{Mapping, MIN_MAPPING_TTL};
