//! Batched UDP I/O: many datagrams per system call with recvmmsg(2) and sendmmsg(2), the
//! original destination of TPROXY'd datagrams included, and segmentation offload (UDP GSO)
//! for runs of equal-sized datagrams. nix's safe wrappers do the calls;
//! the one `unsafe` is the `Send` of a batch, explained there. Buffers are allocated once per batch, zeroed by fresh pages,
//! so slots that never fill cost address space, not memory.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmmsg, sendmmsg, sendmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

use crate::udp::{orig_dst_of, storage_to_std, Datagram};

/// A reusable set of receive slots for [`RecvBatch::recv`].
pub struct RecvBatch {
    bufs: Vec<u8>,
    slot: usize,
    headers: MultiHeaders<SockaddrStorage>,
    /// What the last receive got, per slot: `None` for a truncated datagram or one
    /// without a source.
    got: Vec<Option<Datagram>>,
}

// SAFETY: the raw pointers inside `MultiHeaders` point into allocations the same value
// owns (its boxed address and control-message buffers) or, only during `recv`, into
// `bufs`; none is shared with another value, so moving the whole batch to another thread
// moves everything they point to with it. `RecvBatch` is not `Sync` (no `&self` method
// touches the headers).
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &(self.bufs.len() / self.slot))
            .field("slot", &self.slot)
            .field("got", &self.got.len())
            .finish()
    }
}

impl RecvBatch {
    /// `count` slots of `slot` bytes each; datagrams larger than a slot are dropped.
    pub fn new(count: usize, slot: usize) -> Self {
        let count = count.max(1);
        let cmsg = nix::cmsg_space!(libc::sockaddr_in6);
        Self {
            bufs: vec![0; count * slot],
            slot,
            headers: MultiHeaders::preallocate(count, Some(cmsg)),
            got: Vec::with_capacity(count),
        }
    }

