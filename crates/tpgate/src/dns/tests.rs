//! The answer logic in-process: a real UDP upstream on loopback (hickory-built answers),
//! the server's `handle` fed wire-format queries. No namespaces needed (the e2e tests in
//! tests/e2e_dns.rs cover the lab).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tpgate_core::config::{parse_nameserver, DomainPattern, EnhancedMode};

use super::{Dns, FakeName};

const REAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

/// An upstream answering every A query with [`REAL`]; counts the queries.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            seen.fetch_add(1, Ordering::Relaxed);
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .add_queries(q.queries().iter().cloned());
            if q.queries()[0].query_type() == RecordType::A {
                r.add_answer(Record::from_rdata(
                    q.queries()[0].name().clone(),
                    300,
                    RData::A(A(REAL)),
                ));
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    (addr, count)
}

fn dns(mode: EnhancedMode, upstream: SocketAddr) -> Arc<Dns> {
    let cfg = tpgate_core::config::Dns {
        enable: true,
        enhanced_mode: mode,
        fake_ip_filter: vec![DomainPattern::parse("+.lan").unwrap()],
        nameserver: vec![parse_nameserver(&format!("udp://{upstream}")).unwrap().0],
        hosts: vec![(
            DomainPattern::parse("router.home").unwrap(),
            vec!["192.0.2.1".parse().unwrap()],
        )],
        ..Default::default()
    };
    let state = std::env::temp_dir().join(format!("tpgate-dns-unit-{}", std::process::id()));
    Dns::new(&cfg, 0, &state.display().to_string()).unwrap()
}

async fn ask(dns: &Dns, name: &str, kind: RecordType) -> Message {
    let mut q = Message::new();
    q.set_id(7)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).unwrap(), kind));
    let reply = dns.handle(&q.to_vec().unwrap(), true).await.unwrap();
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.id(), 7);
    m
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn fake_ip_answers() {
    let (up, count) = upstream().await;
    let d = dns(EnhancedMode::FakeIp, up);
    let a = addrs(&ask(&d, "www.example.com.", RecordType::A).await);
    assert_eq!(a, [IpAddr::from([198, 18, 0, 2])]);
    assert_eq!(addrs(&ask(&d, "WWW.Example.com.", RecordType::A).await), a);
    assert!(matches!(d.fake_name(a[0]), FakeName::Name(n) if n == "www.example.com"));
    assert!(matches!(
        d.fake_name("198.18.9.9".parse().unwrap()),
        FakeName::Unknown
    ));
    assert!(matches!(d.fake_name(REAL.into()), FakeName::NotFake));
    // AAAA without a v6 range, HTTPS of a fake name: empty NOERROR
    for kind in [RecordType::AAAA, RecordType::HTTPS] {
        let m = ask(&d, "www.example.com.", kind).await;
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
    }
    // hosts, then the filter's real answer
    assert_eq!(
        addrs(&ask(&d, "router.home.", RecordType::A).await),
        [IpAddr::from([192, 0, 2, 1])]
    );
    assert_eq!(count.load(Ordering::Relaxed), 0);
    assert_eq!(
        addrs(&ask(&d, "nas.lan.", RecordType::A).await),
        [IpAddr::V4(REAL)]
    );
    assert_eq!(count.load(Ordering::Relaxed), 1);
    // DIRECT resolution of a fake name goes upstream, never to the fake table
    assert_eq!(
        d.resolve("www.example.com").await.unwrap(),
        IpAddr::V4(REAL)
    );
}

#[tokio::test]
async fn redir_host_maps_and_caches() {
    let (up, count) = upstream().await;
    let d = dns(EnhancedMode::RedirHost, up);
    for _ in 0..3 {
        let m = ask(&d, "video.example.", RecordType::A).await;
        assert_eq!(addrs(&m), [IpAddr::V4(REAL)]);
    }
    assert_eq!(count.load(Ordering::Relaxed), 1, "cached");
    assert_eq!(d.mapped_name(REAL.into()).as_deref(), Some("video.example"));
    assert!(matches!(d.fake_name(REAL.into()), FakeName::NotFake));
    // malformed input: FORMERR with the id, or nothing at all (also for anything that
    // says it is a response)
    let reply = d.handle(&[0x12, 0x34, 0x01], true).await.unwrap();
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!((m.id(), m.response_code()), (0x1234, ResponseCode::FormErr));
    assert!(d.handle(&[1], true).await.is_none());
    assert!(d.handle(&[0x12, 0x34, 0xff], true).await.is_none());
}

#[tokio::test]
async fn fake_ipv6_range_answers_aaaa() {
    let (up, _) = upstream().await;
    let cfg = tpgate_core::config::Dns {
        enable: true,
        ipv6: true,
        enhanced_mode: EnhancedMode::FakeIp,
        fake_ip_range6: Some("fdfe:dcba:9876::1/64".parse().unwrap()),
        nameserver: vec![parse_nameserver(&format!("udp://{up}")).unwrap().0],
        ..Default::default()
    };
    let state = std::env::temp_dir().join(format!("tpgate-dns-unit6-{}", std::process::id()));
    let d = Dns::new(&cfg, 0, &state.display().to_string()).unwrap();
    let m = ask(&d, "v6.example.", RecordType::AAAA).await;
    let ip = match m.answers().first().map(Record::data) {
        Some(RData::AAAA(a)) => IpAddr::V6(a.0),
        other => panic!("{other:?}"),
    };
    assert_eq!(ip, "fdfe:dcba:9876::2".parse::<IpAddr>().unwrap());
    assert!(matches!(d.fake_name(ip), FakeName::Name(n) if n == "v6.example"));
    // the same name's A comes from the IPv4 range
    assert_eq!(
        addrs(&ask(&d, "v6.example.", RecordType::A).await),
        [IpAddr::from([198, 18, 0, 2])]
    );
}
