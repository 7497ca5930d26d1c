//! One flow's UDP association through an upstream, split into a sending and a receiving half
//! so the flow task can wait for replies while it sends. Each half is used by one task only.
//!
//! Both halves work in batches: what the flow's channel holds goes out together (one
//! sendmmsg, or one segmented send, over a datagram upstream; one write over a stream
//! upstream), and every reply already there comes back together (one recvmmsg, or every
//! complete packet of one read), so the pump makes a few system calls per batch, not per
//! datagram.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest, ReadHalf, WriteHalf};
use tokio::net::UdpSocket;
use tpgate_core::net::Destination;
use tpgate_core::proto::{socks5, trojan, vless, xudp};

use super::ss::{SsControl, SsPackets, SsUdp};
use super::BoxIo;
use crate::relay::udp::{send_batch_or_drop, with_reply_batch};

/// Datagrams taken or handed over at once, at most.
pub(crate) const BATCH: usize = 16;
/// A batch's buffer beyond this is given back after use, so an idle flow holds little.
const KEEP: usize = 64 * 1024;
/// A batch stops taking datagrams once it holds this many bytes.
const FULL_BYTES: usize = 256 * 1024;
/// Datagram payloads end to end in one buffer.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Payload bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    fn full(&self) -> bool {
        self.ends.len() >= BATCH || self.bytes() >= FULL_BYTES
    }

    pub(crate) fn push(&mut self, d: &[u8]) {
        self.settle();
        self.data.extend_from_slice(d);
        self.ends.push(self.data.len());
    }

    /// Appends a datagram that `write` encodes; one that fails to encode leaves nothing.
    fn push_encoded<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.settle();
        let start = self.data.len();
        match write(&mut self.data) {
            Ok(()) => {
                self.ends.push(self.data.len());
                Ok(())
            }
            Err(e) => {
                self.data.truncate(start);
                Err(e)
            }
        }
    }

    /// Appends `raw`, which `open` turns in place into the payload at its start (returning
    /// the payload's length) or refuses (`None`: nothing is kept).
    ///
    /// `open` gets `raw` at a 16-byte aligned address: the shadowsocks crate reads the
    /// AEAD-2022 session id as a `u64` straight from the buffer, which must be aligned.
    fn push_opened(&mut self, raw: &[u8], open: impl FnOnce(&mut [u8]) -> Option<usize>) {
        const ALIGN: usize = 16;
        self.settle();
        let start = self.data.len();
        self.data.resize(start + raw.len() + ALIGN, 0);
        let pad = self.data[start..].as_ptr().align_offset(ALIGN).min(ALIGN);
        let at = start + pad;
        self.data[at..at + raw.len()].copy_from_slice(raw);
        match open(&mut self.data[at..at + raw.len()]) {
            Some(n) => {
                let n = n.min(raw.len());
                self.data.copy_within(at..at + n, start);
                self.data.truncate(start + n);
                self.ends.push(self.data.len());
            }
            None => self.data.truncate(start),
        }
    }

    /// Drops bytes past the last whole datagram (a receive cut short by cancellation).
    fn settle(&mut self) {
        let end = self.bytes();
        self.data.truncate(end);
    }

    pub(crate) fn slices(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let d = &self.data[start..end];
                start = end;
                d
            })
            .collect()
    }

    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        if self.data.capacity() > KEEP {
            self.data.shrink_to(KEEP);
        }
    }
}

pub(crate) enum UdpSend {
    Socks5 {
        sock: Arc<UdpSocket>,
        /// The batch's datagrams, each with its SOCKS5 header.
        out: Batch,
    },
    Shadowsocks {
        ss: Arc<SsUdp>,
        ctrl: SsControl,
        sealed: BytesMut,
        out: Batch,
    },
    Trojan {
        wr: WriteHalf<BoxIo>,
        buf: Vec<u8>,
    },
    /// The destination was fixed by the request; packets carry only a length.
    Vless {
        wr: WriteHalf<BoxIo>,
        buf: Vec<u8>,
    },
    /// SOCKS5 datagrams sent to the association's relay through a relay chain's UDP.
    Socks5Over {
        relay: Destination,
        inner: Box<Self>,
    },
    /// Shadowsocks packets sent to the server through a relay chain's UDP (`inner`).
    ShadowsocksOver {
        ss: Arc<SsPackets>,
        ctrl: SsControl,
        server: Destination,
        inner: Box<Self>,
    },
    /// One write is one sealed chunk is one datagram.
    Vmess {
        wr: WriteHalf<BoxIo>,
    },
    /// QUIC datagrams on the proxy's connection.
    Hysteria2(super::hysteria2::Hy2UdpSend),
    /// TUIC `Packet`s in QUIC datagrams or streams.
    Tuic(super::tuic::TuicUdpSend),
    /// XUDP frames (VLESS with Vision): the first opens the session.
    Xudp {
        wr: WriteHalf<BoxIo>,
        buf: Vec<u8>,
        first: bool,
    },
}

