//! redir-host's memory: which name an address was last answered for, until the answer's
//! TTL runs out, so a connection to a bare address gets its name back for routing.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Address -> name, with expiry and a size bound (the oldest entries go first).
#[derive(Debug, Clone)]
pub struct Mapping {
    capacity: usize,
    /// ip -> (name, expires, insertion sequence)
    entries: HashMap<IpAddr, (String, Instant, u64)>,
    order: BTreeMap<u64, IpAddr>,
    seq: u64,
}

/// An answer is remembered at least this long: clients cache past tiny TTLs.
pub const MIN_MAPPING_TTL: Duration = Duration::from_secs(60);

impl Mapping {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Remembers that `ip` was answered for `name` with `ttl`.
    pub fn insert(&mut self, ip: IpAddr, name: &str, ttl: Duration, now: Instant) {
        let expires = now + ttl.max(MIN_MAPPING_TTL);
        if let Some((_, _, seq)) = self.entries.remove(&ip) {
            self.order.remove(&seq);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.seq += 1;
        self.order.insert(self.seq, ip);
        self.entries
            .insert(ip, (name.to_owned(), expires, self.seq));
    }

    /// The name `ip` was answered for, if that answer is still valid.
    pub fn name_of(&self, ip: IpAddr, now: Instant) -> Option<&str> {
        self.entries
            .get(&ip)
            .filter(|(_, expires, _)| *expires > now)
            .map(|(n, _, _)| n.as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_stays_bounded() {
        let now = Instant::now();
        let mut m = Mapping::new(2);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let c: IpAddr = "203.0.113.3".parse().unwrap();
        m.insert(a, "a.example", Duration::from_secs(300), now);
        assert_eq!(m.name_of(a, now), Some("a.example"));
        assert_eq!(m.name_of(a, now + Duration::from_secs(301)), None);
        // a short TTL is stretched to the minimum
        m.insert(b, "b.example", Duration::from_secs(1), now);
        assert_eq!(
            m.name_of(b, now + Duration::from_secs(30)),
            Some("b.example")
        );
        m.insert(c, "c.example", Duration::from_secs(300), now);
        assert_eq!(m.len(), 2);
        assert_eq!(m.name_of(a, now), None);
        // a new answer for the same address replaces the name
        m.insert(c, "d.example", Duration::from_secs(300), now);
        assert_eq!(m.name_of(c, now), Some("d.example"));
    }
}
