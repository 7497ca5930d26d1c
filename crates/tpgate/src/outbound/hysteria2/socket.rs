//! The UDP socket under a Hysteria 2 QUIC connection when it needs more than a plain
//! socket: Salamander obfuscation of every packet, and port hopping (each send goes to the
//! port chosen for the current hop interval; replies from any of the ports are handed to
//! QUIC as from the address it connected to).

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rand::Rng as _;
use tpgate_core::proto::hysteria2::{Salamander, SALT_LEN};

/// `ports` and `hop-interval`: where the packets go now.
pub(super) struct Hop {
    ports: Vec<u16>,
    interval: Duration,
    /// The port in use and when it was chosen.
    now: Mutex<(u16, Instant)>,
}

impl Hop {
    pub(super) fn new(ports: Vec<u16>, interval: Duration, first: u16) -> Self {
        Self {
            ports,
            interval,
            now: Mutex::new((first, Instant::now())),
        }
    }

    /// The port for a packet sent now: another random one once the interval has passed.
    fn port(&self) -> u16 {
        let Ok(mut now) = self.now.lock() else {
            return self.ports[0];
        };
        if now.1.elapsed() >= self.interval && !self.ports.is_empty() {
            let i = rand::rng().random_range(0..self.ports.len());
            *now = (self.ports[i], Instant::now());
            tracing::debug!(port = now.0, "hysteria2: hopped to another server port");
        }
        now.0
    }
}

pub(super) struct Wrapped {
    pub(super) inner: Arc<dyn AsyncUdpSocket>,
    pub(super) salamander: Option<Salamander>,
    pub(super) hop: Option<Hop>,
    /// The address QUIC connected to: what replies from any hop port are reported as.
    pub(super) remote: SocketAddr,
}

impl fmt::Debug for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wrapped")
            .field("salamander", &self.salamander.is_some())
            .field("hop", &self.hop.as_ref().map(|h| h.ports.len()))
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for Wrapped {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let mut destination = transmit.destination;
        if let Some(hop) = &self.hop {
            if destination == self.remote {
                destination.set_port(hop.port());
            }
        }
        let Some(s) = &self.salamander else {
            return self.inner.try_send(&Transmit {
                destination,
                ..*transmit
            });
        };
        // One packet per transmit (max_transmit_segments is 1): each gets its own salt.
        let mut buf = vec![0u8; SALT_LEN + transmit.contents.len()];
        buf[SALT_LEN..].copy_from_slice(transmit.contents);
        s.seal(rand::rng().random(), &mut buf);
        self.inner.try_send(&Transmit {
            destination,
            ecn: transmit.ecn,
            contents: &buf,
            segment_size: None,
            src_ip: transmit.src_ip,
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = match self.inner.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()).take(n) {
            if self.hop.is_some() && m.addr.ip() == self.remote.ip() {
                m.addr = self.remote;
            }
            if let Some(s) = &self.salamander {
                open_segments(s, &mut buf[..m.len], m);
            }
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Opens every segment of one receive (GRO may have joined several of `m.stride` bytes)
/// and packs the QUIC packets together again, `SALT_LEN` bytes shorter each. A segment too
/// short to carry a salt is not Salamander: the whole receive is dropped.
fn open_segments(s: &Salamander, data: &mut [u8], m: &mut RecvMeta) {
    let stride = m.stride.max(1);
    if data.chunks(stride).any(|c| c.len() <= SALT_LEN) {
        m.len = 0;
        return;
    }
    let mut out = 0;
    let mut at = 0;
    while at < data.len() {
        let end = (at + stride).min(data.len());
        s.open(&mut data[at..end]);
        let body = end - at - SALT_LEN;
        data.copy_within(at + SALT_LEN..end, out);
        out += body;
        at = end;
    }
    m.len = out;
    m.stride = stride - SALT_LEN;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_segments_are_opened_and_packed() {
        let s = Salamander::new("k");
        let packets: [&[u8]; 3] = [b"first packet", b"second packet", b"third"];
        let stride = SALT_LEN + 13;
        let mut data = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let mut seg = vec![0u8; SALT_LEN];
            seg.extend_from_slice(p);
            if i < 2 {
                seg.resize(stride, 0);
            }
            s.seal([i as u8; SALT_LEN], &mut seg);
            data.extend_from_slice(&seg);
        }
        let mut m = RecvMeta {
            addr: "192.0.2.1:443".parse().unwrap(),
            len: data.len(),
            stride,
            ecn: None,
            dst_ip: None,
        };
        open_segments(&s, &mut data, &mut m);
        assert_eq!(m.stride, 13);
        assert_eq!(m.len, 13 + 13 + 5);
        assert_eq!(&data[..12], b"first packet");
        assert_eq!(&data[13..26], b"second packet");
        assert_eq!(&data[26..31], b"third");
    }

    #[test]
    fn a_segment_without_a_salt_drops_the_receive() {
        let s = Salamander::new("k");
        let mut data = vec![1u8; 5];
        let mut m = RecvMeta {
            addr: "192.0.2.1:443".parse().unwrap(),
            len: 5,
            stride: 5,
            ecn: None,
            dst_ip: None,
        };
        open_segments(&s, &mut data, &mut m);
        assert_eq!(m.len, 0);
    }
}
