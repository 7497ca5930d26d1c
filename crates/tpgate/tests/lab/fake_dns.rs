//! A nameserver that misbehaves on demand, for the fault tests: on UDP and TCP port 53 of
//! one address in a lab namespace it answers every query as its current [`Fault`] says,
//! and counts the queries it got, so a test can tell whether tpgate asked again.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{Netns, PatientRecv};

/// The address [`Fault::OtherQuestion`] answers for `victim.example`: it must never
/// reach a client, nor the cache.
pub(crate) const VICTIM_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Never answers; TCP connections are held open without a word.
    Silent,
    /// SERVFAIL.
    ServFail,
    /// The query's id, then bytes that are no DNS message.
    Garbage,
    /// The TC bit and no records, over UDP and over TCP alike.
    Truncated,
    /// A proper answer cut short in the middle of its record.
    CutShort,
    /// The query sent back as it came (QR bit clear).
    Reflect,
    /// An answer to another question: `victim.example` A [`VICTIM_ADDR`], TTL 3600.
    OtherQuestion,
    /// A proper answer: this address for A or AAAA (the other type: no records), TTL 60.
    Good(IpAddr),
}

/// State shared with the server's threads.
struct Shared {
    fault: Mutex<Fault>,
    queries: AtomicUsize,
    stop: AtomicBool,
}

/// The running server; stopped on drop.
pub(crate) struct FakeDns {
    pub(crate) addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeDns {
    /// Listens on `addr` (UDP and TCP) inside `ns`.
    pub(crate) fn start(ns: &Netns, addr: SocketAddr, fault: Fault) -> Self {
        let (udp, tcp) = ns.enter(|| {
            let udp = UdpSocket::bind(addr).expect("bind fake DNS (UDP)");
            let tcp = TcpListener::bind(addr).expect("bind fake DNS (TCP)");
            (udp, tcp)
        });
        let shared = Arc::new(Shared {
            fault: Mutex::new(fault),
            queries: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        tcp.set_nonblocking(true).expect("nonblocking");
        let s = Arc::clone(&shared);
        let udp_thread = std::thread::spawn(move || serve_udp(&udp, &s));
        let s = Arc::clone(&shared);
        let tcp_thread = std::thread::spawn(move || serve_tcp(&tcp, &s));
        Self {
            addr,
            shared,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    /// From now on, answers as `fault` says.
    pub(crate) fn set(&self, fault: Fault) {
        *self.shared.fault.lock().expect("fault lock") = fault;
    }

    /// Queries received so far (UDP and TCP).
    pub(crate) fn queries(&self) -> usize {
        self.shared.queries.load(Ordering::SeqCst)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_udp(sock: &UdpSocket, shared: &Shared) {
    let mut buf = vec![0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = sock.recv_from_patiently(&mut buf) else {
            continue;
        };
        if let Some(out) = respond(&buf[..n], shared) {
            let _ = sock.send_to(&out, from);
        }
    }
}

fn serve_tcp(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let s = Arc::clone(shared);
                std::thread::spawn(move || serve_conn(stream, &s));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One TCP connection: length-prefixed queries until the peer closes (or the server stops).
fn serve_conn(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut q).is_err() {
            return;
        }
        let Some(out) = respond(&q, shared) else {
            // Silent: hold the connection, say nothing.
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        };
        let Ok(n) = u16::try_from(out.len()) else {
            return;
        };
        if stream.write_all(&n.to_be_bytes()).is_err() || stream.write_all(&out).is_err() {
            return;
        }
    }
}

/// The bytes to send back for `query`, as the current fault says; `None`: nothing.
fn respond(query: &[u8], shared: &Shared) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    shared.queries.fetch_add(1, Ordering::SeqCst);
    let fault = *shared.fault.lock().expect("fault lock");
    let reply = |code: ResponseCode| {
        let mut r = q.clone();
        r.set_message_type(MessageType::Response)
            .set_recursion_available(true)
            .set_response_code(code);
        r
    };
    let encode = |m: &Message| m.to_vec().expect("encode");
    match fault {
        Fault::Silent => None,
        Fault::ServFail => Some(encode(&reply(ResponseCode::ServFail))),
        Fault::Garbage => {
            let mut out = query[..2].to_vec();
            out.extend_from_slice(&[0x81, 0x80, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef]);
            out.extend_from_slice(b"this is no DNS message");
            Some(out)
        }
        Fault::Truncated => {
            let mut r = reply(ResponseCode::NoError);
            r.set_truncated(true);
            Some(encode(&r))
        }
        Fault::CutShort => {
            let mut out = encode(&good(&q, IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2))));
            out.truncate(out.len() - 3);
            Some(out)
        }
        Fault::Reflect => Some(query.to_vec()),
        Fault::OtherQuestion => {
            let victim = Name::from_str("victim.example.").expect("name");
            let mut r = reply(ResponseCode::NoError);
            r.take_queries();
            r.add_query(Query::query(victim.clone(), RecordType::A));
            r.add_answer(Record::from_rdata(victim, 3600, RData::A(A(VICTIM_ADDR))));
            Some(encode(&r))
        }
        Fault::Good(ip) => Some(encode(&good(&q, ip))),
    }
}

/// A proper answer to `q`: `ip` when its family is the one asked.
fn good(q: &Message, ip: IpAddr) -> Message {
    let mut r = q.clone();
    r.set_message_type(MessageType::Response)
        .set_recursion_available(true);
    if let Some(question) = q.queries().first() {
        let data = match (question.query_type(), ip) {
            (RecordType::A, IpAddr::V4(a)) => Some(RData::A(A(a))),
            (RecordType::AAAA, IpAddr::V6(a)) => Some(RData::AAAA(AAAA(a))),
            _ => None,
        };
        if let Some(data) = data {
            r.add_answer(Record::from_rdata(question.name().clone(), 60, data));
        }
    }
    r
}
