//! The fake-ip pool: each name gets an address of the fake range and keeps it while it is
//! in use; when the range is full the least recently used name gives its address up.
//! mihomo's layout: the network address, the first host address (the "gateway") and the
//! broadcast address are never handed out.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

/// The largest number of addresses a pool uses, whatever the range (an IPv6 /64 would
/// otherwise mean an unbounded table).
pub const MAX_POOL: u128 = 1 << 20;

/// One range's name <-> address table.
#[derive(Debug, Clone)]
pub struct FakePool {
    net: IpNet,
    /// The first address handed out, as a number.
    first: u128,
    /// How many addresses can be handed out.
    size: u128,
    /// The next never-used offset; once it reaches `size`, addresses are reused.
    cursor: u128,
    by_name: HashMap<String, (u128, u64)>,
    by_offset: HashMap<u128, String>,
    /// Use tick -> offset: the smallest tick is the least recently used name.
    lru: BTreeMap<u64, u128>,
    tick: u64,
}

/// The pool's content, oldest use first, to persist across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub entries: Vec<(String, IpAddr)>,
}

fn to_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl FakePool {
    /// A pool over `net`; `None` when the range has no address to hand out.
    pub fn new(net: IpNet) -> Option<Self> {
        let base = to_num(net.network());
        let last = to_num(net.broadcast());
        let (first, top) = match net {
            // network, gateway ... broadcast excluded
            IpNet::V4(_) => (base + 2, last.checked_sub(1)?),
            // no broadcast in IPv6, but mihomo skips the last address as well
            IpNet::V6(_) => (base + 2, last.checked_sub(1)?),
        };
        if top < first {
            return None;
        }
        let size = (top - first + 1).min(MAX_POOL);
        Some(Self {
            net,
            first,
            size,
            cursor: 0,
            by_name: HashMap::new(),
            by_offset: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
        })
    }

    pub fn range(&self) -> IpNet {
        self.net
    }

    /// Whether `ip` lies in the fake range (handed out or not).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net.contains(&ip)
    }

    /// How many addresses the pool can hand out.
    pub fn capacity(&self) -> u128 {
        self.size
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    fn addr(&self, offset: u128) -> IpAddr {
        let n = self.first + offset;
        match self.net {
            // `n` stays inside the /0../32 range by construction
            IpNet::V4(_) => IpAddr::from(u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes()),
            IpNet::V6(_) => IpAddr::from(n.to_be_bytes()),
        }
    }

    fn offset(&self, ip: IpAddr) -> Option<u128> {
        if !self.net.contains(&ip) {
            return None;
        }
        let n = to_num(ip).checked_sub(self.first)?;
        (n < self.size).then_some(n)
    }

    fn touch(&mut self, name: &str) {
        self.tick += 1;
        if let Some((offset, tick)) = self.by_name.get_mut(name) {
            self.lru.remove(tick);
            *tick = self.tick;
            self.lru.insert(self.tick, *offset);
        }
    }

    /// The address of `name` (lower case, no trailing dot), allocating one if needed.
    pub fn lookup_or_alloc(&mut self, name: &str) -> IpAddr {
        if let Some(&(offset, _)) = self.by_name.get(name) {
            self.touch(name);
            return self.addr(offset);
        }
        let offset = if self.cursor < self.size {
            self.cursor += 1;
            self.cursor - 1
        } else {
            let oldest = self.lru.first_key_value().map(|(t, o)| (*t, *o));
            match oldest {
                Some((tick, offset)) => {
                    self.lru.remove(&tick);
                    if let Some(old) = self.by_offset.remove(&offset) {
                        self.by_name.remove(&old);
                    }
                    offset
                }
                // size > 0, so a full pool has entries; unreachable in practice
                None => 0,
            }
        };
        self.insert(name.to_owned(), offset);
        self.addr(offset)
    }

    fn insert(&mut self, name: String, offset: u128) {
        self.tick += 1;
        self.lru.insert(self.tick, offset);
        self.by_offset.insert(offset, name.clone());
        self.by_name.insert(name, (offset, self.tick));
    }

    /// The name `ip` stands for, if it was handed out (and marks it used).
    pub fn name_of(&mut self, ip: IpAddr) -> Option<String> {
        let offset = self.offset(ip)?;
        let name = self.by_offset.get(&offset)?.clone();
        self.touch(&name);
        Some(name)
    }

    /// The address of `name` without allocating.
    pub fn addr_of(&self, name: &str) -> Option<IpAddr> {
        self.by_name.get(name).map(|(o, _)| self.addr(*o))
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            entries: self
                .lru
                .values()
                .filter_map(|o| Some((self.by_offset.get(o)?.clone(), self.addr(*o))))
                .collect(),
        }
    }

    /// Takes back a snapshot's entries (oldest first); ones outside this range (the config
    /// changed) or clashing with an entry already restored are dropped.
    pub fn restore(&mut self, snap: &Snapshot) {
        for (name, ip) in &snap.entries {
            let Some(offset) = self.offset(*ip) else {
                continue;
            };
            if self.by_offset.contains_key(&offset) || self.by_name.contains_key(name) {
                continue;
            }
            self.insert(name.clone(), offset);
            self.cursor = self.cursor.max(offset + 1);
        }
    }
}