pub(crate) enum UdpRecv {
    Socks5 {
        sock: Arc<UdpSocket>,
        /// The TCP connection the association lives on; its end ends the association.
        ctrl: BoxIo,
    },
    Shadowsocks(Arc<SsUdp>),
    /// SOCKS5 datagrams from the relay through a relay chain's UDP (`inner`); the
    /// association lives on `ctrl`, a stream through the chain.
    Socks5Over {
        ctrl: BoxIo,
        inner: Box<Self>,
        raw: Batch,
    },
    /// Shadowsocks packets from the server through a relay chain's UDP (`inner`), read
    /// into `raw` before they are opened.
    ShadowsocksOver {
        ss: Arc<SsPackets>,
        inner: Box<Self>,
        raw: Batch,
    },
    Trojan {
        rd: ReadHalf<BoxIo>,
        acc: Vec<u8>,
    },
    Vless {
        rd: ReadHalf<BoxIo>,
        acc: Vec<u8>,
    },
    /// One read of at most one chunk is one datagram.
    Vmess {
        rd: ReadHalf<BoxIo>,
    },
    Hysteria2(super::hysteria2::Hy2UdpRecv),
    Tuic(super::tuic::TuicUdpRecv),
    Xudp {
        rd: ReadHalf<BoxIo>,
        acc: Vec<u8>,
    },
}

pub(crate) fn from_ss(s: SsUdp) -> (UdpSend, UdpRecv) {
    let ss = Arc::new(s);
    let send = UdpSend::Shadowsocks {
        ctrl: ss.new_session(),
        ss: ss.clone(),
        sealed: BytesMut::new(),
        out: Batch::default(),
    };
    (send, UdpRecv::Shadowsocks(ss))
}

/// SOCKS5 UDP to the association's `relay` carried by `inner`, an association through the
/// earlier hops of a relay chain; `ctrl` is the association's stream.
pub(crate) fn socks5_over(
    ctrl: BoxIo,
    relay: Destination,
    inner: (UdpSend, UdpRecv),
) -> (UdpSend, UdpRecv) {
    let send = UdpSend::Socks5Over {
        relay,
        inner: Box::new(inner.0),
    };
    let recv = UdpRecv::Socks5Over {
        ctrl,
        inner: Box::new(inner.1),
        raw: Batch::default(),
    };
    (send, recv)
}

/// Shadowsocks UDP to `server` carried by `inner`, an association through the earlier hops
/// of a relay chain.
pub(crate) fn ss_over(
    ss: SsPackets,
    server: Destination,
    inner: (UdpSend, UdpRecv),
) -> (UdpSend, UdpRecv) {
    let ss = Arc::new(ss);
    let send = UdpSend::ShadowsocksOver {
        ctrl: ss.new_session(),
        ss: ss.clone(),
        server,
        inner: Box::new(inner.0),
    };
    let recv = UdpRecv::ShadowsocksOver {
        ss,
        inner: Box::new(inner.1),
        raw: Batch::default(),
    };
    (send, recv)
}

pub(crate) fn from_socks5(sock: UdpSocket, ctrl: BoxIo) -> (UdpSend, UdpRecv) {
    let sock = Arc::new(sock);
    let send = UdpSend::Socks5 {
        sock: sock.clone(),
        out: Batch::default(),
    };
    (send, UdpRecv::Socks5 { sock, ctrl })
}

