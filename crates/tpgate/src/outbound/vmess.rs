//! VMess AEAD upstream (TCP): optional TLS, then the sealed request header, then the body
//! as sealed chunks both ways. Like VLESS, the server's response header comes with its
//! first bytes, so it is read lazily; a server that closes or resets before it (a wrong
//! uuid, a clock too far off) ends the connection with one log line.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tpgate_core::net::Destination;
use tpgate_core::proto::vless::Uuid;
use tpgate_core::proto::vmess::{self, BodyCipher, Command, Randomness, Security};
use tracing::info;

use super::error::HandshakeError;
use super::transport::{Link, Transport};
use super::udp::{UdpRecv, UdpSend};
use super::BoxIo;

/// Largest payload per chunk written on a TCP stream.
const CHUNK: usize = 16 * 1024;
/// Largest datagram: a chunk's length field counts the tag too.
pub(crate) const MAX_DATAGRAM: usize = 65535 - 16;

#[derive(Debug)]
pub(crate) struct Vmess {
    /// The proxy's name, for the one log line a refused connection gets.
    name: String,
    uuid: Uuid,
    security: Security,
    /// TLS and/or the WebSocket or gRPC carrier, when configured.
    transport: Transport,
}

impl Vmess {
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    pub(crate) fn new(name: &str, uuid: Uuid, security: Security, transport: Transport) -> Self {
        Self {
            name: name.to_owned(),
            uuid,
            security,
            transport,
        }
    }

    pub(crate) async fn connect(&self, link: Link, dst: &Destination) -> io::Result<BoxIo> {
        Ok(Box::new(self.open(link, Command::Tcp, dst, CHUNK).await?))
    }

    /// UDP: one chunk per datagram both ways, the destination fixed by the request. A read
    /// returns at most one chunk, so a large enough buffer reads exactly one datagram.
    pub(crate) async fn udp(
        &self,
        link: Link,
        dst: &Destination,
    ) -> io::Result<(UdpSend, UdpRecv)> {
        let io: BoxIo = Box::new(self.open(link, Command::Udp, dst, MAX_DATAGRAM).await?);
        let (rd, wr) = tokio::io::split(io);
        Ok((UdpSend::Vmess { wr }, UdpRecv::Vmess { rd }))
    }

    async fn open(
        &self,
        link: Link,
        cmd: Command,
        dst: &Destination,
        max_chunk: usize,
    ) -> io::Result<VmessStream> {
        let mut io = self.transport.open(link).await?;
        let rand = randomness()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut out = Vec::with_capacity(128);
        vmess::encode_request(&self.uuid, self.security, cmd, dst, &rand, now, &mut out)
            .map_err(HandshakeError::request)?;
        io.write_all(&out).await?;
        io.flush().await?;
        Ok(VmessStream {
            inner: io,
            rand,
            tx: BodyCipher::request(self.security, &rand),
            rx: BodyCipher::response(self.security, &rand),
            header_done: false,
            acc: Vec::with_capacity(CHUNK + 64),
            plain: Vec::new(),
            plain_pos: 0,
            eof: false,
            out: Vec::with_capacity(CHUNK + 64),
            out_pos: 0,
            closing: false,
            max_chunk,
            name: self.name.clone(),
        })
    }
}

fn randomness() -> io::Result<Randomness> {
    let mut b = [0u8; 16 + 16 + 1 + 4 + 8 + 15 + 1];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| io::Error::other("no system randomness"))?;
    let take = |from: usize, to: usize| b.get(from..to).unwrap_or_default();
    let arr16 = |s: &[u8]| <[u8; 16]>::try_from(s).unwrap_or_default();
    Ok(Randomness {
        body_key: arr16(take(0, 16)),
        body_iv: arr16(take(16, 32)),
        response_auth: b[32],
        auth_nonce: <[u8; 4]>::try_from(take(33, 37)).unwrap_or_default(),
        connection_nonce: <[u8; 8]>::try_from(take(37, 45)).unwrap_or_default(),
        padding: <[u8; 15]>::try_from(take(45, 60)).unwrap_or_default(),
        padding_len: b[60] % 16,
    })
}

struct VmessStream {
    inner: BoxIo,
    rand: Randomness,
    tx: BodyCipher,
    rx: BodyCipher,
    /// The response header has been read and checked.
    header_done: bool,
    /// Bytes read and not yet a whole header or chunk.
    acc: Vec<u8>,
    /// The current chunk's payload, served from `plain_pos`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// The server's end-of-stream chunk (or its close) was seen.
    eof: bool,
    /// Sealed bytes not yet written to `inner`, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// The end-of-stream chunk has been queued.
    closing: bool,
    /// Largest payload one write seals into one chunk.
    max_chunk: usize,
    name: String,
}

impl VmessStream {
    fn refused(&mut self, e: io::Error) -> io::Error {
        if !self.header_done {
            self.header_done = true;
            info!(
                "{}: no VMess response ({e}); a wrong uuid, a clock off by more than 2 minutes, or not a VMess server",
                self.name
            );
        }
        e
    }

    /// Takes the next whole message out of `acc`: the response header first, then chunks.
    /// `Ok(true)` when something was taken.
    fn take(&mut self) -> io::Result<bool> {
        if !self.header_done {
            return match vmess::parse_response(&self.rand, &self.acc) {
                Ok(Some(used)) => {
                    self.acc.drain(..used);
                    self.header_done = true;
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(e) => Err(self.refused(HandshakeError::Reply(e.into()).into())),
            };
        }
        match self.rx.open_chunk(&mut self.acc) {
            Ok(Some((payload, used))) => {
                if payload.is_empty() {
                    self.eof = true;
                }
                self.plain.clear();
                self.plain.extend_from_slice(payload);
                self.plain_pos = 0;
                self.acc.drain(..used);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    /// Writes queued sealed bytes to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let r = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]));
            match r {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.out_pos += n,
                Err(e) if !self.header_done => return Poll::Ready(Err(self.refused(e))),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for VmessStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.plain_pos < this.plain.len() {
                let n = (this.plain.len() - this.plain_pos).min(buf.remaining());
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.take()? {
                continue;
            }
            let mut piece = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut piece);
            match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb)) {
                Ok(()) if rb.filled().is_empty() => {
                    if !this.header_done {
                        let e = HandshakeError::Closed.into();
                        return Poll::Ready(Err(this.refused(e)));
                    }
                    // Closed without the end chunk: pass the close on as EOF.
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(()) => this.acc.extend_from_slice(rb.filled()),
                Err(e) => return Poll::Ready(Err(this.refused(e))),
            }
        }
    }
}

impl AsyncWrite for VmessStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(this.max_chunk);
        this.tx
            .seal_chunk(&buf[..n], &mut this.out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // The bytes are taken; a pending write of them finishes on the next call or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        if !this.closing {
            this.closing = true;
            this.tx
                .seal_chunk(&[], &mut this.out)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            ready!(this.poll_drain(cx))?;
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
