//! The built-in DNS server's request path on arbitrary bytes: one UDP datagram, or a TCP
//! stream cut into arbitrary chunks and split into frames, each answered from `hosts`, a
//! small fake-ip pool, or a fake upstream (no answer, a big answer, NXDOMAIN) through the
//! cache. Invariants: no panic; a reply parses, is a response, carries the request's id and,
//! over UDP, fits the size the request allows.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use tpgate_core::config::{Dns, DomainPattern, EnhancedMode};
use tpgate_core::dns::answer::{start, Step, Tables, Transport};
use tpgate_core::dns::{Cache, CacheKey, FakePool, Frames};

struct Fixture {
    cfg: Dns,
    fake4: RefCell<FakePool>,
    fake6: RefCell<FakePool>,
}

impl Tables for Fixture {
    fn config(&self) -> &Dns {
        &self.cfg
    }

    fn fake_addr(&self, name: &str, v6: bool) -> Option<IpAddr> {
        let pool = if v6 { &self.fake6 } else { &self.fake4 };
        Some(pool.borrow_mut().lookup_or_alloc(name))
    }
}

fn fixture(ipv6: bool) -> Option<Fixture> {
    Some(Fixture {
        cfg: Dns {
            enable: true,
            ipv6,
            enhanced_mode: EnhancedMode::FakeIp,
            fake_ip_filter: vec![DomainPattern::parse("+.lan").ok()?],
            hosts: vec![(
                DomainPattern::parse("router.home").ok()?,
                vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
            )],
            use_hosts: true,
            ..Default::default()
        },
        fake4: RefCell::new(FakePool::new("198.18.0.1/28".parse().ok()?)?),
        fake6: RefCell::new(FakePool::new("fdfe:dcba:9876::1/120".parse().ok()?)?),
    })
}

/// A fake upstream: `how` picks no answer, `how / 4` A records, or NXDOMAIN.
fn upstream(req: &Message, how: u8) -> Option<Message> {
    let mut r = req.clone();
    r.set_id(0x9999).set_message_type(MessageType::Response);
    match how % 3 {
        0 => return None,
        1 => {
            let name = req.queries().first()?.name().clone();
            for i in 0..how / 4 {
                r.add_answer(Record::from_rdata(
                    name.clone(),
                    u32::from(how),
                    RData::A(A(Ipv4Addr::new(203, 0, 113, i))),
                ));
            }
        }
        _ => {
            r.set_response_code(ResponseCode::NXDomain);
        }
    }
    Some(r)
}

fn check(bytes: &[u8], transport: Transport, f: &Fixture, cache: &mut Cache, how: u8) {
    let out = match start(bytes, transport, f) {
        Step::Drop => return,
        Step::Reply(out) => out,
        Step::Forward(p) => {
            let now = Instant::now();
            let key = CacheKey::of(&p.request);
            let reply = upstream(&p.request, how);
            if let (Some(k), Some(r)) = (&key, &reply) {
                cache.put(k.clone(), r, now);
            }
            let later = now + Duration::from_secs(u64::from(how));
            let hit = key.and_then(|k| cache.get(&k, later));
            p.finish(hit.as_ref().or(reply.as_ref()))
        }
    };
    let m = Message::from_vec(&out).expect("the reply parses");
    assert_eq!(m.message_type(), MessageType::Response);
    assert_eq!(m.id(), u16::from_be_bytes([bytes[0], bytes[1]]));
    if transport == Transport::Udp {
        let limit = Message::from_vec(bytes)
            .ok()
            .and_then(|r| r.extensions().as_ref().map(|e| e.max_payload()))
            .map_or(512, |p| usize::from(p).max(512));
        assert!(out.len() <= limit, "{} > {limit}", out.len());
    }
}

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let [mode, cut, rest @ ..] = data else {
        return;
    };
    let Some(f) = fixture(mode & 2 != 0) else {
        return;
    };
    let mut cache = Cache::default();
    let how = mode >> 2;
    if mode & 1 == 0 {
        check(rest, Transport::Udp, &f, &mut cache, how);
        return;
    }
    let mut frames = Frames::default();
    for chunk in rest.chunks(usize::from(*cut).max(1)) {
        frames.push(chunk);
        while let Some(msg) = frames.next_message() {
            check(&msg, Transport::Stream, &f, &mut cache, how);
        }
    }
}
