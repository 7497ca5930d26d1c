//! VLESS upstream: optional TLS, then the request header, then the stream itself. The
//! server answers with its response header only together with its first bytes, so the
//! handshake does not wait for it (a client-first protocol would deadlock): the returned
//! stream strips it from the first read instead, and a server that closes before sending
//! it (a wrong uuid) ends the connection with an error logged once. UDP uses the same
//! stream with length-prefixed packets. With `flow: xtls-rprx-vision` the stream is a
//! [`VisionStream`] instead, and UDP goes as XUDP on a Mux request (what Xray and sing-box
//! servers take from a Vision user).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tpgate_core::config::VlessFlow;
use tpgate_core::net::Destination;
use tpgate_core::proto::vision;
use tpgate_core::proto::vless::{self, Command, Uuid};
use tracing::info;

use super::error::HandshakeError;
use super::transport::{Link, Transport};
use super::udp::{UdpRecv, UdpSend};
use super::vision::VisionStream;
use super::BoxIo;

#[derive(Debug)]
pub(crate) struct Vless {
    /// The proxy's name, for the one log line a refused connection gets.
    name: String,
    uuid: Uuid,
    /// TLS and/or the WebSocket or gRPC carrier, when configured.
    transport: Transport,
    /// XTLS Vision (the config made sure it has TLS straight over TCP).
    flow: Option<VlessFlow>,
}

/// Why a Vision proxy does not carry a flow.
#[derive(Debug, thiserror::Error)]
enum FlowError {
    #[error("{0}: XTLS Vision refuses UDP to port 443 (QUIC falls back to TCP; flow xtls-rprx-vision-udp443 allows it)")]
    Udp443(String),
    #[error("{0}: XTLS Vision needs TLS straight over TCP")]
    NoTls(String),
}

impl Vless {
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    pub(crate) fn new(
        name: &str,
        uuid: Uuid,
        transport: Transport,
        flow: Option<VlessFlow>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            uuid,
            transport,
            flow,
        }
    }

    async fn open(&self, link: Link, cmd: Command, dst: &Destination) -> io::Result<BoxIo> {
        if self.flow.is_some() {
            return self.open_vision(link.into_io(), cmd, dst).await;
        }
        let mut io = self.transport.open(link).await?;
        let mut out = Vec::with_capacity(64);
        vless::encode_request(&self.uuid, cmd, dst, &mut out).map_err(HandshakeError::request)?;
        io.write_all(&out).await?;
        io.flush().await?;
        Ok(Box::new(VlessStream {
            inner: io,
            header: Some(Vec::new()),
            name: self.name.clone(),
        }))
    }

    /// TLS driven record by record, then the request naming the flow.
    async fn open_vision(
        &self,
        mut io: BoxIo,
        cmd: Command,
        dst: &Destination,
    ) -> io::Result<BoxIo> {
        let tls = self.transport.tls_over_tcp().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                FlowError::NoTls(self.name.clone()),
            )
        })?;
        let mut conn = tls.connection()?;
        super::vision::handshake(&mut io, &mut conn).await?;
        let mut request = Vec::with_capacity(64);
        vless::encode_request_with_flow(&self.uuid, cmd, dst, Some(vision::FLOW), &mut request)
            .map_err(HandshakeError::request)?;
        let s = VisionStream::start(io, conn, self.uuid, &self.name, dst, &request).await?;
        Ok(Box::new(s))
    }

    pub(crate) async fn connect(&self, link: Link, dst: &Destination) -> io::Result<BoxIo> {
        self.open(link, Command::Tcp, dst).await
    }

    pub(crate) async fn udp(
        &self,
        link: Link,
        dst: &Destination,
    ) -> io::Result<(UdpSend, UdpRecv)> {
        if let Some(flow) = self.flow {
            if flow == VlessFlow::Vision && dst.port() == 443 {
                let e = FlowError::Udp443(self.name.clone());
                return Err(io::Error::new(io::ErrorKind::Unsupported, e));
            }
            let io = self.open(link, Command::Mux, dst).await?;
            let (rd, wr) = tokio::io::split(io);
            return Ok((
                UdpSend::Xudp {
                    wr,
                    buf: Vec::with_capacity(2048),
                    first: true,
                },
                UdpRecv::Xudp {
                    rd,
                    acc: Vec::with_capacity(4096),
                },
            ));
        }
        let io = self.open(link, Command::Udp, dst).await?;
        let (rd, wr) = tokio::io::split(io);
        Ok((
            UdpSend::Vless {
                wr,
                buf: Vec::with_capacity(2048),
            },
            UdpRecv::Vless {
                rd,
                acc: Vec::with_capacity(4096),
            },
        ))
    }
}

