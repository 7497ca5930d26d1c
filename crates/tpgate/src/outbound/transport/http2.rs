//! The carriers over one HTTP/2 request: gRPC (V2Ray's "gun": a POST to `/<service>/Tun`
//! whose bodies carry the tunnel's bytes in gun messages, `tpgate_core::proto::gun`) and
//! V2Ray's `h2` (a PUT whose bodies are the tunnel's bytes as they are), inside TLS with
//! ALPN `h2` or cleartext with prior knowledge. gRPC tunnels share one HTTP/2 connection per
//! proxy, as mihomo's do, when it is dialed straight from the gateway: each tunnel is a
//! request on it while it lives and has room for another stream; otherwise a new connection
//! is dialed (and shared from then on). `h2` tunnels, and tunnels reaching the server
//! through other hops, have a connection each, ending with the tunnel. HTTP/2 is the `h2`
//! crate's. Writes wait for HTTP/2 flow-control credit, so a fast client cannot make tpgate
//! buffer without bound.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use axum::http::{Request, StatusCode};
use bytes::{Buf, Bytes};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tpgate_core::proto::gun;
use tracing::debug;

use crate::outbound::error::HandshakeError;
use crate::outbound::BoxIo;

/// Largest piece of the tunnel put in one message (gRPC servers accept 4 MiB by default).
const MAX_PIECE: usize = 32 * 1024;

/// The receive window tpgate grants the server: how much it may send ahead of the relay's
/// reads (which take it as it comes, so this bounds memory rather than fills it)...
const WINDOW: u32 = 4 * 1024 * 1024;
/// ...per tunnel, and on a shared connection for all its tunnels together.
const SHARED_WINDOW: u32 = 16 * 1024 * 1024;
/// A shared connection is pinged this often...
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// ...and dropped when the answer takes longer than this.
const PING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How the tunnel's bytes travel in the bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// gRPC messages holding protobuf field 1.
    Gun,
    /// As they are.
    Raw,
}

/// One proxy's HTTP/2 carrier settings.
#[derive(Debug)]
pub(super) struct Http2Client {
    method: &'static str,
    /// Where requests go: `https://host/service/Tun` (or `http://` without TLS); for `h2`
    /// one per configured host, picked at random per tunnel.
    uris: Vec<String>,
    framing: Framing,
    /// gRPC: the connection tunnels share (a handle to it), once one was dialed straight.
    shared: Option<Mutex<Option<SendRequest<Bytes>>>>,
}

fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

impl Http2Client {
    /// gRPC (gun) to `service` at `authority`.
    pub(super) fn grpc(service: &str, authority: &str, tls: bool) -> Self {
        Self {
            method: "POST",
            uris: vec![format!("{}://{authority}/{service}/Tun", scheme(tls))],
            framing: Framing::Gun,
            shared: Some(Mutex::new(None)),
        }
    }

    /// V2Ray's `h2` to `path` at one of `hosts`.
    pub(super) fn h2(hosts: &[String], path: &str, tls: bool) -> Self {
        Self {
            method: "PUT",
            uris: hosts
                .iter()
                .map(|h| format!("{}://{h}{path}", scheme(tls)))
                .collect(),
            framing: Framing::Raw,
            shared: None,
        }
    }

