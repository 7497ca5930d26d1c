//! Reading one handshake message at a time from a stream, and keeping whatever the peer sent
//! after it: a server-first protocol's first bytes may arrive in the same segment as a proxy's
//! final reply, and must reach the client.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::BoxIo;

/// Handshake replies are small; a peer that sends more without completing one is hostile.
const MAX_HANDSHAKE: usize = 64 * 1024;

/// Reads until `parse` recognises a message at the start of `buf`; removes it from `buf`.
pub(super) async fn read_msg<T, E: std::fmt::Display>(
    io: &mut BoxIo,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
) -> io::Result<T> {
    loop {
        match parse(buf) {
            Ok(Some((msg, used))) => {
                buf.drain(..used);
                return Ok(msg);
            }
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
        if buf.len() >= MAX_HANDSHAKE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "handshake reply too long"));
        }
        if io.read_buf(buf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "proxy closed during the handshake"));
        }
    }
}

/// `inner` with `prefix` (bytes already read from it) served first.
pub(super) fn with_prefix(inner: BoxIo, prefix: Vec<u8>) -> BoxIo {
    if prefix.is_empty() {
        inner
    } else {
        Box::new(Prefixed { prefix, pos: 0, inner })
    }
}

struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    inner: BoxIo,
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
