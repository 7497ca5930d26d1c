//! Answers from upstream, kept for their TTL (clamped), negative answers (NXDOMAIN, and
//! NOERROR without records) for the SOA minimum (RFC 2308), failures (no usable answer at
//! all) for a few seconds (RFC 9520). A hit is served with the TTLs lowered by the time it
//! spent here. The key includes the EDNS client subnet, which is passed upstream untouched,
//! so one subnet's answer is never served to another. No clock: callers pass `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsCode;
use hickory_proto::rr::RData;

/// An answer is kept at least this long, so a burst of queries with TTL 0 costs one
/// upstream query, and at most this long.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Negative answers without an SOA record.
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
const CAPACITY: usize = 8192;
/// How long a failed resolution (no nameserver gave a usable answer) is remembered:
/// clients that retry get SERVFAIL at once instead of each waiting out the upstream
/// timeout again, and a dead or broken nameserver is not asked once per retry (RFC 9520:
/// at least 1 s; 5 s is its suggested start).
pub const FAILURE_TTL: Duration = Duration::from_secs(5);

/// What a cached answer is found by: the first question, the DO bit and the client subnet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    name: String,
    qtype: u16,
    qclass: u16,
    dnssec_ok: bool,
    subnet: Option<String>,
}

impl Key {
    /// The key of `query`'s first question; `None` for a query without one.
    pub fn of(query: &Message) -> Option<Self> {
        let q = query.query()?;
        let edns = query.extensions().as_ref();
        Some(Self {
            name: q.name().to_lowercase().to_ascii(),
            qtype: u16::from(q.query_type()),
            qclass: u16::from(q.query_class()),
            dnssec_ok: edns.is_some_and(|e| e.flags().dnssec_ok),
            subnet: edns
                .and_then(|e| e.option(EdnsCode::Subnet))
                .map(|o| format!("{o:?}")),
        })
    }
}

struct Entry {
    reply: Message,
    stored: Instant,
    ttl: Duration,
}

/// Upstream answers by [`Key`], bounded in size; and the keys no nameserver answered
/// lately (never an answer: a failure is not kept as a message, so nothing a broken server
/// sent can be served from here).
#[derive(Default)]
pub struct Cache {
    entries: HashMap<Key, Entry>,
    /// Key -> until when it counts as failed.
    failures: HashMap<Key, Instant>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Cache({} entries, {} failures)",
            self.entries.len(),
            self.failures.len()
        )
    }
}

impl Cache {
    /// A still-valid answer for `key`, its TTLs lowered by its age.
    pub fn get(&mut self, key: &Key, now: Instant) -> Option<Message> {
        let e = self.entries.get(key)?;
        let age = now.saturating_duration_since(e.stored);
        if age >= e.ttl {
            self.entries.remove(key);
            return None;
        }
        let mut reply = e.reply.clone();
        let spent = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
        let lower = |r: &mut hickory_proto::rr::Record| {
            let t = r.ttl().saturating_sub(spent);
            r.set_ttl(t);
        };
        reply.answers_mut().iter_mut().for_each(lower);
        reply.name_servers_mut().iter_mut().for_each(lower);
        Some(reply)
    }

    /// Keeps `reply` if it is cacheable: NOERROR or NXDOMAIN, not truncated.
    pub fn put(&mut self, key: Key, reply: &Message, now: Instant) {
        let Some(ttl) = lifetime(reply) else {
            return;
        };
        if self.entries.len() >= CAPACITY {
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.stored) < e.ttl);
            if self.entries.len() >= CAPACITY {
                // Still full of live answers: start over rather than track recency.
                self.entries.clear();
            }
        }
        self.failures.remove(&key);
        self.entries.insert(
            key,
            Entry {
                reply: reply.clone(),
                stored: now,
                ttl,
            },
        );
    }

    /// Remembers for [`FAILURE_TTL`] that no nameserver answered `key`.
    pub fn put_failure(&mut self, key: Key, now: Instant) {
        if self.failures.len() >= CAPACITY {
            self.failures.retain(|_, until| *until > now);
            if self.failures.len() >= CAPACITY {
                self.failures.clear();
            }
        }
        self.failures.insert(key, now + FAILURE_TTL);
    }

    /// Whether no nameserver answered `key` less than [`FAILURE_TTL`] ago.
    pub fn failed_recently(&mut self, key: &Key, now: Instant) -> bool {
        match self.failures.get(key) {
            Some(until) if *until > now => true,
            Some(_) => {
                self.failures.remove(key);
                false
            }
            None => false,
        }
    }
}

