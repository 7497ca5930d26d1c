//! A minimal DNS client for tests that ask tpgate's DNS server: one query over UDP or TCP
//! from inside a namespace, timed, so a test can tell an answer from SERVFAIL from silence.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use super::{tcp_connect, Family, Netns, PatientRecv};

/// A query for `name`/`kind` with a random id, as bytes.
pub(crate) fn dns_query(name: &str, kind: RecordType) -> (u16, Vec<u8>) {
    let id: u16 = rand::random();
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_str(&format!("{name}.")).expect("name"),
            kind,
        ));
    (id, m.to_vec().expect("encode"))
}

/// What one query got: the reply (`None`: nothing within the wait) and how long it took.
#[derive(Debug)]
pub(crate) struct DnsExchange {
    pub(crate) reply: Option<Message>,
    pub(crate) took: Duration,
}

/// One query over UDP from inside `ns`, waiting up to `wait` for the reply with its id.
pub(crate) fn dns_udp(
    ns: &Netns,
    server: SocketAddr,
    name: &str,
    kind: RecordType,
    wait: Duration,
) -> DnsExchange {
    let (id, bytes) = dns_query(name, kind);
    let family = if server.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let sock = ns
        .enter(|| UdpSocket::bind(family.any()))
        .expect("bind DNS client");
    let start = Instant::now();
    sock.send_to(&bytes, server).expect("send DNS query");
    let mut buf = vec![0u8; 65_535];
    let reply = loop {
        let Some(left) = wait.checked_sub(start.elapsed()) else {
            break None;
        };
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let Ok((n, _)) = sock.recv_from_patiently(&mut buf) else {
            break None;
        };
        match Message::from_vec(&buf[..n]) {
            Ok(m) if m.id() == id => break Some(m),
            _ => continue,
        }
    };
    DnsExchange {
        reply,
        took: start.elapsed(),
    }
}

/// One query over TCP (length-prefixed) from inside `ns`, waiting up to `wait`.
pub(crate) fn dns_tcp(
    ns: &Netns,
    server: SocketAddr,
    name: &str,
    kind: RecordType,
    wait: Duration,
) -> DnsExchange {
    let (id, bytes) = dns_query(name, kind);
    let start = Instant::now();
    let ask = || -> Option<Message> {
        let mut s = tcp_connect(ns, server).ok()?;
        s.set_read_timeout(Some(wait)).ok()?;
        let len = u16::try_from(bytes.len()).ok()?;
        s.write_all(&len.to_be_bytes()).ok()?;
        s.write_all(&bytes).ok()?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).ok()?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).ok()?;
        Message::from_vec(&buf).ok().filter(|m| m.id() == id)
    };
    let reply = ask();
    DnsExchange {
        reply,
        took: start.elapsed(),
    }
}
