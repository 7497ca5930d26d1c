//! The DNS path's own state, driven by arbitrary input: fake-ip allocations in a small pool
//! (so reuse kicks in), lookups of arbitrary addresses, and the persisted snapshot read back
//! from arbitrary text. Invariants: an answer is always inside the range, a name maps back
//! to itself while it keeps its address, and a malformed snapshot is an error, not a panic.

use std::net::{IpAddr, Ipv4Addr};

use tpgate_core::dns::{FakePool, Snapshot};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let Some(mut pool) = FakePool::new("198.18.0.1/28".parse().unwrap()) else {
        return;
    };
    for chunk in data.chunks(4) {
        let name = format!("n{}.example", chunk[0] % 40);
        let ip = pool.lookup_or_alloc(&name);
        assert!(pool.contains(ip), "{ip} outside the range");
        assert_eq!(pool.name_of(ip).as_deref(), Some(name.as_str()));
        if let [_, a, b, ..] = chunk {
            let _ = pool.name_of(IpAddr::V4(Ipv4Addr::new(198, 18, *a, *b)));
        }
    }
    let snap = pool.snapshot();
    let mut again = FakePool::new("198.18.0.1/28".parse().unwrap()).unwrap();
    again.restore(&snap);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(s) = Snapshot::from_json(text) {
            again.restore(&s);
        }
    }
}
