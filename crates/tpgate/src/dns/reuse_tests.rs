//! Connection reuse toward DoT and DoH upstreams, against real TLS servers on loopback
//! (rustls with a throwaway certificate) that count the connections they accept: many
//! queries share one connection, pipelined DoT replies are matched by id even out of order,
//! and a server closing its side leads to a new connection, never to a failed query.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;
use tpgate_core::config::parse_nameserver;
use tpgate_core::dns::{frame, Frames};

use super::upstream::Forwarder;

/// When a test server closes a connection.
#[derive(Clone, Copy)]
enum Close {
    Never,
    AfterEachAnswer,
    /// On the connection's second query, without answering it: what a client sees when
    /// the server's idle timeout strikes just as it sends.
    OnSecondQuery,
}

struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Server {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn acceptor(alpn: &[&[u8]]) -> TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["dns.test".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsAcceptor::from(Arc::new(cfg))
}

/// The answer to `q`: an A record whose last byte is the name's length, so a reply that
/// went to the wrong query shows.
fn answer(q: &Message) -> Vec<u8> {
    let question = q.queries()[0].clone();
    let len = u8::try_from(question.name().to_ascii().len()).unwrap();
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .add_answer(Record::from_rdata(
            question.name().clone(),
            60,
            RData::A(A(Ipv4Addr::new(203, 0, 113, len))),
        ))
        .add_query(question);
    r.to_vec().unwrap()
}

async fn serve<F, Fut>(alpn: &[&[u8]], per_connection: F) -> Server
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let tls = acceptor(alpn);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            if let Ok(stream) = tls.accept(tcp).await {
                tokio::spawn(per_connection(stream));
            }
        }
    });
    Server { addr, accepted }
}

/// DoT: answers every framed query on the connection; names starting with `slow` wait
/// first, so their replies come after later queries'.
async fn dot_server(close: Close) -> Server {
    serve(&[], move |stream| async move {
        let (mut rd, wr) = tokio::io::split(stream);
        let wr = Arc::new(Mutex::new(wr));
        let mut frames = Frames::default();
        let mut buf = vec![0u8; 4096];
        let mut seen = 0;
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            frames.push(&buf[..n]);
            while let Some(bytes) = frames.next_message() {
                seen += 1;
                if seen == 2 && matches!(close, Close::OnSecondQuery) {
                    let _ = wr.lock().await.shutdown().await;
                    return;
                }
                let q = Message::from_vec(&bytes).unwrap();
                let slow = q.queries()[0].name().to_ascii().starts_with("slow");
                let wr = wr.clone();
                let reply = frame(&answer(&q)).unwrap();
                let job = async move {
                    if slow {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let mut w = wr.lock().await;
                    let _ = w.write_all(&reply).await;
                    let _ = w.flush().await;
                    if matches!(close, Close::AfterEachAnswer) {
                        let _ = w.shutdown().await;
                    }
                };
                if matches!(close, Close::AfterEachAnswer) {
                    job.await;
                    return;
                }
                tokio::spawn(job);
            }
        }
    })
    .await
}

/// DoH: HTTP/1.1 POSTs, answered with a Content-Length and (unless `close`) kept alive;
/// closing says nothing beforehand (no `Connection: close`), as an idle timeout does.
async fn doh_server(close: Close) -> Server {
    serve(&[b"http/1.1"], move |mut stream| async move {
        for seen in 1.. {
            let Some(body) = read_post(&mut stream).await else {
                return;
            };
            if seen == 2 && matches!(close, Close::OnSecondQuery) {
                let _ = stream.shutdown().await;
                return;
            }
            let q = Message::from_vec(&body).unwrap();
            let reply = answer(&q);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/dns-message\r\nContent-Length: {}\r\n\r\n",
                reply.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&reply).await;
            let _ = stream.flush().await;
            if matches!(close, Close::AfterEachAnswer) {
                let _ = stream.shutdown().await;
                return;
            }
        }
    })
    .await
}

/// One request's body; `None` at the end of the connection.
async fn read_post<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