/// The stream after the request: reads skip the server's response header.
struct VlessStream {
    inner: BoxIo,
    /// What has arrived of the response header; `None` once it has been skipped.
    header: Option<Vec<u8>>,
    name: String,
}

impl VlessStream {
    /// Reads until the response header is complete, then hands what followed it to `buf`.
    fn poll_header(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let Some(acc) = &mut self.header else {
            return Poll::Ready(Ok(()));
        };
        loop {
            match vless::parse_response(acc) {
                Ok(Some(used)) => {
                    let rest = acc.split_off(used);
                    self.header = None;
                    if rest.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    // The header is at most 257 bytes, read in pieces of at most that; what
                    // follows it fits the reader's buffer or is served from a prefix.
                    let n = rest.len().min(buf.remaining());
                    buf.put_slice(&rest[..n]);
                    if n < rest.len() {
                        let inner =
                            std::mem::replace(&mut self.inner, Box::new(tokio::io::empty()));
                        self.inner = super::framing::with_prefix(inner, rest[n..].to_vec());
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(None) => {}
                Err(e) => {
                    return Poll::Ready(Err(self.refused(HandshakeError::Reply(e.into()).into())))
                }
            }
            let mut piece = [0u8; 257];
            let mut rb = ReadBuf::new(&mut piece);
            match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb)) {
                Ok(()) if rb.filled().is_empty() => {
                    return Poll::Ready(Err(self.refused(HandshakeError::Closed.into())));
                }
                Ok(()) => {}
                // A server refusing the id may close with the request's payload unread: a
                // reset, which is as much a refusal as a close.
                Err(e) => return Poll::Ready(Err(self.refused(e))),
            }
            acc.extend_from_slice(rb.filled());
        }
    }

    /// A write failing before the response came is the same refusal seen from the other
    /// side (the relay may be writing the client's first bytes when the server resets).
    fn unanswered<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        match r {
            Err(e) if self.header.is_some() => Err(self.refused(e)),
            r => r,
        }
    }

    /// Logs once why the response never came; the error then ends the connection.
    fn refused(&mut self, e: io::Error) -> io::Error {
        self.header = None;
        info!(
            "{}: no VLESS response ({e}); a wrong uuid, or not a VLESS server",
            self.name
        );
        e
    }
}

impl AsyncRead for VlessStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.header.is_some() {
            let before = buf.filled().len();
            ready!(self.poll_header(cx, buf))?;
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for VlessStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = ready!(Pin::new(&mut self.inner).poll_write(cx, buf));
        Poll::Ready(self.unanswered(r))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        Poll::Ready(self.unanswered(r))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn stream(io: tokio::io::DuplexStream) -> VlessStream {
        VlessStream {
            inner: Box::new(io),
            header: Some(Vec::new()),
            name: "up".into(),
        }
    }

    #[tokio::test]
    async fn the_response_header_is_skipped_even_in_pieces() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut s = stream(ours);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.map(|_| got)
        });
        peer.write_all(b"\x00").await.unwrap();
        tokio::task::yield_now().await;
        peer.write_all(b"\x02a").await.unwrap();
        tokio::task::yield_now().await;
        peer.write_all(b"b220 hello").await.unwrap();
        drop(peer);
        assert_eq!(reader.await.unwrap().unwrap(), b"220 hello");
    }

    #[tokio::test]
    async fn bytes_past_a_small_read_buffer_are_kept() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut s = stream(ours);
        peer.write_all(b"\x00\x00abcdefgh").await.unwrap();
        drop(peer);
        let mut three = [0u8; 3];
        s.read_exact(&mut three).await.unwrap();
        assert_eq!(&three, b"abc");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"defgh");
    }

    #[tokio::test]
    async fn closing_before_the_header_or_a_bad_version_is_an_error() {
        let (peer, ours) = tokio::io::duplex(1024);
        drop(peer);
        let err = stream(ours).read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let (mut peer, ours) = tokio::io::duplex(1024);
        peer.write_all(b"HTTP/1.1 400").await.unwrap();
        let err = stream(ours).read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