impl UdpSend {
    /// Sends `datagrams` to `dst` in order, together. Over a datagram upstream a full socket
    /// buffer drops the rest (UDP's way) instead of waiting; a datagram that cannot be
    /// framed (too long for the protocol) is an error and nothing is sent.
    pub(crate) async fn send_batch(
        &mut self,
        dst: &Destination,
        datagrams: &[Bytes],
    ) -> io::Result<()> {
        match self {
            Self::Socks5 { sock, out } => {
                out.clear();
                for d in datagrams {
                    out.push_encoded(|v| socks5::encode_udp_datagram(dst, d, v))
                        .map_err(invalid)?;
                }
                send_batch_or_drop(sock, &out.slices(), None);
                out.clear();
            }
            Self::Shadowsocks {
                ss,
                ctrl,
                sealed,
                out,
            } => {
                out.clear();
                for d in datagrams {
                    sealed.clear();
                    ss.seal(ctrl, dst, d, sealed);
                    out.push(sealed);
                }
                send_batch_or_drop(ss.socket(), &out.slices(), None);
                out.clear();
                if sealed.capacity() > KEEP {
                    *sealed = BytesMut::new();
                }
            }
            Self::Socks5Over { relay, inner } => {
                let mut framed = Vec::with_capacity(datagrams.len());
                for d in datagrams {
                    let mut v = Vec::with_capacity(d.len() + 32);
                    socks5::encode_udp_datagram(dst, d, &mut v).map_err(invalid)?;
                    framed.push(Bytes::from(v));
                }
                Box::pin(inner.send_batch(relay, &framed)).await?;
            }
            Self::ShadowsocksOver {
                ss,
                ctrl,
                server,
                inner,
            } => {
                let sealed: Vec<Bytes> = datagrams
                    .iter()
                    .map(|d| {
                        let mut out = BytesMut::new();
                        ss.seal(ctrl, dst, d, &mut out);
                        out.freeze()
                    })
                    .collect();
                Box::pin(inner.send_batch(server, &sealed)).await?;
            }
            Self::Trojan { wr, buf } => {
                buf.clear();
                for d in datagrams {
                    trojan::encode_udp_packet(dst, d, buf).map_err(invalid)?;
                }
                wr.write_all(buf).await?;
                wr.flush().await?;
                shrink(buf);
            }
            Self::Vless { wr, buf } => {
                buf.clear();
                for d in datagrams {
                    vless::encode_udp_packet(d, buf).map_err(invalid)?;
                }
                wr.write_all(buf).await?;
                wr.flush().await?;
                shrink(buf);
            }
            Self::Xudp { wr, buf, first } => {
                buf.clear();
                for d in datagrams {
                    xudp::encode_packet(*first, dst, d, buf).map_err(invalid)?;
                    *first = false;
                }
                wr.write_all(buf).await?;
                wr.flush().await?;
                shrink(buf);
            }
            Self::Vmess { wr } => {
                if let Some(d) = datagrams
                    .iter()
                    .find(|d| d.len() > super::vmess::MAX_DATAGRAM)
                {
                    return Err(invalid(format!("datagram of {} bytes", d.len())));
                }
                for d in datagrams {
                    wr.write_all(d).await?;
                }
                wr.flush().await?;
            }
            Self::Hysteria2(h) => h.send(dst, datagrams)?,
            Self::Tuic(t) => t.send(dst, datagrams).await?,
        }
        Ok(())
    }
}

impl UdpRecv {
    /// Waits for a reply, then adds it and every other reply already there (up to a batch)
    /// to `out`. Malformed replies over a datagram upstream are dropped; a malformed stream
    /// or the upstream's end is an error. Cancel-safe: a receive cut short leaves `out` as
    /// it was.
    pub(crate) async fn recv_batch(&mut self, out: &mut Batch) -> io::Result<()> {
        out.settle();
        match self {
            Self::Socks5 { sock, ctrl } => loop {
                let mut probe = [0u8; 1];
                tokio::select! {
                    r = sock.readable() => r?,
                    r = ctrl.read(&mut probe) => {
                        r?;
                        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "SOCKS5 association closed by the server"));
                    }
                }
                receive(sock, out, |out, d| {
                    if let Ok((_, off)) = socks5::parse_udp_datagram(d) {
                        out.push(&d[off..]); // fragmented or malformed: dropped
                    }
                })?;
                if !out.is_empty() {
                    return Ok(());
                }
            },
            Self::Socks5Over { ctrl, inner, raw } => loop {
                raw.clear();
                let mut probe = [0u8; 1];
                tokio::select! {
                    r = Box::pin(inner.recv_batch(raw)) => r?,
                    r = ctrl.read(&mut probe) => {
                        r?;
                        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "SOCKS5 association closed by the server"));
                    }
                }
                for d in raw.slices() {
                    if let Ok((_, off)) = socks5::parse_udp_datagram(d) {
                        out.push(&d[off..]); // fragmented or malformed: dropped
                    }
                }
                if !out.is_empty() {
                    return Ok(());
                }
            },
            Self::ShadowsocksOver { ss, inner, raw } => loop {
                raw.clear();
                Box::pin(inner.recv_batch(raw)).await?;
                for d in raw.slices() {
                    out.push_opened(d, |r| ss.open(r));
                }
                if !out.is_empty() {
                    return Ok(());
                }
            },
            Self::Shadowsocks(ss) => loop {
                ss.socket().readable().await?;
                receive(ss.socket(), out, |out, d| {
                    out.push_opened(d, |raw| ss.open(raw))
                })?;
                if !out.is_empty() {
                    return Ok(());
                }
            },
            Self::Trojan { rd, acc } => loop {
                let mut used = 0;
                while !out.full() {
                    match trojan::parse_udp_packet(&acc[used..]) {
                        Ok(Some((pkt, n))) => {
                            out.push(pkt.payload);
                            used += n;
                        }
                        Ok(None) => break,
                        Err(e) => return Err(invalid(e)),
                    }
                }
                acc.drain(..used);
                if !out.is_empty() {
                    return Ok(());
                }
                if rd.read_buf(acc).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "trojan UDP stream closed",
                    ));
                }
            },
            Self::Vless { rd, acc } => loop {
                let mut used = 0;
                while !out.full() {
                    let Some((payload, n)) = vless::parse_udp_packet(&acc[used..]) else {
                        break;
                    };
                    out.push(payload);
                    used += n;
                }
                acc.drain(..used);
                if !out.is_empty() {
                    return Ok(());
                }
                if rd.read_buf(acc).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "VLESS UDP stream closed",
                    ));
                }
            },
            Self::Xudp { rd, acc } => loop {
                let mut used = 0;
                while !out.full() {
                    match xudp::parse_frame(&acc[used..]) {
                        Ok(Some((frame, n))) => {
                            used += n;
                            match frame {
                                xudp::Frame::Packet(p) => out.push(p),
                                xudp::Frame::Nothing => {}
                                xudp::Frame::End if out.is_empty() => {
                                    return Err(io::Error::new(
                                        io::ErrorKind::ConnectionAborted,
                                        "XUDP session ended by the server",
                                    ));
                                }
                                xudp::Frame::End => {
                                    used -= n; // seen again on the next call
                                    break;
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return Err(invalid(e)),
                    }
                }
                acc.drain(..used);
                if !out.is_empty() {
                    return Ok(());
                }
                if rd.read_buf(acc).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "XUDP stream closed",
                    ));
                }
            },
            Self::Vmess { rd } => {
                let start = out.data.len();
                out.data.resize(start + super::vmess::MAX_DATAGRAM, 0);
                let n = rd.read(&mut out.data[start..]).await?;
                out.data.truncate(start + n);
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "VMess UDP stream closed",
                    ));
                }
                out.ends.push(out.data.len());
                Ok(())
            }
            Self::Hysteria2(h) => h.recv(BATCH, |d| out.push(d)).await,
            Self::Tuic(t) => t.recv(BATCH, |d| out.push(d)).await,
        }
    }
}

