//! Reading one handshake message at a time from a stream, and keeping whatever the peer sent
//! after it: a server-first protocol's first bytes may arrive in the same segment as a proxy's
//! final reply, and must reach the client.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::error::HandshakeError;
use super::BoxIo;

/// Handshake replies are small; a peer that sends more without completing one is hostile.
const MAX_HANDSHAKE: usize = 64 * 1024;

/// Reads until `parse` recognises a message at the start of `buf`; removes it from `buf`.
pub(super) async fn read_msg<T, E: Into<Box<dyn std::error::Error + Send + Sync>>>(
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
            Err(e) => return Err(HandshakeError::Reply(e.into()).into()),
        }
        if buf.len() >= MAX_HANDSHAKE {
            return Err(HandshakeError::ReplyTooLong.into());
        }
        if io.read_buf(buf).await? == 0 {
            return Err(HandshakeError::Closed.into());
        }
    }
}

/// `inner` with `prefix` (bytes already read from it) served first.
pub(super) fn with_prefix(inner: BoxIo, prefix: Vec<u8>) -> BoxIo {
    if prefix.is_empty() {
        inner
    } else {
        Box::new(Prefixed {
            prefix,
            pos: 0,
            inner,
        })
    }
}

struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    inner: BoxIo,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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

/// Writes `out[*pos..]` to `inner`, then empties `out`: the bytes a framing stream (a
/// Shadowsocks plugin, `network: http`) queued ahead of its caller's go out first, and a
/// write that stops short resumes where it stopped.
pub(super) fn poll_drain<W: AsyncWrite + Unpin + ?Sized>(
    inner: &mut W,
    cx: &mut Context<'_>,
    out: &mut Vec<u8>,
    pos: &mut usize,
) -> Poll<io::Result<()>> {
    while *pos < out.len() {
        let n = std::task::ready!(Pin::new(&mut *inner).poll_write(cx, &out[*pos..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *pos += n;
    }
    out.clear();
    *pos = 0;
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn bytes_after_a_reply_reach_the_reader_first() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        // A proxy's 2-byte reply and the destination's banner arrive together.
        peer.write_all(b"OKSSH-2.0-banner\r\n").await.unwrap();
        let mut io: BoxIo = Box::new(ours);
        let mut buf = Vec::new();
        let got = read_msg(&mut io, &mut buf, |b: &[u8]| {
            Ok::<_, String>(b.starts_with(b"OK").then_some(((), 2)))
        })
        .await;
        assert!(got.is_ok());
        let mut io = with_prefix(io, buf);
        peer.write_all(b"more").await.unwrap();
        drop(peer);
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"SSH-2.0-banner\r\nmore");
    }

    #[tokio::test]
    async fn a_malformed_or_endless_reply_is_an_error_not_a_hang() {
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut io: BoxIo = Box::new(ours);
        let mut buf = Vec::new();
        peer.write_all(b"XX").await.unwrap();
        let bad = read_msg(&mut io, &mut buf, |b: &[u8]| {
            if b.starts_with(b"XX") {
                Err("bad version")
            } else {
                Ok(None::<((), usize)>)
            }
        })
        .await;
        assert_eq!(bad.unwrap_err().kind(), io::ErrorKind::InvalidData);
        buf.clear();
        peer.write_all(&vec![b'a'; MAX_HANDSHAKE + 10])
            .await
            .unwrap();
        let long = read_msg(&mut io, &mut buf, |_: &[u8]| {
            Ok::<Option<((), usize)>, String>(None)
        })
        .await;
        assert_eq!(long.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
