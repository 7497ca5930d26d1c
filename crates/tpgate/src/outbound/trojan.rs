//! Trojan upstream: TLS (and a WebSocket or gRPC carrier inside it), then the password
//! hash and the request, then the stream itself; UDP packets are framed over the same kind
//! of stream. Trojan has no reply: a server
//! refusing the password closes (or serves its fallback), so a TCP stream that ends before
//! a single byte came back is logged once, naming the likely causes.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tpgate_core::net::Destination;
use tpgate_core::proto::trojan::{self, Command, PasswordHash};
use tracing::info;

use super::error::HandshakeError;
use super::transport::{Link, Transport};
use super::udp::{UdpRecv, UdpSend};
use super::BoxIo;

pub(crate) struct Trojan {
    /// The proxy's name, for the one log line a silent close gets.
    name: String,
    hash: PasswordHash,
    /// TLS, and the WebSocket or gRPC carrier inside it when configured.
    transport: Transport,
}

impl std::fmt::Debug for Trojan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trojan")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Trojan {
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    pub(crate) fn new(name: &str, password: &str, transport: Transport) -> Self {
        Self {
            name: name.to_owned(),
            hash: PasswordHash::new(password),
            transport,
        }
    }

    async fn open(&self, link: Link, cmd: Command, dst: &Destination) -> io::Result<BoxIo> {
        let mut io = self.transport.open(link).await?;
        let mut out = Vec::with_capacity(128);
        trojan::encode_request(&self.hash, cmd, dst, &mut out).map_err(HandshakeError::request)?;
        io.write_all(&out).await?;
        io.flush().await?;
        Ok(io)
    }

    pub(crate) async fn connect(&self, link: Link, dst: &Destination) -> io::Result<BoxIo> {
        let inner = self.open(link, Command::Connect, dst).await?;
        Ok(Box::new(Watched {
            inner,
            name: Some(self.name.clone()),
        }))
    }

    pub(crate) async fn udp(
        &self,
        link: Link,
        dst: &Destination,
    ) -> io::Result<(UdpSend, UdpRecv)> {
        let io = self.open(link, Command::UdpAssociate, dst).await?;
        let (rd, wr) = tokio::io::split(io);
        Ok((
            UdpSend::Trojan {
                wr,
                buf: Vec::with_capacity(2048),
            },
            UdpRecv::Trojan {
                rd,
                acc: Vec::with_capacity(4096),
            },
        ))
    }
}

/// A Trojan TCP stream that logs once if it ends before any byte came back.
struct Watched {
    inner: BoxIo,
    /// The proxy's name until the first byte (or the one log line).
    name: Option<String>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        match &r {
            Ok(()) if buf.filled().len() > before => self.name = None,
            Ok(()) => {
                if let Some(name) = self.name.take() {
                    info!(
                        "{name}: the Trojan server closed before sending anything; a wrong \
                         password, or the destination said nothing"
                    );
                }
            }
            Err(e) => self.failed(e),
        }
        Poll::Ready(r)
    }
}

impl Watched {
    /// A read or write failing before any reply: the same refusal seen from either side
    /// (the relay may be writing the client's first bytes when the server resets).
    fn failed(&mut self, e: &io::Error) {
        if let Some(name) = self.name.take() {
            info!(
                "{name}: the Trojan stream failed before any reply ({e}); a wrong password, \
                 or not a Trojan server"
            );
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = ready!(Pin::new(&mut self.inner).poll_write(cx, buf));
        if let Err(e) = &r {
            self.failed(e);
        }
        Poll::Ready(r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        if let Err(e) = &r {
            self.failed(e);
        }
        Poll::Ready(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