/// Everything queued on `sock` (up to a batch), each datagram handed to `take`. `Ok` also
/// when nothing was there after all (the readiness was stale).
fn receive(
    sock: &UdpSocket,
    out: &mut Batch,
    mut take: impl FnMut(&mut Batch, &[u8]),
) -> io::Result<()> {
    let r = sock.try_io(Interest::READABLE, || {
        with_reply_batch(|b| {
            let n = b.recv(sock)?;
            for i in 0..n {
                if let Some((_, d)) = b.get(i) {
                    take(out, d);
                }
            }
            Ok(n)
        })
    });
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

fn shrink(buf: &mut Vec<u8>) {
    buf.clear();
    if buf.capacity() > KEEP {
        buf.shrink_to(KEEP);
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::{Batch, BATCH};

    #[test]
    fn a_batch_keeps_datagrams_apart_and_in_order() {
        let mut b = Batch::default();
        b.push(b"one");
        b.push(b"");
        b.push(b"three");
        assert_eq!(b.slices(), vec![&b"one"[..], b"", b"three"]);
        assert_eq!((b.slices().len(), b.bytes()), (3, 8));
        b.clear();
        assert!(b.is_empty() && b.slices().is_empty());
    }

    #[test]
    fn what_fails_to_encode_or_open_leaves_nothing() {
        let mut b = Batch::default();
        b.push(b"kept");
        let r: Result<(), ()> = b.push_encoded(|v| {
            v.extend_from_slice(b"half");
            Err(())
        });
        assert!(r.is_err());
        b.push_opened(b"xxpayload", |raw| {
            raw.copy_within(2.., 0);
            Some(7)
        });
        b.push_opened(b"garbage", |_| None);
        b.push_opened(b"aligned", |raw| {
            assert_eq!(
                raw.as_ptr() as usize % 16,
                0,
                "opened at an aligned address"
            );
            Some(raw.len())
        });
        assert_eq!(b.slices(), vec![&b"kept"[..], b"payload", b"aligned"]);
    }

    #[test]
    fn a_receive_cut_short_is_forgotten() {
        let mut b = Batch::default();
        b.push(b"whole");
        b.data.extend_from_slice(&[0; 100]); // a cancelled read's reservation
        b.push(b"next");
        assert_eq!(b.slices(), vec![&b"whole"[..], b"next"]);
    }

    #[test]
    fn a_batch_is_full_by_count_or_bytes() {
        let mut b = Batch::default();
        for _ in 0..BATCH - 1 {
            b.push(b"x");
        }
        assert!(!b.full());
        b.push(b"x");
        assert!(b.full());
        let mut big = Batch::default();
        big.push(&vec![0; 300 * 1024]);
        assert!(big.full());
        big.clear();
        assert!(
            big.data.capacity() <= 64 * 1024,
            "an idle batch gives its memory back"
        );
    }
}