/// How long `reply` may be served from the cache; `None`: not at all.
fn lifetime(reply: &Message) -> Option<Duration> {
    if reply.truncated() {
        return None;
    }
    let negative = match reply.response_code() {
        ResponseCode::NXDomain => true,
        ResponseCode::NoError => reply.answers().is_empty(),
        _ => return None,
    };
    let ttl = if negative {
        reply
            .name_servers()
            .iter()
            .find_map(|r| match r.data() {
                RData::SOA(soa) => Some(Duration::from_secs(u64::from(soa.minimum().min(r.ttl())))),
                _ => None,
            })
            .unwrap_or(NEGATIVE_TTL)
    } else {
        let min = reply.answers().iter().map(|r| r.ttl()).min().unwrap_or(0);
        Duration::from_secs(u64::from(min))
    };
    Some(ttl.clamp(MIN_TTL, MAX_TTL))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::str::FromStr as _;

    use hickory_proto::op::{MessageType, Query};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, Record, RecordType};

    use super::*;

    fn query(name: &str) -> Message {
        let mut m = Message::new();
        m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        m
    }

    #[test]
    fn ttls_count_down_and_expire() {
        let now = Instant::now();
        let q = query("a.example.");
        let mut reply = q.clone();
        reply.set_message_type(MessageType::Response);
        reply.add_answer(Record::from_rdata(
            Name::from_str("a.example.").unwrap(),
            100,
            RData::A(A(Ipv4Addr::new(203, 0, 113, 2))),
        ));
        let mut c = Cache::default();
        let key = Key::of(&q).unwrap();
        c.put(key.clone(), &reply, now);
        let hit = c.get(&key, now + Duration::from_secs(40)).unwrap();
        assert_eq!(hit.answers()[0].ttl(), 60);
        assert!(c.get(&key, now + Duration::from_secs(100)).is_none());
    }

    #[test]
    fn failures_are_remembered_briefly_and_an_answer_ends_them() {
        let now = Instant::now();
        let q = query("down.example.");
        let key = Key::of(&q).unwrap();
        let mut c = Cache::default();
        assert!(!c.failed_recently(&key, now));
        c.put_failure(key.clone(), now);
        assert!(c.failed_recently(&key, now + FAILURE_TTL / 2));
        assert!(c.get(&key, now).is_none(), "a failure is no answer");
        assert!(!c.failed_recently(&key, now + FAILURE_TTL));
        c.put_failure(key.clone(), now);
        let mut reply = q.clone();
        reply.set_message_type(MessageType::Response);
        reply.add_answer(Record::from_rdata(
            Name::from_str("down.example.").unwrap(),
            60,
            RData::A(A(Ipv4Addr::new(203, 0, 113, 2))),
        ));
        c.put(key.clone(), &reply, now);
        assert!(!c.failed_recently(&key, now));
    }

    #[test]
    fn negative_answers_use_the_soa_minimum() {
        let now = Instant::now();
        let q = query("missing.example.");
        let mut reply = q.clone();
        reply.set_response_code(ResponseCode::NXDomain);
        let zone = Name::from_str("example.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, 20);
        reply.add_name_server(Record::from_rdata(zone, 300, RData::SOA(soa)));
        let mut c = Cache::default();
        let key = Key::of(&q).unwrap();
        c.put(key.clone(), &reply, now);
        let hit = c.get(&key, now + Duration::from_secs(5)).unwrap();
        assert_eq!(hit.response_code(), ResponseCode::NXDomain);
        assert_eq!(hit.name_servers()[0].ttl(), 295);
        assert!(c.get(&key, now + Duration::from_secs(21)).is_none());
        // SERVFAIL is not kept
        let mut bad = q.clone();
        bad.set_response_code(ResponseCode::ServFail);
        let k2 = Key::of(&query("x.example.")).unwrap();
        c.put(k2.clone(), &bad, now);
        assert!(c.get(&k2, now).is_none());
    }
}
