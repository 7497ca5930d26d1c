//! The request path without sockets: hand-picked requests, then arbitrary bytes and
//! mutated real queries (over UDP and through TCP framing) with a fake upstream and the
//! cache in between, the same checks the `dns_request` fuzz target makes.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use proptest::prelude::*;

use super::*;
use crate::config::{DomainPattern, EnhancedMode};
use crate::dns::{frame, Cache, CacheKey, FakePool, Frames};

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

fn fixture(ipv6: bool) -> Fixture {
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    Fixture {
        cfg: Dns {
            enable: true,
            ipv6,
            enhanced_mode: EnhancedMode::FakeIp,
            fake_ip_filter: vec![DomainPattern::parse("+.lan").unwrap()],
            hosts: vec![(
                DomainPattern::parse("router.home").unwrap(),
                vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            )],
            use_hosts: true,
            ..Default::default()
        },
        fake4: RefCell::new(FakePool::new(net("198.18.0.1/28")).unwrap()),
        fake6: RefCell::new(FakePool::new(net("fdfe:dcba:9876::1/120")).unwrap()),
    }
}

fn query(name: &str, kind: RecordType, edns: Option<u16>) -> Message {
    let mut q = Message::new();
    q.set_id(0x4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).unwrap(), kind));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        q.set_edns(e);
    }
    q
}