    /// A tunnel over a new HTTP/2 connection on `io`; with `share` (`io` was dialed
    /// straight to the server), gRPC's later tunnels may use the same connection.
    pub(super) async fn open(&self, io: BoxIo, share: bool) -> io::Result<BoxIo> {
        let shared = self.shared.as_ref().filter(|_| share);
        // HTTP/2's default 64 KiB windows would hold a tunnel to 64 KiB per round trip.
        let window = if shared.is_some() {
            SHARED_WINDOW
        } else {
            WINDOW
        };
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(WINDOW)
            .initial_connection_window_size(window)
            .handshake(io)
            .await
            .map_err(h2_error)?;
        let mut conn = conn;
        // A shared connection is pinged while it lives: one whose server stopped answering
        // (a NAT that forgot it, a server gone without a word) is dropped, and the next
        // tunnel dials anew instead of waiting on it.
        let mut pings = shared.and_then(|_| conn.ping_pong());
        tokio::spawn(async move {
            let ended = loop {
                tokio::select! {
                    r = &mut conn => break r.map_err(|e| e.to_string()),
                    answered = keepalive(pings.as_mut()) => if !answered {
                        break Err(format!("no answer to a ping within {PING_WAIT:?}"));
                    },
                }
            };
            if let Err(e) = ended {
                debug!("gRPC transport connection ended: {e}");
            }
        });
        let client = client.ready().await.map_err(h2_error)?;
        if let Some(slot) = shared {
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(client.clone());
            }
        }
        self.request(client)
    }

    /// A tunnel on the shared connection, if there is one that is alive and can take
    /// another stream now (else the caller dials a new one).
    pub(super) fn open_shared(&self) -> Option<io::Result<BoxIo>> {
        let slot = self.shared.as_ref()?;
        let mut client = slot.lock().ok()?.clone()?;
        let waker = std::task::Waker::noop();
        match client.poll_ready(&mut Context::from_waker(waker)) {
            Poll::Ready(Ok(())) => Some(self.request(client)),
            Poll::Ready(Err(e)) => {
                debug!("the shared gRPC connection ended: {e}");
                if let Ok(mut slot) = slot.lock() {
                    *slot = None;
                }
                None
            }
            // Every stream the server allows is open: another connection takes this one.
            Poll::Pending => None,
        }
    }

    /// The tunnel's request on `client`, which is ready for it.
    fn request(&self, mut client: SendRequest<Bytes>) -> io::Result<BoxIo> {
        let uri = match self.uris.len() {
            0 | 1 => self.uris.first().map_or("", String::as_str),
            n => &self.uris[rand::random_range(0..n)],
        };
        let req = match self.framing {
            Framing::Gun => Request::post(uri)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("user-agent", "grpc-go/1.36.0"),
            Framing::Raw => Request::builder()
                .method(self.method)
                .uri(uri)
                .header("accept-encoding", "identity"),
        };
        let req = req.body(()).map_err(HandshakeError::request)?;
        let (response, send) = client.send_request(req, false).map_err(h2_error)?;
        Ok(Box::new(Call {
            framing: self.framing,
            send,
            pending: Bytes::new(),
            recv: Recv::Waiting(response),
            acc: Vec::new(),
            out: Bytes::new(),
        }))
    }
}

/// Waits [`PING_EVERY`], pings, and says whether the answer came within [`PING_WAIT`];
/// without `pings` (an unshared connection), never ends.
async fn keepalive(pings: Option<&mut h2::PingPong>) -> bool {
    let Some(pings) = pings else {
        return std::future::pending().await;
    };
    tokio::time::sleep(PING_EVERY).await;
    matches!(
        tokio::time::timeout(PING_WAIT, pings.ping(h2::Ping::opaque())).await,
        Ok(Ok(_))
    )
}

fn h2_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"));
    }
    io::Error::other(e)
}

enum Recv {
    /// The response head has not come yet.
    Waiting(ResponseFuture),
    Body(RecvStream),
    Done,
}

/// The tunnel over one HTTP/2 request.
struct Call {
    framing: Framing,
    send: SendStream<Bytes>,
    /// Encoded messages not yet handed to HTTP/2 (waiting for flow-control credit).
    pending: Bytes,
    recv: Recv,
    /// Response body bytes not yet a whole message (gun).
    acc: Vec<u8>,
    /// Tunnel bytes decoded but not yet read.
    out: Bytes,
}

