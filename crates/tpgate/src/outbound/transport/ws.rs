//! The WebSocket and HTTP-upgrade carriers: the upgrade request (with early data when
//! configured: then the request waits for the tunnel's first write, whose first bytes ride
//! in it), the server's 101, and then either binary WebSocket messages (tungstenite's
//! framing) or, for `v2ray-http-upgrade`, the raw stream (with
//! `v2ray-http-upgrade-fast-open`, without waiting for the 101: it is read before the
//! first reply bytes instead).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tpgate_core::config::WsOpts;
use tpgate_core::proto::ws::{encode_upgrade, parse_upgrade_response, Upgrade, MAX_HEAD_LEN};

use crate::outbound::error::HandshakeError;
use crate::outbound::framing::{read_msg, with_prefix};
use crate::outbound::BoxIo;

/// One proxy's WebSocket settings.
#[derive(Debug)]
pub(super) struct WsClient {
    opts: WsOpts,
    /// The `Host` header when `headers` has none.
    host: String,
}

impl WsClient {
    pub(super) fn new(opts: &WsOpts, host: String) -> Self {
        Self {
            opts: opts.clone(),
            host,
        }
    }

    /// Sends the upgrade request carrying `early` (the tunnel's first bytes, possibly none)
    /// and reads the 101.
    async fn upgrade(&self, mut io: BoxIo, early: &[u8]) -> io::Result<BoxIo> {
        let key = (!self.opts.http_upgrade).then(rand::random::<[u8; 16]>);
        let header = self
            .opts
            .early_data
            .as_ref()
            .and_then(|e| e.header.as_deref());
        let req = Upgrade {
            host: &self.host,
            path: &self.opts.path,
            headers: &self.opts.headers,
            key,
            early_data: (!early.is_empty()).then_some((header, early)),
        };
        let mut out = Vec::with_capacity(256);
        encode_upgrade(&req, &mut out).map_err(HandshakeError::request)?;
        io.write_all(&out).await?;
        io.flush().await?;
        if self.opts.fast_open {
            return Ok(Box::new(HeadFirst {
                inner: io,
                head: Some(Vec::new()),
            }));
        }
        let mut rest = Vec::new();
        read_msg(&mut io, &mut rest, |b| {
            parse_upgrade_response(b, key.as_ref()).map(|r| r.map(|used| ((), used)))
        })
        .await?;
        if self.opts.http_upgrade {
            return Ok(with_prefix(io, rest));
        }
        // Each write is sent as it comes (the relay flushes when it has nothing to read).
        let config = WebSocketConfig::default().write_buffer_size(0);
        let ws = WebSocketStream::from_partially_read(io, rest, Role::Client, Some(config)).await;
        Ok(Box::new(WsIo {
            ws,
            read: Bytes::new(),
        }))
    }
}

/// Upgrades `io` now, or, with early data, on the tunnel's first write.
pub(super) async fn open(client: std::sync::Arc<WsClient>, io: BoxIo) -> io::Result<BoxIo> {
    if client.opts.early_data.is_some() {
        return Ok(Box::new(Early {
            state: State::Idle(client, io),
            reader: None,
        }));
    }
    client.upgrade(io, &[]).await
}

type Dial = Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send>>;

/// A stream whose upgrade waits for the first write (early data).
struct Early {
    state: State,
    /// A read that came before the upgrade finished, woken when it has.
    reader: Option<Waker>,
}

enum State {
    Idle(std::sync::Arc<WsClient>, BoxIo),
    /// Upgrading with the first `usize` bytes of the first write.
    Dialing(Dial, usize),
    Open(BoxIo),
    Failed,
}

impl Early {
    /// Drives the upgrade; `Some(n)` once it finished with `n` bytes of the first write
    /// taken.
    fn poll_dial(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let State::Dialing(dial, taken) = &mut self.state else {
            return Poll::Ready(Ok(0));
        };
        let taken = *taken;
        let r = ready!(dial.as_mut().poll(cx));
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        match r {
            Ok(io) => {
                self.state = State::Open(io);
                Poll::Ready(Ok(taken))
            }
            Err(e) => {
                self.state = State::Failed;
                Poll::Ready(Err(e))
            }
        }
    }
}

fn failed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the WebSocket upgrade failed")
}

