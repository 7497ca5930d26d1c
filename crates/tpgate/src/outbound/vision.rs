//! A VLESS stream with XTLS Vision: the outer TLS is driven by hand (a rustls
//! `ClientConnection` fed one TLS record at a time), so that when either side goes direct
//! nothing raw is caught inside rustls: reads stop handing records to rustls right after
//! the record that ends the server's direct frame, and writes push out every TLS byte
//! before the first raw one. The framing and the decisions are
//! `tpgate_core::proto::vision`'s; this holds the I/O. Each direction logs one debug line
//! when it goes direct. The connection may be REALITY's (`reality.rs` builds it). Not here:
//! the splice fast path after the switch (the raw bytes still pass through this stream).

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::ClientConnection;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tpgate_core::net::Destination;
use tpgate_core::proto::vision::{Padder, TlsFilter, UnpadError, Unpadded, Unpadder, WriteMode};
use tpgate_core::proto::vless::{self, Uuid};
use tracing::{debug, info};

use super::error::HandshakeError;
use super::BoxIo;

/// The longest TLS record (TLS 1.2's limit on ciphertext, above TLS 1.3's).
const RECORD_MAX: usize = 5 + 16384 + 2048;
/// How much of one write is taken at a time.
const WRITE_MAX: usize = 64 * 1024;

/// Why a Vision stream broke.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VisionError {
    /// The server sent a TLS record longer than TLS allows.
    #[error("TLS record of {0} bytes")]
    RecordTooLong(usize),
    /// The connection closed inside a TLS record.
    #[error("connection closed inside a TLS record")]
    TruncatedRecord,
    /// rustls refused the server's records.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The server's padding is malformed.
    #[error(transparent)]
    Unpad(#[from] UnpadError),
}