fn forwarder(url: &str) -> Forwarder {
    let cfg = tpgate_core::config::Dns {
        enable: true,
        nameserver: vec![parse_nameserver(url).unwrap().0],
        ..Default::default()
    };
    Forwarder::new(&cfg, 0).unwrap()
}

/// Asks `name` and checks the reply is the one for `name`.
async fn ask(f: &Forwarder, name: &str) {
    let mut q = Message::new();
    q.set_id(0x77)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    let reply = f
        .forward(name, &q)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(reply.id(), 0x77);
    assert_eq!(reply.queries()[0].name().to_ascii(), name);
    let len = u8::try_from(name.len()).unwrap();
    assert!(
        matches!(reply.answers()[0].data(), RData::A(a) if a.0 == Ipv4Addr::new(203, 0, 113, len)),
        "{name}: {reply:?}"
    );
}

fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let slow = if i % 3 == 0 { "slow" } else { "q" };
            format!("{slow}{}.{}.example.", "x".repeat(i % 7), i)
        })
        .collect()
}

#[tokio::test]
async fn dot_queries_share_one_pipelined_connection() {
    let server = dot_server(Close::Never).await;
    let f = forwarder(&format!("tls://{}#skip-cert-verify=true", server.addr));
    for name in &names(5) {
        ask(&f, name).await;
    }
    // Concurrent queries, some answered late: one connection, every reply to its query.
    let all = names(24);
    futures::future::join_all(all.iter().map(|n| ask(&f, n))).await;
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn dot_reconnects_when_the_server_closes() {
    let server = dot_server(Close::AfterEachAnswer).await;
    let f = forwarder(&format!("tls://{}#skip-cert-verify=true", server.addr));
    for name in ["a.example.", "bb.example.", "ccc.example."] {
        ask(&f, name).await;
        // Sometimes the close is seen before the next query, sometimes only after it
        // was sent: both must end in an answer.
        tokio::task::yield_now().await;
    }
    assert_eq!(server.accepted(), 3);
}

#[tokio::test]
async fn dot_asks_again_when_a_kept_connection_closes_under_a_query() {
    let server = dot_server(Close::OnSecondQuery).await;
    let f = forwarder(&format!("tls://{}#skip-cert-verify=true", server.addr));
    ask(&f, "a.example.").await;
    ask(&f, "bb.example.").await;
    assert_eq!(
        server.accepted(),
        2,
        "the second query went out again on a new connection"
    );
}

#[tokio::test]
async fn doh_asks_again_when_a_kept_connection_closes_under_a_query() {
    let server = doh_server(Close::OnSecondQuery).await;
    let f = forwarder(&format!(
        "https://{}/dns-query#skip-cert-verify=true",
        server.addr
    ));
    ask(&f, "a.example.").await;
    ask(&f, "bb.example.").await;
    assert_eq!(
        server.accepted(),
        2,
        "the second query went out again on a new connection"
    );
}

#[tokio::test]
async fn doh_keeps_its_connection_alive() {
    let server = doh_server(Close::Never).await;
    let f = forwarder(&format!(
        "https://{}/dns-query#skip-cert-verify=true",
        server.addr
    ));
    for name in &names(10) {
        ask(&f, name).await;
    }
    assert_eq!(server.accepted(), 1);
    // HTTP/1.1 has one request per connection at a time: concurrency opens a few more,
    // which are kept for what follows.
    let all = names(3);
    futures::future::join_all(all.iter().map(|n| ask(&f, n))).await;
    let after_burst = server.accepted();
    assert!(after_burst <= 3, "{after_burst}");
    for name in &names(6) {
        ask(&f, name).await;
    }
    assert_eq!(server.accepted(), after_burst);
}

#[tokio::test]
async fn doh_reconnects_when_the_server_closes() {
    let server = doh_server(Close::AfterEachAnswer).await;
    let f = forwarder(&format!(
        "https://{}/dns-query#skip-cert-verify=true",
        server.addr
    ));
    for name in ["a.example.", "bb.example.", "ccc.example.", "dddd.example."] {
        ask(&f, name).await;
    }
    assert_eq!(server.accepted(), 4);
}
