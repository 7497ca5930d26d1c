//! What an upstream nameserver sends back, on arbitrary bytes: read as the forwarder reads
//! it (parsed, then `reply::check`ed against the query), kept by the cache when cacheable,
//! and turned into the client's reply by `Pending::finish`. The first byte picks the
//! question's type, whether the client and the upstream use UDP or a stream, and how long
//! the answer sits in the cache. Invariants: no panic; the client's reply parses, is a
//! response carrying the request's id and question, fits 512 bytes over UDP, and is
//! SERVFAIL when the upstream said nothing usable; the cache keeps no truncated answer and
//! serves no TTL above the one that came.

use std::net::IpAddr;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tpgate_core::config::{Dns, EnhancedMode};
use tpgate_core::dns::answer::{start, Step, Tables, Transport};
use tpgate_core::dns::{reply, Cache, CacheKey};

const ID: u16 = 0x1234;

/// Nothing answered locally: every query goes upstream.
struct Plain(Dns);

impl Tables for Plain {
    fn config(&self) -> &Dns {
        &self.0
    }

    fn fake_addr(&self, _: &str, _: bool) -> Option<IpAddr> {
        None
    }
}

fn request(kind: RecordType) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.set_id(ID)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str("www.example.com.").ok()?, kind));
    m.to_vec().ok()
}

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let [sel, upstream @ ..] = data else {
        return;
    };
    let kinds = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::HTTPS,
    ];
    let kind = kinds[usize::from(sel % 4)];
    let transport = if sel & 4 == 0 {
        Transport::Udp
    } else {
        Transport::Stream
    };
    let tables = Plain(Dns {
        enable: true,
        ipv6: true,
        enhanced_mode: EnhancedMode::Normal,
        ..Default::default()
    });
    let Some(bytes) = request(kind) else { return };
    let Step::Forward(pending) = start(&bytes, transport, &tables) else {
        panic!("a plain query must go upstream");
    };
    // As the forwarder takes it: what does not parse, or does not answer the query, is no
    // answer; SERVFAIL and REFUSED are none either.
    let over_stream = sel & 8 != 0;
    let reply = Message::from_vec(upstream).ok().filter(|m| {
        reply::check(&pending.request, m, over_stream).is_ok()
            && !matches!(
                m.response_code(),
                ResponseCode::ServFail | ResponseCode::Refused
            )
    });
    let mut cache = Cache::default();
    let Some(key) = CacheKey::of(&pending.request) else {
        panic!("the request has a question");
    };
    let now = Instant::now();
    if let Some(r) = &reply {
        cache.put(key.clone(), r, now);
    }
    let hit = cache.get(&key, now + Duration::from_secs(u64::from(sel >> 4)));
    if let (Some(h), Some(r)) = (&hit, &reply) {
        assert!(!r.truncated(), "a truncated answer was cached");
        assert_eq!(h.answers().len(), r.answers().len());
        for (served, came) in h.answers().iter().zip(r.answers()) {
            assert!(served.ttl() <= came.ttl());
        }
    }
    let out = pending.finish(hit.as_ref().or(reply.as_ref()));
    let m = Message::from_vec(&out).expect("the client's reply parses");
    assert_eq!(m.id(), ID);
    assert_eq!(m.message_type(), MessageType::Response);
    if transport == Transport::Udp {
        assert!(out.len() <= 512, "{} bytes over UDP", out.len());
    }
    assert_eq!(m.queries(), pending.request.queries(), "another question");
    if reply.is_none() {
        assert_eq!(m.response_code(), ResponseCode::ServFail);
    }
}