impl From<VisionError> for io::Error {
    fn from(e: VisionError) -> Self {
        let kind = match e {
            VisionError::TruncatedRecord => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        Self::new(kind, e)
    }
}

/// Runs the TLS handshake over `io` record by record, so nothing past it is read.
pub(crate) async fn handshake(io: &mut BoxIo, tls: &mut ClientConnection) -> io::Result<()> {
    handshake_with(io, tls, |_| Ok(())).await
}

/// [`handshake`], each record the server sends passed through `on_record` (which may
/// rewrite it) before rustls reads it. ShadowTLS v3 unwraps the server's signed records so.
pub(crate) async fn handshake_with(
    io: &mut BoxIo,
    tls: &mut ClientConnection,
    mut on_record: impl FnMut(&mut Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    let mut record = Vec::new();
    let mut out = Vec::new();
    while tls.is_handshaking() {
        while tls.wants_write() {
            tls.write_tls(&mut out)?;
        }
        io.write_all(&out).await?;
        io.flush().await?;
        out.clear();
        if !tls.is_handshaking() {
            break;
        }
        record.clear();
        if !std::future::poll_fn(|cx| poll_record(io, &mut record, cx)).await? {
            return Err(HandshakeError::Closed.into());
        }
        on_record(&mut record)?;
        feed(tls, &record)?;
    }
    while tls.wants_write() {
        tls.write_tls(&mut out)?;
    }
    io.write_all(&out).await?;
    Ok(())
}

/// Reads into `record` until it holds one whole TLS record: `Ok(true)`, or `Ok(false)`
/// when the connection ends before a record begins.
fn poll_record(
    io: &mut BoxIo,
    record: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<bool>> {
    loop {
        let need = match record.get(3..5) {
            Some(&[hi, lo]) => 5 + usize::from(u16::from_be_bytes([hi, lo])),
            _ => 5,
        };
        if need > RECORD_MAX {
            return Poll::Ready(Err(VisionError::RecordTooLong(need).into()));
        }
        if record.len() >= 5 && record.len() == need {
            return Poll::Ready(Ok(true));
        }
        let start = record.len();
        record.resize(need, 0);
        let mut rb = ReadBuf::new(&mut record[start..]);
        let r = Pin::new(&mut *io).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        record.truncate(start + n);
        match r {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) if n == 0 && start == 0 => return Poll::Ready(Ok(false)),
            Poll::Ready(Ok(())) if n == 0 => {
                return Poll::Ready(Err(VisionError::TruncatedRecord.into()))
            }
            Poll::Ready(Ok(())) => {}
        }
    }
}

/// Hands one record to rustls and lets it process it.
fn feed(tls: &mut ClientConnection, record: &[u8]) -> io::Result<()> {
    let mut rest = record;
    while !rest.is_empty() {
        tls.read_tls(&mut rest)?;
        tls.process_new_packets()
            .map_err(|e| io::Error::from(VisionError::Tls(e)))?;
    }
    Ok(())
}

/// The stream after the request: padded frames, then plain or direct each way.
pub(crate) struct VisionStream {
    /// The connection beneath the outer TLS.
    io: BoxIo,
    tls: ClientConnection,
    /// The proxy's name, for the log lines.
    name: String,
    /// The destination, for the debug lines of the switch.
    dst: String,
    filter: TlsFilter,
    padder: Padder,
    unpadder: Unpadder,
    /// What has arrived of the VLESS response header; `None` once it has been skipped.
    header: Option<Vec<u8>>,
    /// The TLS record being read.
    record: Vec<u8>,
    /// The server's content not yet handed to the reader, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// The server went direct: its bytes come straight from `io`.
    read_direct: bool,
    /// The server's TLS ended (close_notify or the connection's end at a record boundary).
    read_eof: bool,
    write_mode: WriteMode,
    /// TLS bytes not yet written to `io`, from `out_at`: all of them go before a raw one.
    out: Vec<u8>,
    out_at: usize,
    framed: Vec<u8>,
    /// The TLS close_notify has been queued (a shutdown may be polled again).
    close_sent: bool,
}

impl VisionStream {
    /// Sends the request (`request`: the VLESS header) with an empty padded frame, over a
    /// connection whose handshake is done.
    pub(crate) async fn start(
        io: BoxIo,
        tls: ClientConnection,
        uuid: Uuid,
        name: &str,
        dst: &Destination,
        request: &[u8],
    ) -> io::Result<Self> {
        let mut s = Self {
            io,
            tls,
            name: name.to_owned(),
            dst: dst.to_string(),
            filter: TlsFilter::default(),
            padder: Padder::new(uuid),
            unpadder: Unpadder::new(uuid),
            header: Some(Vec::new()),
            record: Vec::new(),
            plain: Vec::new(),
            plain_at: 0,
            read_direct: false,
            read_eof: false,
            write_mode: WriteMode::Padded,
            out: Vec::new(),
            out_at: 0,
            framed: Vec::new(),
            close_sent: false,
        };
        // Whatever the client sends is copied into rustls at once: no partial writes.
        s.tls.set_buffer_limit(None);
        let mut first = request.to_vec();
        s.padder.empty(rand::random(), &mut first);
        s.encrypt(&first)?;
        std::future::poll_fn(|cx| s.poll_out(cx)).await?;
        s.io.flush().await?;
        Ok(s)
    }

    fn encrypt(&mut self, plain: &[u8]) -> io::Result<()> {
        self.tls.writer().write_all(plain)?;
        self.pending_tls()
    }

    /// Takes what rustls wants to send into `out` (nothing once writes went direct).
    fn pending_tls(&mut self) -> io::Result<()> {
        if self.write_mode == WriteMode::Direct {
            return Ok(());
        }
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.out)?;
        }
        Ok(())
    }

    /// Writes out what `out` holds.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        self.out.clear();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads one record and takes its content; `Ok(false)` at the end of the server's TLS.
    fn poll_next_record(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !ready!(poll_record(&mut self.io, &mut self.record, cx))? {
            return Poll::Ready(Ok(false));
        }
        let record = std::mem::take(&mut self.record);
        let r = feed(&mut self.tls, &record);
        self.record = record;
        self.record.clear();
        r?;
        let mut chunk = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => {
                    self.read_eof = true;
                    break;
                }
                Ok(n) => chunk.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // A key update's answer, say; lost once writes went direct (servers do not ask).
        self.pending_tls()?;
        self.take(&chunk)?;
        Poll::Ready(Ok(!self.read_eof))
    }