impl Snapshot {
    /// `[["name", "ip"], ...]`.
    pub fn to_json(&self) -> String {
        let list: Vec<serde_json::Value> = self
            .entries
            .iter()
            .map(|(n, ip)| serde_json::json!([n, ip.to_string()]))
            .collect();
        serde_json::Value::Array(list).to_string()
    }

    /// Reads [`Self::to_json`]'s output; malformed entries are skipped.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let list = v.as_array().ok_or("expected a JSON array")?;
        let entries = list
            .iter()
            .filter_map(|e| {
                let pair = e.as_array()?;
                let name = pair.first()?.as_str()?.to_owned();
                let ip = pair.get(1)?.as_str()?.parse().ok()?;
                Some((name, ip))
            })
            .collect();
        Ok(Self { entries })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn pool(net: &str) -> FakePool {
        FakePool::new(net.parse().unwrap()).unwrap()
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let mut p = pool("198.18.0.1/29");
        assert_eq!(p.capacity(), 5);
        let got: Vec<IpAddr> = (0..5)
            .map(|i| p.lookup_or_alloc(&format!("n{i}")))
            .collect();
        let want: Vec<IpAddr> = (2..7)
            .map(|i| format!("198.18.0.{i}").parse().unwrap())
            .collect();
        assert_eq!(got, want);
        // full: the least recently used (n1 after n0 is used again) is reused
        assert_eq!(p.lookup_or_alloc("n0"), want[0]);
        assert_eq!(p.lookup_or_alloc("new"), want[1]);
        assert_eq!(p.name_of(want[1]).as_deref(), Some("new"));
        assert_eq!(p.addr_of("n1"), None);
        assert!(FakePool::new("198.18.0.0/31".parse().unwrap()).is_none());
    }

    #[test]
    fn ipv6_pool_is_bounded() {
        let mut p = pool("fdfe:dcba:9876::1/64");
        assert_eq!(p.capacity(), MAX_POOL);
        assert_eq!(
            p.lookup_or_alloc("a.example"),
            "fdfe:dcba:9876::2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn snapshot_round_trip() {
        let mut p = pool("198.18.0.1/16");
        let a = p.lookup_or_alloc("a.example");
        let b = p.lookup_or_alloc("b.example");
        let text = p.snapshot().to_json();
        let mut q = pool("198.18.0.1/16");
        q.restore(&Snapshot::from_json(&text).unwrap());
        assert_eq!(q.name_of(a).as_deref(), Some("a.example"));
        assert_eq!(q.addr_of("b.example"), Some(b));
        // new names do not take restored addresses
        let c = q.lookup_or_alloc("c.example");
        assert!(c != a && c != b);
        // a changed range drops what no longer fits
        let mut r = pool("198.19.0.1/16");
        r.restore(&q.snapshot());
        assert!(r.is_empty());
        assert!(Snapshot::from_json("{").is_err());
    }

    proptest! {
        #[test]
        fn pool_invariants(names in proptest::collection::vec(0u8..40, 1..300), prefix in 26u8..30) {
            let net: IpNet = format!("198.18.0.1/{prefix}").parse().unwrap();
            let mut p = FakePool::new(net).unwrap();
            let cap = usize::try_from(p.capacity()).unwrap();
            let mut recent: Vec<String> = Vec::new();
            for n in names {
                let name = format!("n{n}.example");
                let ip = p.lookup_or_alloc(&name);
                prop_assert!(net.contains(&ip));
                prop_assert!(ip != net.network() && ip != net.broadcast());
                prop_assert!(ip != IpAddr::from([198, 18, 0, 1]));
                recent.retain(|r| r != &name);
                recent.push(name.clone());
                // the `cap` most recently used names all keep their addresses
                let live: Vec<&String> = recent.iter().rev().take(cap).collect();
                let mut seen = HashSet::new();
                for l in &live {
                    let a = p.addr_of(l);
                    prop_assert!(a.is_some(), "{l} lost its address");
                    prop_assert!(seen.insert(a), "two names share {a:?}");
                }
                prop_assert_eq!(p.addr_of(&name), Some(ip));
                prop_assert!(p.len() <= cap);
            }
        }
    }
}
