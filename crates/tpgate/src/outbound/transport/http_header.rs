//! `network: http`: V2Ray's HTTP header obfuscation over the TCP (or TLS) stream. The
//! request head (`tpgate_core::proto::http_header`) goes out with the client's first
//! bytes; the server's response head is read off before its first bytes are handed on.
//! A path and each header's value are picked per connection from their lists, as mihomo
//! does.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rand::seq::IndexedRandom;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tpgate_core::config::HttpOpts;
use tpgate_core::proto::http_header::{encode_request, response_head_len, Request};

use crate::outbound::BoxIo;

/// One proxy's header settings.
#[derive(Debug)]
pub(super) struct HttpHeaderClient {
    opts: HttpOpts,
    /// The `Host` header when `headers` names none: the server's name.
    server: String,
}

impl HttpHeaderClient {
    pub(super) fn new(opts: &HttpOpts, server: &str) -> Self {
        Self {
            opts: opts.clone(),
            server: server.to_owned(),
        }
    }

    /// A request head with this connection's picks.
    fn head(&self) -> io::Result<Vec<u8>> {
        let mut rng = rand::rng();
        let path = self
            .opts
            .paths
            .choose(&mut rng)
            .cloned()
            .unwrap_or_default();
        let chosen: Vec<(String, String)> = self
            .opts
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.choose(&mut rng).cloned().unwrap_or_default()))
            .collect();
        let host = chosen
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map_or(self.server.as_str(), |(_, v)| v.as_str());
        let headers: Vec<(&str, &str)> = chosen
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut out = Vec::new();
        encode_request(
            &Request {
                method: &self.opts.method,
                path: if path.is_empty() { "/" } else { &path },
                host,
                headers: &headers,
            },
            &mut out,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(out)
    }

    pub(super) fn open(&self, io: BoxIo) -> io::Result<BoxIo> {
        Ok(Box::new(HeaderStream {
            inner: io,
            head: Some(self.head()?),
            out: Vec::new(),
            out_pos: 0,
            head_read: false,
            buf: Vec::new(),
            pos: 0,
        }))
    }
}

struct HeaderStream {
    inner: BoxIo,
    /// The request head, until the first write takes it.
    head: Option<Vec<u8>>,
    /// Bytes not yet written to `inner`, from `out_pos` (the head and the first data).
    out: Vec<u8>,
    out_pos: usize,
    /// The server's response head is behind us.
    head_read: bool,
    /// Read past the response head and not yet handed on, from `pos`.
    buf: Vec<u8>,
    pos: usize,
}

impl HeaderStream {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        crate::outbound::framing::poll_drain(&mut self.inner, cx, &mut self.out, &mut self.out_pos)
    }
}

impl AsyncRead for HeaderStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.head_read {
            let mut chunk = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "network http: the server closed before its response head",
                )));
            }
            this.buf.extend_from_slice(rb.filled());
            match response_head_len(&this.buf) {
                Ok(Some(n)) => {
                    this.pos = n;
                    this.head_read = true;
                }
                Ok(None) => {}
                Err(e) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("network http: {e}"),
                    )))
                }
            }
        }
        if this.pos < this.buf.len() {
            let n = out.remaining().min(this.buf.len() - this.pos);
            out.put_slice(&this.buf[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.buf.len() {
                this.buf = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl AsyncWrite for HeaderStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let Some(head) = this.head.take() else {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        };
        // The head and the first bytes go out together; the write counts as done once
        // they are buffered (flush and later writes drain them first).
        this.out = head;
        this.out.extend_from_slice(data);
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