    /// Takes the server's plaintext: the response header, then its padded content.
    fn take(&mut self, chunk: &[u8]) -> io::Result<()> {
        let Some(acc) = &mut self.header else {
            return self.unpad(chunk);
        };
        acc.extend_from_slice(chunk);
        match vless::parse_response(acc) {
            Ok(Some(used)) => {
                let rest = acc.split_off(used);
                self.header = None;
                self.unpad(&rest)
            }
            Ok(None) => Ok(()),
            Err(e) => Err(self.refused(HandshakeError::Reply(e.into()).into())),
        }
    }

    /// Takes the server's content off its padding, watching for the direct switch.
    fn unpad(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.plain_at == self.plain.len() {
            self.plain.clear();
            self.plain_at = 0;
        }
        let before = self.plain.len();
        let status = self
            .unpadder
            .feed(chunk, &mut self.plain)
            .map_err(|e| io::Error::from(VisionError::Unpad(e)))?;
        if self.plain.len() > before {
            self.filter.observe(&self.plain[before..]);
        }
        if status == Unpadded::Direct && !self.read_direct {
            self.read_direct = true;
            debug!(
                "{}: XTLS Vision to {}: the server went direct",
                self.name, self.dst
            );
        }
        Ok(())
    }

    /// Logs once why the response never came; the error then ends the connection.
    fn refused(&mut self, e: io::Error) -> io::Error {
        if self.header.take().is_some() {
            info!(
                "{}: no VLESS response ({e}); a wrong uuid, or not a VLESS server",
                self.name
            );
        }
        e
    }

    fn unanswered<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        match r {
            Err(e) if self.header.is_some() => Err(self.refused(e)),
            r => r,
        }
    }

    fn poll_read_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.plain_at < self.plain.len() {
                let n = (self.plain.len() - self.plain_at).min(buf.remaining());
                buf.put_slice(&self.plain[self.plain_at..self.plain_at + n]);
                self.plain_at += n;
                return Poll::Ready(Ok(()));
            }
            if self.read_direct {
                return Pin::new(&mut self.io).poll_read(cx, buf);
            }
            if self.read_eof {
                return Poll::Ready(Ok(()));
            }
            let more = match ready!(self.poll_next_record(cx)) {
                Ok(more) => more,
                Err(e) => return Poll::Ready(Err(self.refused(e))),
            };
            if !more {
                self.read_eof = true;
                if self.header.is_some() {
                    return Poll::Ready(Err(self.refused(HandshakeError::Closed.into())));
                }
                self.unpadder.finish(&mut self.plain);
            }
        }
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_out(cx))?;
        if self.write_mode == WriteMode::Direct {
            return Pin::new(&mut self.io).poll_write(cx, buf);
        }
        let taken;
        if self.write_mode == WriteMode::Plain {
            taken = buf.len().min(WRITE_MAX);
            self.encrypt(&buf[..taken])?;
        } else {
            // One frame per write while padding, ending with the inner client's TLS record:
            // the write that starts with application data goes direct at once, the rest
            // raw on the next call.
            taken = self.padder.next_len(buf);
            let data = &buf[..taken];
            self.filter.observe(data);
            let mut framed = std::mem::take(&mut self.framed);
            framed.clear();
            let mode = self
                .padder
                .write(&self.filter, data, rand::random, &mut framed);
            let r = self.encrypt(&framed);
            self.framed = framed;
            r?;
            if mode == WriteMode::Direct {
                debug!(
                    "{}: XTLS Vision to {}: the client went direct",
                    self.name, self.dst
                );
            }
            self.write_mode = mode;
        }
        // The bytes are taken; what the socket does not take now goes out on the next call.
        if let Poll::Ready(Err(e)) = self.poll_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }
}

impl AsyncRead for VisionStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_read_inner(cx, buf)
    }
}

impl AsyncWrite for VisionStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = ready!(this.poll_write_inner(cx, buf));
        Poll::Ready(this.unanswered(r))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = ready!(this.poll_out(cx));
        if let Err(e) = r {
            return Poll::Ready(this.unanswered(Err(e)));
        }
        let r = ready!(Pin::new(&mut this.io).poll_flush(cx));
        Poll::Ready(this.unanswered(r))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_mode != WriteMode::Direct && !this.close_sent {
            this.close_sent = true;
            this.tls.send_close_notify();
            this.pending_tls()?;
        }
        ready!(this.poll_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