impl Call {
    /// Hands `pending` to HTTP/2 as credit allows; ready when all of it went.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            self.send.reserve_capacity(self.pending.len());
            let credit = match ready!(self.send.poll_capacity(cx)) {
                Some(c) => c.map_err(h2_error)?,
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            };
            let n = credit.min(self.pending.len());
            if n == 0 {
                continue;
            }
            let chunk = self.pending.split_to(n);
            self.send.send_data(chunk, false).map_err(h2_error)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Decodes every whole message in `acc` into `out`.
    fn decode(&mut self) -> io::Result<()> {
        let mut data = Vec::new();
        let mut used = 0;
        while let Some((msg, n)) = gun::parse_message(&self.acc[used..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            for piece in msg.pieces() {
                data.extend_from_slice(piece);
            }
            used += n;
        }
        self.acc.drain(..used);
        self.out = Bytes::from(data);
        Ok(())
    }
}

impl AsyncRead for Call {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.out.is_empty() {
                let n = self.out.len().min(buf.remaining());
                buf.put_slice(&self.out[..n]);
                self.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            match &mut self.recv {
                Recv::Waiting(response) => {
                    let head = ready!(Pin::new(response).poll(cx)).map_err(h2_error)?;
                    if head.status() != StatusCode::OK {
                        let e = format!("the HTTP/2 server answered {}", head.status());
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                    self.recv = Recv::Body(head.into_body());
                }
                Recv::Body(body) => match ready!(body.poll_data(cx)) {
                    Some(Ok(bytes)) => {
                        let _ = body.flow_control().release_capacity(bytes.len());
                        if self.framing == Framing::Raw {
                            self.out = bytes;
                        } else {
                            self.acc.extend_from_slice(&bytes);
                            self.decode()?;
                        }
                    }
                    Some(Err(e)) => return Poll::Ready(Err(h2_error(e))),
                    None => {
                        self.recv = Recv::Done;
                        if !self.acc.is_empty() {
                            let e = "the gRPC stream ended inside a message";
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                e,
                            )));
                        }
                    }
                },
                Recv::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

use std::future::Future as _;

impl AsyncWrite for Call {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_send(cx))?;
        let n = buf.len().min(MAX_PIECE);
        self.pending = match self.framing {
            Framing::Raw => Bytes::copy_from_slice(&buf[..n]),
            Framing::Gun => {
                let mut msg = Vec::with_capacity(n + 10);
                gun::encode_message(&buf[..n], &mut msg);
                Bytes::from(msg)
            }
        };
        // Start sending now; what credit does not cover yet goes on the next call.
        if let Poll::Ready(Err(e)) = self.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        // Ending the request body is the tunnel's half-close.
        let _ = self.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use h2::server;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Sends `data` on `s`, waiting for the peer's credit (HTTP/2's default 64 KiB window).
    async fn send_all(s: &mut SendStream<Bytes>, mut data: Bytes, end: bool) {
        while !data.is_empty() {
            s.reserve_capacity(data.len());
            let n = std::future::poll_fn(|cx| s.poll_capacity(cx))
                .await
                .unwrap()
                .unwrap();
            let chunk = data.split_to(n.min(data.len()));
            s.send_data(chunk, false).unwrap();
        }
        if end {
            s.send_data(Bytes::new(), true).unwrap();
        }
    }

    /// An h2 server (the crate's own, default windows) echoing each gun message's pieces
    /// back as one message; `raw` echoes the body as it is instead (V2Ray's `h2`).
    async fn echo_server(io: tokio::io::DuplexStream, raw: bool) -> String {
        let mut conn = server::handshake(io).await.unwrap();
        let (req, respond) = conn.accept().await.unwrap().unwrap();
        tokio::spawn(async move { while conn.accept().await.is_some() {} });
        let line = format!("{} {}", req.method(), req.uri().path());
        echo_stream(req, respond, raw).await;
        line
    }

    /// Echoes one request's body back (as `echo_server` describes).
    async fn echo_stream(
        req: Request<RecvStream>,
        mut respond: server::SendResponse<Bytes>,
        raw: bool,
    ) {
        let mut body = req.into_body();
        let resp = http::Response::builder().status(200).body(()).unwrap();
        let mut send = respond.send_response(resp, false).unwrap();
        let mut acc = BytesMut::new();
        while let Some(chunk) = body.data().await {
            // The client resets a tunnel it dropped after its echo.
            let Ok(chunk) = chunk else { return };
            let _ = body.flow_control().release_capacity(chunk.len());
            if raw {
                send_all(&mut send, chunk, false).await;
                continue;
            }
            acc.extend_from_slice(&chunk);
            while let Some((m, used)) = gun::parse_message(&acc).unwrap() {
                let mut out = Vec::new();
                gun::encode_message(&m.pieces().collect::<Vec<_>>().concat(), &mut out);
                let _ = acc.split_to(used);
                send_all(&mut send, Bytes::from(out), false).await;
            }
        }
        send_all(&mut send, Bytes::new(), true).await;
    }