impl AsyncRead for Early {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.state {
            State::Open(io) => Pin::new(io).poll_read(cx, buf),
            State::Failed => Poll::Ready(Err(failed())),
            // The tunnel's protocols write before they read; wait for that write.
            State::Idle(..) | State::Dialing(..) => {
                self.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Early {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match &mut self.state {
                State::Open(io) => return Pin::new(io).poll_write(cx, buf),
                State::Failed => return Poll::Ready(Err(failed())),
                State::Dialing(..) => {
                    let taken = ready!(self.poll_dial(cx))?;
                    // The caller hands the same bytes again until a write returns.
                    if taken > 0 {
                        return Poll::Ready(Ok(taken));
                    }
                }
                State::Idle(..) => {
                    let State::Idle(client, io) = std::mem::replace(&mut self.state, State::Failed)
                    else {
                        continue;
                    };
                    let max = client.opts.early_data.as_ref().map_or(0, |e| e.max);
                    let early = buf[..buf.len().min(max)].to_vec();
                    let taken = early.len();
                    let dial: Dial = Box::pin(async move { client.upgrade(io, &early).await });
                    self.state = State::Dialing(dial, taken);
                }
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.state {
            State::Open(io) => Pin::new(io).poll_flush(cx),
            State::Dialing(..) => self.poll_dial(cx).map_ok(|_| ()),
            State::Idle(..) | State::Failed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.state {
            State::Open(io) | State::Idle(_, io) => Pin::new(io).poll_shutdown(cx),
            State::Dialing(..) => self.poll_dial(cx).map_ok(|_| ()),
            State::Failed => Poll::Ready(Ok(())),
        }
    }
}

/// An HTTP upgrade sent without waiting (fast open): the first read takes the server's 101
/// off the front of the stream.
struct HeadFirst {
    inner: BoxIo,
    /// What has arrived of the response head; `None` once it has been read.
    head: Option<Vec<u8>>,
}

impl AsyncRead for HeadFirst {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while let Some(acc) = &mut self.head {
            match parse_upgrade_response(acc, None) {
                Ok(Some(used)) => {
                    let rest = acc.split_off(used);
                    self.head = None;
                    if !rest.is_empty() {
                        let inner =
                            std::mem::replace(&mut self.inner, Box::new(tokio::io::empty()));
                        self.inner = with_prefix(inner, rest);
                    }
                    break;
                }
                Ok(None) if acc.len() >= MAX_HEAD_LEN => {
                    return Poll::Ready(Err(HandshakeError::ReplyTooLong.into()));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(HandshakeError::Reply(e.into()).into())),
            }
            let mut piece = [0u8; 1024];
            let mut rb = ReadBuf::new(&mut piece);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Err(HandshakeError::Closed.into()));
            }
            if let Some(acc) = &mut self.head {
                acc.extend_from_slice(rb.filled());
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HeadFirst {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Binary WebSocket messages as a byte stream.
struct WsIo {
    ws: WebSocketStream<BoxIo>,
    /// What is left of the message being read.
    read: Bytes,
}

fn ws_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed")
        }
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

impl AsyncRead for WsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.read.is_empty() {
            let data = match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Text(t))) => Bytes::from(t),
                // Pings are answered by tungstenite on the next read or write.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            };
            self.read = data;
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        let _ = self.read.split_to(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_error)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_error)
    }

    /// A WebSocket has no half-close: a Close frame ends both directions, and the server
    /// drops the reply still coming (mihomo and sing-box close the whole connection here,
    /// losing it). So the client's half-close only flushes, and the reply keeps flowing;
    /// the destination does not learn of the half-close, and the connection closes when
    /// the tunnel is dropped.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_error)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tpgate_core::config::EarlyData;

    use super::*;

    /// A tungstenite server on a port-0 listener: records the request's path and `header`
    /// value, and echoes every binary message.
    async fn server(header: &'static str) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            // tungstenite's callback type fixes the error variant's size.
            #[allow(clippy::result_large_err)]
            let cb = |req: &Request, resp: Response| {
                let mut r = record.lock().unwrap();
                r.push(req.uri().to_string());
                if let Some(v) = req.headers().get(header) {
                    r.push(v.to_str().unwrap().to_owned());
                }
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(s, cb).await.unwrap();
            while let Some(Ok(m)) = ws.next().await {
                if m.is_binary() {
                    ws.send(m).await.unwrap();
                }
            }
        });
        (addr, seen)
    }

    fn client(early: Option<EarlyData>) -> Arc<WsClient> {
        let opts = WsOpts {
            path: "/ray".into(),
            headers: vec![("Host".into(), "cdn.example".into())],
            early_data: early,
            http_upgrade: false,
            fast_open: false,
        };
        Arc::new(WsClient::new(&opts, "192.0.2.1".into()))
    }

    #[tokio::test]
    async fn early_data_rides_the_header_and_the_rest_follows_as_messages() {
        let (addr, seen) = server("sec-websocket-protocol").await;
        let c = client(Some(EarlyData {
            max: 4,
            header: Some("Sec-WebSocket-Protocol".into()),
        }));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut s = open(c, Box::new(tcp)).await.unwrap();
        s.write_all(b"hello world").await.unwrap();
        s.flush().await.unwrap();
        let mut got = [0u8; 7];
        s.read_exact(&mut got).await.unwrap();
        // The server saw "hell" in the header (sing-box and Xray put it first in the
        // stream) and echoed the message carrying the rest.
        assert_eq!(&got, b"o world");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, ["/ray", "aGVsbA"]);
    }

    #[tokio::test]
    async fn without_early_data_the_upgrade_happens_at_once() {
        let (addr, seen) = server("host").await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut s = open(client(None), Box::new(tcp)).await.unwrap();
        assert_eq!(seen.lock().unwrap().clone(), ["/ray", "cdn.example"]);
        s.write_all(b"ping").await.unwrap();
        s.flush().await.unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    }

    #[tokio::test]
    async fn a_refused_upgrade_is_an_error_naming_the_status() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = open(client(None), Box::new(tcp)).await.err().unwrap();
        assert!(err.to_string().contains("404 Not Found"), "{err}");
    }
}