    /// Receives as many queued datagrams as fit, without blocking; `WouldBlock` when none is
    /// queued. The original destination is filled in on sockets that asked for it
    /// (`transparent_udp_socket(.., Listener)`). Read them with [`RecvBatch::get`].
    pub fn recv(&mut self, fd: &impl AsRawFd) -> io::Result<usize> {
        self.got.clear();
        let slot = self.slot;
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .chunks_exact_mut(slot)
            .map(|c| [IoSliceMut::new(c)])
            .collect();
        let res = recvmmsg(
            fd.as_raw_fd(),
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        for msg in res {
            let src = msg.address.as_ref().and_then(storage_to_std);
            let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
            let orig_dst = msg.cmsgs().ok().and_then(orig_dst_of);
            self.got
                .push(src.filter(|_| !truncated).map(|src| Datagram {
                    len: msg.bytes,
                    src,
                    orig_dst,
                }));
        }
        Ok(self.got.len())
    }

    /// Datagram `i` of the last receive: `None` when it was truncated (larger than a slot)
    /// or came without a source address.
    pub fn get(&self, i: usize) -> Option<(Datagram, &[u8])> {
        let d = (*self.got.get(i)?)?;
        let start = i * self.slot;
        Some((d, &self.bufs[start..start + d.len]))
    }

    /// How many datagrams the last receive returned (valid or not).
    pub fn len(&self) -> usize {
        self.got.len()
    }

    pub fn is_empty(&self) -> bool {
        self.got.is_empty()
    }
}

/// Sends `datagrams` in one sendmmsg(2) call, to `to` (or on a connected socket with
/// `None`), without blocking. Returns how many were sent: a full send buffer stops the
/// batch early (`Ok(n)` with `n < len`, or `WouldBlock` when none went), and the rest are
/// the caller's to drop, as UDP would.
pub fn send_batch(
    fd: &impl AsRawFd,
    datagrams: &[&[u8]],
    to: Option<SocketAddr>,
) -> io::Result<usize> {
    if datagrams.is_empty() {
        return Ok(0);
    }
    let addr = to.map(SockaddrStorage::from);
    let addrs = vec![addr; datagrams.len()];
    let iovs: Vec<[IoSlice<'_>; 1]> = datagrams.iter().map(|d| [IoSlice::new(d)]).collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(datagrams.len(), None);
    let sent = sendmmsg(
        fd.as_raw_fd(),
        &mut headers,
        &iovs,
        addrs,
        [],
        MsgFlags::MSG_DONTWAIT,
    )?;
    Ok(sent.count())
}

/// At most this many datagrams go in one segmented send (the kernel allows 64 or more).
pub const MAX_SEGMENTS: usize = 64;

/// Sends `segments` as ONE UDP GSO send (`UDP_SEGMENT`): the kernel carries them through
/// its stack as one packet and cuts it into datagrams of `segments[0].len()` bytes at the
/// end, far cheaper per datagram than separate sends. Every segment but the last must have
/// that size, the last may be shorter, at most [`MAX_SEGMENTS`] of them and 65,000 bytes in
/// all. Sent whole or not at all: `EINVAL` (a datagram larger than the path MTU, which GSO
/// cannot fragment) or `EIO` (no GSO here) mean "send them one by one instead".
pub fn send_segmented(
    fd: &impl AsRawFd,
    segments: &[&[u8]],
    to: Option<SocketAddr>,
) -> io::Result<usize> {
    let Some(first) = segments.first() else {
        return Ok(0);
    };
    let size = u16::try_from(first.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
    let iov: Vec<IoSlice<'_>> = segments.iter().map(|s| IoSlice::new(s)).collect();
    let cmsg = [ControlMessage::UdpGsoSegments(&size)];
    let addr = to.map(SockaddrStorage::from);
    Ok(sendmsg(
        fd.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_DONTWAIT,
        addr.as_ref(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn batches_keep_order_sources_and_lengths() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let msgs: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1 + usize::from(i) * 7]).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let mut sent = 0;
        while sent < refs.len() {
            sent += send_batch(&tx, &refs[sent..], Some(to)).unwrap();
        }
        let mut batch = RecvBatch::new(16, 2048);
        let mut got = Vec::new();
        while got.len() < msgs.len() {
            match batch.recv(&rx) {
                Ok(n) => {
                    assert!(n <= 16);
                    for i in 0..n {
                        let (d, bytes) = batch.get(i).unwrap();
                        assert_eq!(d.src, tx.local_addr().unwrap());
                        assert_eq!(d.orig_dst, None, "not a TPROXY socket");
                        got.push(bytes.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn a_segmented_send_arrives_as_separate_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = vec![1u8; 1200];
        let b = vec![2u8; 1200];
        let c = vec![3u8; 700];
        let sent = send_segmented(&tx, &[&a, &b, &c], Some(rx.local_addr().unwrap())).unwrap();
        assert_eq!(sent, 3100);
        let mut batch = RecvBatch::new(8, 2048);
        let mut got = Vec::new();
        for _ in 0..1000 {
            if let Ok(n) = batch.recv(&rx) {
                got.extend((0..n).filter_map(|i| batch.get(i).map(|(_, d)| d.to_vec())));
            }
            if got.len() >= 3 {
                break;
            }
            std::thread::yield_now();
        }
        assert_eq!(got, vec![a, b, c], "three datagrams, in order, not one");
    }

    #[test]
    fn oversized_datagrams_are_reported_not_cut() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let big = vec![7u8; 3000];
        assert_eq!(send_batch(&tx, &[&big, b"small"], None).unwrap(), 2);
        let mut batch = RecvBatch::new(4, 1500);
        let mut seen = Vec::new();
        for _ in 0..1000 {
            if let Ok(n) = batch.recv(&rx) {
                for i in 0..n {
                    seen.push(batch.get(i).map(|(_, b)| b.to_vec()));
                }
            }
            if seen.len() >= 2 {
                break;
            }
            std::thread::yield_now();
        }
        assert_eq!(seen, vec![None, Some(b"small".to_vec())]);
    }
}
