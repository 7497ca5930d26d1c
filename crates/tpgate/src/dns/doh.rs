//! DNS over HTTPS (RFC 8484: POST of application/dns-message) over HTTP/1.1 with kept-alive
//! connections: a finished exchange puts its connection back, the next query takes it. An
//! HTTP/1.1 connection carries one request at a time, so concurrent queries open more; a
//! few stay open. A kept connection the server closed in the meantime costs one retry on a
//! new one, never a failed query. (HTTP/2 would multiplex on one connection, but hyper's
//! `http2` feature brings the `h2` crate, which is not in the tree.)

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hickory_proto::op::Message;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use tokio::io::{AsyncRead, AsyncWrite};
use tpgate_core::config::Nameserver;
use tracing::debug;

use super::error::UpstreamError;

/// Kept connections per server beyond those in use.
const MAX_IDLE: usize = 4;
/// A kept connection unused this long is closed rather than reused.
const IDLE: Duration = Duration::from_secs(30);

type Sender = SendRequest<Full<Bytes>>;

/// The kept-alive connections to one DoH server.
#[derive(Default)]
pub(crate) struct DohPool {
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl std::fmt::Debug for DohPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DohPool")
    }
}

/// Why an exchange failed: the connection (worth a retry on a new one when it was a kept
/// one), or the server's answer.
enum Failure {
    Connection(UpstreamError),
    Answer(UpstreamError),
}

impl DohPool {
    /// POSTs `query` to `ns` on a kept connection, or on a new one from `connect` (a TLS
    /// stream that negotiated HTTP/1.1).
    pub(crate) async fn exchange<C, F, S>(
        &self,
        ns: &Nameserver,
        query: &[u8],
        connect: C,
    ) -> io::Result<Message>
    where
        C: Fn() -> F,
        F: Future<Output = io::Result<S>>,
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        loop {
            let (mut sender, fresh) = match self.take().await {
                Some(s) => (s, false),
                None => (handshake(connect().await?).await?, true),
            };
            match post(&mut sender, ns, query).await {
                Ok(reply) => {
                    self.put(sender);
                    return Ok(reply);
                }
                Err(Failure::Connection(e)) if !fresh => {
                    debug!(
                        "doh {}: kept connection failed ({e}); asking on a new one",
                        ns.text
                    );
                }
                Err(Failure::Connection(e) | Failure::Answer(e)) => return Err(e.into()),
            }
        }
    }

    /// A kept connection that is still open and ready for a request.
    async fn take(&self) -> Option<Sender> {
        loop {
            let (mut sender, since) = self.lock().pop()?;
            if since.elapsed() >= IDLE || sender.is_closed() {
                continue;
            }
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Sender, Instant)>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An HTTP/1.1 client connection on `stream`, driven by its own task until it closes.
async fn handshake<S>(stream: S) -> io::Result<Sender>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) = http1::handshake(io).await.map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!("doh connection: {e}");
        }
    });
    Ok(sender)
}

async fn post(sender: &mut Sender, ns: &Nameserver, query: &[u8]) -> Result<Message, Failure> {
    let authority = match (ns.host.parse::<IpAddr>(), ns.port) {
        (Ok(IpAddr::V6(ip)), 443) => format!("[{ip}]"),
        (Ok(IpAddr::V6(ip)), p) => format!("[{ip}]:{p}"),
        (_, 443) => ns.host.clone(),
        (_, p) => format!("{}:{p}", ns.host),
    };
    let req = hyper::Request::post(ns.path.as_str())
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/dns-message")
        .header(hyper::header::ACCEPT, "application/dns-message")
        .body(Full::new(Bytes::copy_from_slice(query)))
        .map_err(|e| Failure::Answer(UpstreamError::Request(e)))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Failure::Connection(UpstreamError::Http(e)))?;
    if !resp.status().is_success() {
        return Err(Failure::Answer(UpstreamError::Status(resp.status())));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::Answer(UpstreamError::Http(e)))?
        .to_bytes();
    Message::from_vec(&body).map_err(|e| Failure::Answer(UpstreamError::Malformed(e)))
}
