//! A plugin's framing over a connection, both ways: simple-obfs's fake HTTP upgrade (then raw
//! bytes) or fake TLS, ShadowTLS's application-data records after its handshake, and
//! v2ray-plugin's Mux.Cool frames inside its WebSocket. The bytes come from
//! `tpgate_core::proto::{obfs, shadow_tls, mux_cool}`; this only moves them.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tpgate_core::proto::mux_cool::{self, Frame, MAX_FRAME_DATA};
use tpgate_core::proto::obfs::{
    encode_app_data, encode_client_hello, encode_http_request, HelloRandom, Step, TlsObfsReader,
    MAX_HELLO_DATA, MAX_RECORD, RECORD_HEADER,
};
use tpgate_core::proto::shadow_tls::{self, v3, MAC_LEN, MAX_FIRST_DATA};
use tpgate_core::proto::ws::parse_upgrade_response;

use super::PluginError;
use crate::outbound::error::HandshakeError;
use crate::outbound::BoxIo;

/// How much one read from the server asks for.
const READ_CHUNK: usize = 16 * 1024;

/// Which framing, with what its first write needs.
pub(super) enum Framing {
    /// simple-obfs HTTP: `Host` is `host`, with `:port` unless 80.
    ObfsHttp { host: String, port: u16 },
    /// simple-obfs TLS: `host` is the fake hello's server name.
    ObfsTls { host: String },
    /// ShadowTLS v2 after the handshake: the first record opens with `mac` (taken when
    /// sent).
    ShadowTls { mac: Option<[u8; MAC_LEN]> },
    /// ShadowTLS v3 after the handshake: records signed each way.
    ShadowTlsV3 {
        writer: Box<v3::Writer>,
        reader: Box<v3::Reader>,
    },
    /// v2ray-plugin's Mux.Cool: one session, opened with the first write.
    MuxCool,
}

/// The next piece of the server's bytes.
enum Next {
    /// A whole frame or record with nothing for the stream.
    Skip(usize),
    /// `header` bytes to drop, then `len` bytes of the stream.
    Data { header: usize, len: usize },
    /// The stream ended (after `header` bytes to drop).
    End { header: usize },
}

impl Framing {
    const fn plugin(&self) -> &'static str {
        match self {
            Self::ObfsHttp { .. } | Self::ObfsTls { .. } => "obfs",
            Self::ShadowTls { .. } | Self::ShadowTlsV3 { .. } => "shadow-tls",
            Self::MuxCool => "v2ray-plugin",
        }
    }
}

pub(super) struct Framed {
    inner: BoxIo,
    framing: Framing,
    /// The first write is encoded (obfs: into the fake request).
    sent_first: bool,
    /// Encoded bytes not yet written to `inner`, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// The server's fake handshake (obfs: the `101` head, or ServerHello and
    /// ChangeCipherSpec) or, for Mux.Cool, its first data is behind us: its stream may end
    /// cleanly at a record boundary.
    head_read: bool,
    /// simple-obfs TLS: where the server's records stand.
    records: TlsObfsReader,
    /// Bytes of the current data record still to come.
    remaining: usize,
    /// Bytes read from `inner` not yet handed on, from `pos`.
    buf: Vec<u8>,
    pos: usize,
    /// `inner` reached its end.
    eof: bool,
    /// Mux.Cool: the server ended the session (reads see the end).
    ended: bool,
    /// Mux.Cool: we ended the session.
    end_sent: bool,
}

impl Framed {
    pub(super) fn new(inner: BoxIo, framing: Framing) -> Self {
        Self {
            inner,
            head_read: matches!(
                framing,
                Framing::ShadowTls { .. } | Framing::ShadowTlsV3 { .. }
            ),
            framing,
            sent_first: false,
            out: Vec::new(),
            out_pos: 0,
            records: TlsObfsReader::default(),
            remaining: 0,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            ended: false,
            end_sent: false,
        }
    }

