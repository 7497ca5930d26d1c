//! Answering one request of the built-in DNS server, sans I/O: the wire bytes are parsed
//! and answered from `hosts` or the fake-ip pools when they can be; otherwise the caller
//! asks the nameservers ([`Step::Forward`]) and hands their reply to [`Pending::finish`].
//! Replies are wire bytes that fit the transport (UDP: the client's EDNS size, at least
//! 512, truncated beyond so the client retries over TCP) and always carry the request's id.
//! A request that cannot be read gets FORMERR when its id can be, nothing otherwise;
//! responses are never answered, so two servers cannot answer each other in a loop.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use crate::config::Dns;

/// mihomo answers fake addresses with TTL 1: clients ask again soon, and the same name
/// keeps its address anyway.
pub const FAKE_TTL: u32 = 1;
/// TTL of `hosts` answers and of the empty answers made here for real names.
pub const HOSTS_TTL: u32 = 10;
/// The EDNS payload size answers made here advertise (the DNS flag day value).
const EDNS_PAYLOAD: u16 = 1232;
/// What a UDP reply may always use (RFC 1035), whatever the client's EDNS says.
const MIN_UDP: usize = 512;

/// How the request came, which bounds the reply's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// TCP or another stream: up to a frame's 65535 bytes.
    Stream,
}

/// What answers made here are made from.
pub trait Tables {
    fn config(&self) -> &Dns;
    /// The fake address standing for `name` in the IPv6 pool (`v6`) or the IPv4 one,
    /// handed out now if it has none; `None` when there is no such pool.
    fn fake_addr(&self, name: &str, v6: bool) -> Option<IpAddr>;
}

/// What to do with one request.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Ask the nameservers, then send what [`Pending::finish`] makes of their reply.
    Forward(Pending),
    /// Send nothing: not even an id could be read, or it is not a query.
    Drop,
}

/// A request only the nameservers can answer.
#[derive(Debug)]
pub struct Pending {
    /// The request as parsed, to be forwarded as it is (EDNS client subnet included).
    pub request: Message,
    /// The name asked, lower case without the trailing dot (for `nameserver-policy`).
    pub name: String,
    transport: Transport,
}

impl Pending {
    /// The reply to send for the nameservers' `reply` (given the request's id, whatever
    /// id it came with), or SERVFAIL when none answered.
    pub fn finish(&self, reply: Option<&Message>) -> Vec<u8> {
        let mut reply = match reply {
            Some(r) => r.clone(),
            None => error(&self.request, ResponseCode::ServFail),
        };
        reply.set_id(self.request.id());
        encode(&reply, &self.request, self.transport)
    }
}

/// Reads one request and answers it from `tables` when it can.
pub fn start(bytes: &[u8], transport: Transport, tables: &impl Tables) -> Step {
    let Ok(req) = Message::from_vec(bytes) else {
        return match bytes {
            // The QR bit: a response is not answered, even a broken one.
            [_, _, flags, ..] if flags & 0x80 != 0 => Step::Drop,
            [a, b, ..] => Step::Reply(bare(u16::from_be_bytes([*a, *b]), ResponseCode::FormErr)),
            _ => Step::Drop,
        };
    };
    if req.message_type() != MessageType::Query {
        return Step::Drop;
    }
    let local = |m: Message| Step::Reply(encode(&m, &req, transport));
    if req.op_code() != OpCode::Query {
        return local(error(&req, ResponseCode::NotImp));
    }
    let [q] = req.queries() else {
        return local(error(&req, ResponseCode::FormErr));
    };
    let lower = q.name().to_lowercase().to_ascii();
    let name = lower.trim_end_matches('.');
    let cfg = tables.config();
    let qtype = q.query_type();
    if q.query_class() == DNSClass::IN && matches!(qtype, RecordType::A | RecordType::AAAA) {
        if let Some(ips) = cfg.host_addrs(name) {
            return local(answer(&req, q, ips, HOSTS_TTL));
        }
        let v6 = qtype == RecordType::AAAA;
        if cfg.wants_fake(name) {
            let ip = tables.fake_addr(name, v6).filter(|_| !v6 || cfg.ipv6);
            return local(answer(&req, q, ip.as_slice(), FAKE_TTL));
        }
        if v6 && !cfg.ipv6 {
            return local(answer(&req, q, &[], HOSTS_TTL));
        }
    }
    // HTTPS/SVCB answers carry address hints that would bypass the fake address.
    if matches!(qtype, RecordType::HTTPS | RecordType::SVCB) && cfg.wants_fake(name) {
        return local(answer(&req, q, &[], FAKE_TTL));
    }
    Step::Forward(Pending {
        name: name.to_owned(),
        request: req,
        transport,
    })
}

/// An answer made here: `ips` of the query's family (none: NOERROR without records).
fn answer(req: &Message, q: &Query, ips: &[IpAddr], ttl: u32) -> Message {
    let mut m = Message::new();
    m.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::NoError)
        .add_query(q.clone());
    for ip in ips {
        let data = match (ip, q.query_type()) {
            (IpAddr::V4(a), RecordType::A) => RData::A(A(*a)),
            (IpAddr::V6(a), RecordType::AAAA) => RData::AAAA(AAAA(*a)),
            _ => continue,
        };
        m.add_answer(Record::from_rdata(q.name().clone(), ttl, data));
    }
    if req.extensions().is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        m.set_edns(e);
    }
    m
}

/// An error reply echoing the question.
fn error(req: &Message, code: ResponseCode) -> Message {
    let mut m = Message::error_msg(req.id(), req.op_code(), code);
    m.set_recursion_desired(req.recursion_desired())
        .add_queries(req.queries().iter().cloned());
    m
}

/// A response header with `code` and nothing else: for bytes of which only the id could be
/// read, and as the last resort when a reply cannot be written.
fn bare(id: u16, code: ResponseCode) -> Vec<u8> {
    let [a, b] = id.to_be_bytes();
    vec![a, b, 0x80, code.low(), 0, 0, 0, 0, 0, 0, 0, 0]
}

/// `reply` as bytes within what the transport allows the request: whole, else truncated
/// (question and OPT kept), else truncated without OPT, else a bare SERVFAIL.
fn encode(reply: &Message, req: &Message, transport: Transport) -> Vec<u8> {
    let max = match transport {
        Transport::Stream => usize::from(u16::MAX),
        Transport::Udp => req
            .extensions()
            .as_ref()
            .map_or(MIN_UDP, |e| usize::from(e.max_payload()).max(MIN_UDP)),
    };
    let fits = |m: &Message| m.to_vec().ok().filter(|b| b.len() <= max);
    fits(reply)
        .or_else(|| fits(&reply.truncate()))
        .or_else(|| {
            let mut bare = reply.truncate();
            *bare.extensions_mut() = None;
            fits(&bare)
        })
        .unwrap_or_else(|| bare(req.id(), ResponseCode::ServFail))
}

#[cfg(test)]
mod tests;