fn reply_of(step: Step) -> Message {
    match step {
        Step::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn ask(f: &Fixture, name: &str, kind: RecordType) -> Step {
    let bytes = query(name, kind, None).to_vec().unwrap();
    start(&bytes, Transport::Udp, f)
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn hosts_then_fake_then_the_nameservers() {
    let f = fixture(false);
    let m = reply_of(ask(&f, "Router.Home.", RecordType::A));
    assert_eq!((m.id(), m.response_code()), (0x4242, ResponseCode::NoError));
    assert_eq!(addrs(&m), [IpAddr::from([192, 0, 2, 1])]);
    assert_eq!(m.answers()[0].ttl(), HOSTS_TTL);
    let m = reply_of(ask(&f, "www.example.com.", RecordType::A));
    assert_eq!(addrs(&m), [IpAddr::from([198, 18, 0, 2])]);
    assert_eq!(m.answers()[0].ttl(), FAKE_TTL);
    assert_eq!(
        reply_of(ask(&f, "WWW.example.COM.", RecordType::A)).answers(),
        m.answers()
    );
    let Step::Forward(p) = ask(&f, "nas.lan.", RecordType::A) else {
        panic!("the fake-ip filter's names go to the nameservers")
    };
    assert_eq!(p.name, "nas.lan");
    assert_eq!(p.request.id(), 0x4242);
    assert!(matches!(
        ask(&f, "www.example.com.", RecordType::MX),
        Step::Forward(_)
    ));
}

#[test]
fn aaaa_and_https_of_fake_names() {
    let f = fixture(false);
    for (name, kind) in [
        ("www.example.com.", RecordType::AAAA),
        ("nas.lan.", RecordType::AAAA),
        ("www.example.com.", RecordType::HTTPS),
        ("www.example.com.", RecordType::SVCB),
    ] {
        let m = reply_of(ask(&f, name, kind));
        assert_eq!(m.response_code(), ResponseCode::NoError, "{name} {kind}");
        assert!(m.answers().is_empty(), "{name} {kind}");
    }
    assert!(matches!(
        ask(&f, "nas.lan.", RecordType::HTTPS),
        Step::Forward(_)
    ));
    let f = fixture(true);
    let m = reply_of(ask(&f, "www.example.com.", RecordType::AAAA));
    assert_eq!(addrs(&m), ["fdfe:dcba:9876::2".parse::<IpAddr>().unwrap()]);
    let m = reply_of(ask(&f, "router.home.", RecordType::AAAA));
    assert_eq!(addrs(&m), ["2001:db8::1".parse::<IpAddr>().unwrap()]);
    assert!(matches!(
        ask(&f, "nas.lan.", RecordType::AAAA),
        Step::Forward(_)
    ));
}

#[test]
fn what_cannot_be_answered() {
    let f = fixture(false);
    let m = reply_of(start(&[0x12, 0x34, 0x01], Transport::Udp, &f));
    assert_eq!((m.id(), m.response_code()), (0x1234, ResponseCode::FormErr));
    assert!(matches!(start(&[1], Transport::Udp, &f), Step::Drop));
    assert!(matches!(start(&[], Transport::Stream, &f), Step::Drop));
    // Responses, whole or broken, are never answered.
    let mut resp = query("a.example.", RecordType::A, None);
    resp.set_message_type(MessageType::Response);
    assert!(matches!(
        start(&resp.to_vec().unwrap(), Transport::Udp, &f),
        Step::Drop
    ));
    assert!(matches!(
        start(&[0x12, 0x34, 0x80], Transport::Udp, &f),
        Step::Drop
    ));
    let mut status = query("a.example.", RecordType::A, None);
    status.set_op_code(OpCode::Status);
    let m = reply_of(start(&status.to_vec().unwrap(), Transport::Udp, &f));
    assert_eq!(m.response_code(), ResponseCode::NotImp);
    let mut two = query("a.example.", RecordType::A, None);
    two.add_query(Query::query(
        Name::from_str("b.example.").unwrap(),
        RecordType::A,
    ));
    let mut none = Message::new();
    none.set_id(9).set_message_type(MessageType::Query);
    for m in [two, none] {
        let r = reply_of(start(&m.to_vec().unwrap(), Transport::Udp, &f));
        assert_eq!((r.id(), r.response_code()), (m.id(), ResponseCode::FormErr));
    }
}

/// An upstream answer with `n` A records.
fn big_answer(req: &Message, n: u8) -> Message {
    let mut r = req.clone();
    r.set_id(0x9999).set_message_type(MessageType::Response);
    for i in 0..n {
        r.add_answer(Record::from_rdata(
            req.queries()[0].name().clone(),
            300,
            RData::A(A(Ipv4Addr::new(203, 0, 113, i))),
        ));
    }
    r
}

#[test]
fn forwarded_replies_get_the_id_and_fit_the_transport() {
    let f = fixture(false);
    for (edns, transport, whole) in [
        (None, Transport::Udp, false),
        (Some(256), Transport::Udp, false),
        (Some(4096), Transport::Udp, true),
        (None, Transport::Stream, true),
    ] {
        let bytes = query("nas.lan.", RecordType::A, edns).to_vec().unwrap();
        let Step::Forward(p) = start(&bytes, transport, &f) else {
            panic!()
        };
        let out = p.finish(Some(&big_answer(&p.request, 100)));
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.id(), 0x4242);
        assert_eq!(m.truncated(), !whole, "{edns:?} {transport:?}");
        assert_eq!(m.answers().len(), if whole { 100 } else { 0 });
        if !whole {
            assert!(out.len() <= 512);
            assert_eq!(m.queries(), p.request.queries());
        }
        let m = Message::from_vec(&p.finish(None)).unwrap();
        assert_eq!(
            (m.id(), m.response_code()),
            (0x4242, ResponseCode::ServFail)
        );
        assert_eq!(m.queries(), p.request.queries());
    }
}

/// What a fake upstream says, chosen by `how`: nothing, an answer (sometimes too big for
/// UDP, sometimes echoing the request's EDNS), or NXDOMAIN with an SOA.
fn upstream(req: &Message, how: u8) -> Option<Message> {
    match how % 4 {
        0 => None,
        1 | 2 => {
            let mut r = big_answer(req, how / 4);
            if how % 4 == 2 {
                *r.extensions_mut() = req.extensions().clone();
            }
            Some(r)
        }
        _ => {
            let mut r = req.clone();
            r.set_message_type(MessageType::Response)
                .set_response_code(ResponseCode::NXDomain);
            let zone = Name::from_str("example.").unwrap();
            let soa = SOA::new(
                zone.clone(),
                zone.clone(),
                1,
                3600,
                600,
                86400,
                u32::from(how),
            );
            r.add_name_server(Record::from_rdata(zone, 300, RData::SOA(soa)));
            Some(r)
        }
    }
}

/// The invariants of the request path for one request: never a panic; a reply parses, is a
/// response, carries the request's id and, over UDP, fits the request's size.
fn check(
    bytes: &[u8],
    transport: Transport,
    f: &Fixture,
    cache: &mut Cache,
    how: u8,
) -> Result<(), TestCaseError> {
    let out = match start(bytes, transport, f) {
        Step::Drop => return Ok(()),
        Step::Reply(out) => out,
        Step::Forward(p) => {
            let now = Instant::now();
            let key = CacheKey::of(&p.request);
            let reply = upstream(&p.request, how);
            if let (Some(k), Some(r)) = (&key, &reply) {
                cache.put(k.clone(), r, now);
            }
            let hit = key.and_then(|k| cache.get(&k, now + Duration::from_secs(u64::from(how))));
            p.finish(hit.as_ref().or(reply.as_ref()))
        }
    };
    let m = Message::from_vec(&out);
    prop_assert!(m.is_ok(), "reply does not parse: {out:02x?}");
    let m = m.unwrap();
    prop_assert_eq!(m.message_type(), MessageType::Response);
    prop_assert!(bytes.len() >= 2);
    prop_assert_eq!(m.id(), u16::from_be_bytes([bytes[0], bytes[1]]));
    if transport == Transport::Udp {
        let limit = Message::from_vec(bytes)
            .ok()
            .and_then(|r| r.extensions().as_ref().map(Edns::max_payload))
            .map_or(512, |p| usize::from(p).max(512));
        prop_assert!(out.len() <= limit, "{} > {limit}", out.len());
    }
    Ok(())
}

/// Real queries, some with EDNS (a size, a client subnet), then mutated: bytes flipped,
/// cut or inserted.
fn mutated_query() -> impl Strategy<Value = Vec<u8>> {
    let kinds = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::HTTPS,
        RecordType::SVCB,
        RecordType::MX,
        RecordType::TXT,
    ];
    let name = prop_oneof![
        Just("router.home.".to_owned()),
        Just("nas.lan.".to_owned()),
        "[a-z]{1,12}\\.(example|lan)\\.".prop_map(|s| s),
    ];
    let edns = proptest::option::of((any::<u16>(), any::<bool>()));
    let edits = proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..4);
    (name, proptest::sample::select(kinds.to_vec()), edns, edits).prop_map(
        |(name, kind, edns, edits)| {
            let mut q = query(&name, kind, edns.map(|(size, _)| size));
            if let (Some((_, true)), Some(e)) = (edns, q.extensions_mut().as_mut()) {
                let subnet = ClientSubnet::new("192.0.2.0".parse().unwrap(), 24, 0);
                e.options_mut().insert(EdnsOption::Subnet(subnet));
            }
            let mut bytes = q.to_vec().unwrap();
            for (at, byte, op) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 if at < bytes.len() => bytes[at] ^= byte | 1,
                    1 => bytes.truncate(at),
                    2 => bytes.insert(at, byte),
                    _ => {}
                }
            }
            bytes
        },
    )
}

fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        mutated_query(),
        proptest::collection::vec(any::<u8>(), 0..600),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn udp_requests_never_break_the_server(bytes in request_bytes(), how in any::<u8>(), v6 in any::<bool>()) {
        let f = fixture(v6);
        check(&bytes, Transport::Udp, &f, &mut Cache::default(), how)?;
    }

    /// Several requests (and noise) on one TCP stream, cut anywhere: every whole frame is
    /// a request on its own.
    #[test]
    fn tcp_streams_never_break_the_server(
        requests in proptest::collection::vec(request_bytes(), 1..5),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
        cut in 1usize..100,
        how in any::<u8>(),
    ) {
        let f = fixture(true);
        let mut cache = Cache::default();
        let mut stream: Vec<u8> = requests.iter().flat_map(|r| frame(r).unwrap()).collect();
        stream.extend_from_slice(&tail);
        let mut frames = Frames::default();
        let mut seen = 0;
        for chunk in stream.chunks(cut) {
            frames.push(chunk);
            while let Some(msg) = frames.next_message() {
                prop_assert!(seen < requests.len() || !tail.is_empty());
                check(&msg, Transport::Stream, &f, &mut cache, how)?;
                seen += 1;
            }
        }
        prop_assert!(seen >= requests.len());
    }
}