    /// Writes out what is encoded; ready once all of it is with `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        crate::outbound::framing::poll_drain(&mut self.inner, cx, &mut self.out, &mut self.out_pos)
    }

    /// Reads more from the server into `buf`; sets `eof` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut rb = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
        if rb.filled().is_empty() {
            self.eof = true;
        }
        self.buf.extend_from_slice(rb.filled());
        Poll::Ready(Ok(()))
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Hands up to `limit` buffered bytes to `out`; how many.
    fn serve(&mut self, out: &mut ReadBuf<'_>, limit: usize) -> usize {
        let n = limit.min(out.remaining()).min(self.pending().len());
        out.put_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        n
    }

    fn poll_read_http(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.head_read {
            match parse_upgrade_response(self.pending(), None) {
                Ok(Some(used)) => {
                    self.pos += used;
                    self.head_read = true;
                }
                Ok(None) if self.eof => {
                    return Poll::Ready(Err(PluginError::NoReply(self.framing.plugin()).into()))
                }
                Ok(None) => ready!(self.poll_fill(cx))?,
                Err(e) => return Poll::Ready(Err(PluginError::ObfsHttp(e).into())),
            }
        }
        if !self.pending().is_empty() {
            self.serve(out, usize::MAX);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }

    fn poll_read_records(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.remaining > 0 {
                if self.pending().is_empty() {
                    if self.eof {
                        return Poll::Ready(Err(PluginError::Closed(self.framing.plugin()).into()));
                    }
                    ready!(self.poll_fill(cx))?;
                    continue;
                }
                let n = self.serve(out, self.remaining);
                self.remaining -= n;
                return Poll::Ready(Ok(()));
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match self.step()? {
                Some(Next::Skip(n)) => self.pos += n,
                Some(Next::Data { header, len }) => {
                    self.pos += header;
                    self.remaining = len;
                    // Past the fake handshake: the stream may end cleanly from here on.
                    self.head_read = true;
                }
                Some(Next::End { header }) => {
                    self.pos += header;
                    self.ended = true;
                    if !self.head_read {
                        // The server's backend refused (a wrong password) or ended at once.
                        return Poll::Ready(
                            Err(PluginError::NoReply(self.framing.plugin()).into()),
                        );
                    }
                }
                // The end of the stream, at a record boundary.
                None if self.eof && self.pending().is_empty() && self.head_read => {
                    return Poll::Ready(Ok(()))
                }
                None if self.eof && self.head_read => {
                    return Poll::Ready(Err(PluginError::Closed(self.framing.plugin()).into()))
                }
                None if self.eof => {
                    return Poll::Ready(Err(PluginError::NoReply(self.framing.plugin()).into()))
                }
                None => ready!(self.poll_fill(cx))?,
            }
        }
    }

    /// Encodes what of `data` one write takes; how much that is.
    fn encode(&mut self, data: &[u8]) -> io::Result<usize> {
        let first = !self.sent_first;
        self.sent_first = true;
        let out = &mut self.out;
        let (n, r) = match (&mut self.framing, first) {
            (Framing::ObfsHttp { host, port }, true) => {
                let key = rand::random::<[u8; 16]>();
                let curl = rand::random::<(u8, u8)>();
                let r = encode_http_request(host, *port, &key, curl, data, out);
                (data.len(), r.map_err(HandshakeError::request))
            }
            (Framing::ObfsHttp { .. }, false) => {
                out.extend_from_slice(data);
                (data.len(), Ok(()))
            }
            (Framing::ObfsTls { host }, true) => {
                let n = data.len().min(MAX_HELLO_DATA);
                let time = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
                let random = HelloRandom {
                    time,
                    random: rand::random(),
                    session_id: rand::random(),
                };
                let r = encode_client_hello(&data[..n], host, &random, out);
                (n, r.map_err(HandshakeError::request))
            }
            (Framing::ShadowTls { mac }, _) if mac.is_some() => {
                let n = data.len().min(MAX_FIRST_DATA);
                let mac = mac.take().unwrap_or_default();
                // Cannot fail: `n` fits.
                let _ = shadow_tls::encode_first(&mac, &data[..n], out);
                (n, Ok(()))
            }
            (Framing::ShadowTlsV3 { writer, .. }, _) => {
                let n = data.len().min(v3::MAX_DATA);
                // Cannot fail: `n` fits.
                let _ = writer.encode(&data[..n], out);
                (n, Ok(()))
            }
            (Framing::MuxCool, first) => {
                if first {
                    mux_cool::encode_new(out);
                }
                let n = data.len().min(MAX_FRAME_DATA);
                // Cannot fail: `n` fits.
                let _ = mux_cool::encode_keep(&data[..n], out);
                (n, Ok(()))
            }
            (Framing::ObfsTls { .. } | Framing::ShadowTls { .. }, _) => {
                let n = data.len().min(MAX_RECORD);
                let r = encode_app_data(&data[..n], out);
                (n, r.map_err(HandshakeError::request))
            }
        };
        r?;
        Ok(n)
    }

    /// The next step in the server's records or frames.
    fn step(&mut self) -> Result<Option<Next>, PluginError> {
        let pending = &self.buf[self.pos..];
        let plugin = self.framing.plugin();
        let records = |error| PluginError::Records { plugin, error };
        Ok(match &mut self.framing {
            Framing::ShadowTlsV3 { reader, .. } => {
                reader.next(pending).map_err(records)?.map(|n| match n {
                    v3::Next::Skip(len) => Next::Skip(len),
                    v3::Next::Data { header, len } => Next::Data { header, len },
                    v3::Next::End { header } => Next::End { header },
                })
            }
            Framing::MuxCool => mux_cool::next_frame(pending)
                .map_err(PluginError::Mux)?
                .map(|f| match f {
                    Frame::Skip(n) => Next::Skip(n),
                    Frame::Data { header, len } => Next::Data { header, len },
                    Frame::End { header } => Next::End { header },
                }),
            Framing::ShadowTls { .. } => {
                shadow_tls::data_record(pending)
                    .map_err(records)?
                    .map(|len| Next::Data {
                        header: RECORD_HEADER,
                        len,
                    })
            }
            _ => self
                .records
                .next(pending)
                .map_err(records)?
                .map(|s| match s {
                    Step::Skip(n) => Next::Skip(n),
                    Step::Data(len) => Next::Data {
                        header: RECORD_HEADER,
                        len,
                    },
                }),
        })
    }
}

impl AsyncRead for Framed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.framing {
            Framing::ObfsHttp { .. } => this.poll_read_http(cx, out),
            _ => this.poll_read_records(cx, out),
        }
    }
}

impl AsyncWrite for Framed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.sent_first && matches!(this.framing, Framing::ObfsHttp { .. }) {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        let n = this.encode(data)?;
        // The bytes are ours now; what `inner` does not take yet goes with the next write
        // or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if matches!(this.framing, Framing::MuxCool) && this.sent_first && !this.end_sent {
            // Ends the session: the server closes it both ways (mihomo sends it on close).
            mux_cool::encode_end(&mut this.out);
            this.end_sent = true;
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