    async fn echo_8_mib(client: Http2Client, raw: bool) -> String {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(echo_server(theirs, raw));
        let tunnel = client.open(Box::new(ours), false).await.unwrap();
        let (mut rd, mut wr) = tokio::io::split(tunnel);
        let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            wr.write_all(&sent).await.unwrap();
            wr.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == data, "echo differs ({} bytes back)", got.len());
        server.await.unwrap()
    }

    /// Writes `data` through `tunnel` and reads as much back.
    async fn echo_through(tunnel: BoxIo, data: &[u8]) -> Vec<u8> {
        let (mut rd, mut wr) = tokio::io::split(tunnel);
        let sent = data.to_vec();
        // Flushed: a write may leave what HTTP/2's credit did not cover for the next one.
        let writer = tokio::spawn(async move {
            wr.write_all(&sent).await.unwrap();
            wr.flush().await.unwrap();
        });
        let mut got = vec![0u8; data.len()];
        rd.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        got
    }

    /// gRPC tunnels after the first one dialed straight are requests on its connection
    /// (the server sees them all on one), echoing each its own bytes at the same time; once
    /// the connection ends, there is nothing to share and the next tunnel dials. A
    /// connection through other hops (`share` false) is never shared.
    #[tokio::test]
    async fn grpc_tunnels_share_the_connection_dialed_straight() {
        let client = Http2Client::grpc("svc", "x.test", false);
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            let mut conn = server::handshake(theirs).await.unwrap();
            while let Some(r) = conn.accept().await {
                let (req, respond) = r.unwrap();
                seen_tx.send(req.uri().path().to_owned()).unwrap();
                tokio::spawn(echo_stream(req, respond, false));
            }
        });
        let first = client.open(Box::new(ours), true).await.unwrap();
        let second = client.open_shared().expect("a shared connection").unwrap();
        let third = client.open_shared().expect("a shared connection").unwrap();
        let (a, b, c) = tokio::join!(
            echo_through(first, &[1u8; 300_000]),
            echo_through(second, &[2u8; 300_000]),
            echo_through(third, &[3u8; 1000]),
        );
        assert!(a.iter().all(|&x| x == 1) && b.iter().all(|&x| x == 2));
        assert_eq!(c, vec![3u8; 1000]);
        for _ in 0..3 {
            assert_eq!(seen.recv().await.unwrap(), "/svc/Tun");
        }
        server.abort();
        let _ = server.await;
        let mut gone = false;
        for _ in 0..200 {
            if client.open_shared().is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(gone, "a dead connection was still shared");

        let through = Http2Client::grpc("svc", "x.test", false);
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(echo_server(theirs, false));
        let t = through.open(Box::new(ours), false).await.unwrap();
        assert!(
            through.open_shared().is_none(),
            "shared a connection through hops"
        );
        assert_eq!(echo_through(t, b"hops").await, b"hops");
    }

    /// A shared connection is pinged; once its server stops answering, it is dropped and
    /// no tunnel is put on it (while answered, it stays).
    #[tokio::test(start_paused = true)]
    async fn a_shared_connection_whose_server_stops_answering_is_dropped() {
        let client = Http2Client::grpc("svc", "x.test", false);
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut conn = server::handshake(theirs).await.unwrap();
            // Serves (answering pings) until told to stop, then holds the connection
            // without reading it.
            tokio::select! {
                _ = async { while conn.accept().await.is_some() {} } => {}
                _ = stopped => {}
            }
            std::future::pending::<()>().await;
            drop(conn);
        });
        drop(client.open(Box::new(ours), true).await.unwrap());
        tokio::time::sleep(PING_EVERY * 3).await;
        assert!(client.open_shared().is_some(), "dropped while answering");
        stop.send(()).unwrap();
        tokio::time::sleep(PING_EVERY + PING_WAIT * 2).await;
        assert!(
            client.open_shared().is_none(),
            "still shared without answers"
        );
    }

    #[tokio::test]
    async fn gun_carries_8_mib_both_ways_within_flow_control() {
        let line = echo_8_mib(Http2Client::grpc("svc", "x.test", false), false).await;
        assert_eq!(line, "POST /svc/Tun");
    }

    #[tokio::test]
    async fn h2_carries_8_mib_both_ways_as_a_raw_body() {
        let hosts = ["a.test".to_owned()];
        let line = echo_8_mib(Http2Client::h2(&hosts, "/p", false), true).await;
        assert_eq!(line, "PUT /p");
    }
}
