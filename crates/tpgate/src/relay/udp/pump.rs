//! The per-flow UDP tasks: server replies back to the client (DIRECT, in batches), and the
//! two-way pumps of flows through an upstream or to a fake-ip name resolved for real.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use socket2::Type;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tpgate_core::net::Destination;
use tpgate_sys::RecvBatch;
use tracing::{debug, info};

use super::{Nat, MAX_DATAGRAM};
use crate::outbound::udp::{Batch, BATCH};
use crate::outbound::{Route, Upstream};
use crate::relay::registry::Entry;

/// Replies taken from a flow's socket per system call.
const REPLY_BATCH: usize = 16;

thread_local! {
    /// One receive batch per worker thread for replies, so an idle flow holds no buffer.
    static REPLIES: RefCell<RecvBatch> = RefCell::new(RecvBatch::new(REPLY_BATCH, MAX_DATAGRAM));
}

/// Runs `f` with this worker thread's receive batch, which every flow's replies share
/// (DIRECT ones here, an upstream's in `outbound::udp`), so a waiting flow holds none.
pub(crate) fn with_reply_batch<R>(f: impl FnOnce(&mut RecvBatch) -> R) -> R {
    REPLIES.with(|b| f(&mut b.borrow_mut()))
}

/// Whether segmented sends (UDP GSO) work here; off for good once the kernel says it has
/// none.
static GSO: AtomicBool = AtomicBool::new(true);
/// Payload bytes per segmented send (a UDP packet's limit, with room for headers).
const GSO_MAX_BYTES: usize = 65_000;

/// Sends without waiting: a full socket buffer drops the rest of the batch (UDP semantics)
/// instead of queueing without bound. Runs of equal-sized datagrams (a bulk transfer) go as
/// one segmented send each, the rest in one sendmmsg; order is kept. Goes straight to the
/// socket because tokio's `try_send` refuses until the reactor has once reported the socket
/// writable.
pub(crate) fn send_batch_or_drop(sock: &UdpSocket, datagrams: &[&[u8]], to: Option<SocketAddr>) {
    let mut singles = 0..0;
    let mut i = 0;
    while i < datagrams.len() {
        let run = if GSO.load(Ordering::Relaxed) {
            gso_run(&datagrams[i..])
        } else {
            1
        };
        if run < 2 {
            singles.end = i + 1;
            i += 1;
            continue;
        }
        if !send_each(sock, &datagrams[singles.clone()], to) {
            return;
        }
        match tpgate_sys::send_segmented(sock, &datagrams[i..i + run], to) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                debug!("udp: {} datagram(s) dropped: {e}", datagrams.len() - i);
                return;
            }
            Err(e) => {
                if e.raw_os_error() == Some(nix::errno::Errno::EIO as i32) {
                    GSO.store(false, Ordering::Relaxed);
                    debug!("udp: no segmentation offload here ({e}); sending one by one");
                }
                // EINVAL: larger than the path MTU, which only separate sends fragment.
                if !send_each(sock, &datagrams[i..i + run], to) {
                    return;
                }
            }
        }
        i += run;
        singles = i..i;
    }
    send_each(sock, &datagrams[singles], to);
}

/// How many datagrams at the start of `d` can go as one segmented send: equal sizes, the
/// last possibly shorter, within the segment and byte limits.
fn gso_run(d: &[&[u8]]) -> usize {
    let size = d.first().map_or(0, |p| p.len());
    if size == 0 {
        return 1;
    }
    let max = (GSO_MAX_BYTES / size).min(tpgate_sys::MAX_SEGMENTS);
    let mut n = 1;
    while n < d.len() && n < max && d[n].len() == size {
        n += 1;
    }
    if n < d.len() && n < max && d[n].len() < size && !d[n].is_empty() {
        n += 1;
    }
    n
}

/// `datagrams` with sendmmsg, as many as the socket takes; false when it took not all.
fn send_each(sock: &UdpSocket, datagrams: &[&[u8]], to: Option<SocketAddr>) -> bool {
    let mut sent = 0;
    while sent < datagrams.len() {
        match tpgate_sys::send_batch(sock, &datagrams[sent..], to) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!("udp: {} datagram(s) dropped: {e}", datagrams.len() - sent);
                return false;
            }
        }
    }
    sent == datagrams.len()
}

/// Server -> client of a DIRECT flow: everything the flow's socket receives goes back from
/// `dst`, a batch per system call each way, until the socket fails or the registry closes
/// the flow.
pub(super) async fn replies(
    nat: Arc<Nat>,
    (out, reply): (Arc<UdpSocket>, Arc<UdpSocket>),
    (client, dst): (SocketAddr, SocketAddr),
    last: Arc<AtomicU64>,
    entry: Arc<Entry>,
) {
    loop {
        let ready = tokio::select! {
            r = out.readable() => r.is_ok(),
            () = entry.closed() => return closed(&nat, (client, dst), &last),
        };
        if !ready {
            return;
        }
        match forward_replies(&out, &reply, client, &entry) {
            Ok(_) => last.store(nat.now_ms(), Ordering::Relaxed),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // ICMP port unreachable from the server: the flow stays until idle.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                debug!("udp {client} -> {dst} receive failed: {e}");
                return;
            }
        }
    }
}

/// Takes what `out` has queued (a batch) and sends it to `client` from `reply`, a batch per
/// system call each way.
fn forward_replies(
    out: &UdpSocket,
    reply: &UdpSocket,
    client: SocketAddr,
    entry: &Entry,
) -> io::Result<usize> {
    out.try_io(Interest::READABLE, || {
        with_reply_batch(|b| {
            let n = b.recv(out)?;
            let got: Vec<&[u8]> = (0..n).filter_map(|i| b.get(i).map(|(_, d)| d)).collect();
            entry.add_down(got.iter().map(|d| d.len()).sum());
            send_batch_or_drop(reply, &got, Some(client));
            Ok(n)
        })
    })
}

/// Closed from the registry: the flow leaves the table, so the client's next datagram is
/// decided afresh.
fn closed(nat: &Nat, key: (SocketAddr, SocketAddr), last: &Arc<AtomicU64>) {
    info!("udp {} -> {} closed by request", key.0, key.1);
    nat.forget(key, last);
}

/// A flow through an upstream or a relay chain: open the association, then pump both ways.
pub(super) async fn proxied(
    nat: Arc<Nat>,
    (chain, route): (Vec<Arc<Upstream>>, Route),
    (client, dst, target): (SocketAddr, SocketAddr, Destination),
    (reply, mut rx): (Arc<UdpSocket>, mpsc::Receiver<Bytes>),
    last: Arc<AtomicU64>,
    entry: Arc<Entry>,
) {
    let outbounds = &nat.shared().outbounds;
    let (mut tx_half, mut rx_half) = match outbounds.open_udp_chain(&chain, &target).await {
        Ok(halves) => halves,
        Err(e) => {
            outbounds.report_error(&route, &e);
            info!("udp {client} -> {dst} via {} failed: {e}", route.label);
            // Forget the flow, so the client's next datagram is decided again (a group has
            // moved off a dead member by now) instead of vanishing until the flow idles out.
            nat.forget((client, dst), &last);
            return;
        }
    };
    let mut ups: Vec<Bytes> = Vec::with_capacity(BATCH);
    let mut downs = Batch::default();
    loop {
        tokio::select! {
            n = rx.recv_many(&mut ups, BATCH) => {
                if n == 0 {
                    return;
                }
                if let Err(e) = tx_half.send_batch(&target, &ups).await {
                    debug!("udp {client} -> {dst} via {}: send failed: {e}", route.label);
                }
                ups.clear();
            }
            r = rx_half.recv_batch(&mut downs) => match r {
                Ok(()) => {
                    entry.add_down(downs.bytes());
                    send_batch_or_drop(&reply, &downs.slices(), Some(client));
                    downs.clear();
                    last.store(nat.now_ms(), Ordering::Relaxed);
                }
                Err(e) => {
                    debug!("udp {client} -> {dst} via {} ended: {e}", route.label);
                    return;
                }
            },
            () = entry.closed() => return closed(&nat, (client, dst), &last),
        }
    }
}

/// The task of a DIRECT flow to a fake address: resolve, connect a marked socket, relay.
pub(super) async fn direct_named(
    nat: Arc<Nat>,
    name: String,
    (client, dst): (SocketAddr, SocketAddr),
    (reply, mut rx): (Arc<UdpSocket>, mpsc::Receiver<Bytes>),
    last: Arc<AtomicU64>,
    entry: Arc<Entry>,
) {
    let opened = async {
        let real = SocketAddr::new(nat.shared().io.resolve(&name).await?, dst.port());
        let mark = nat.shared().routing_mark.0;
        let s = tpgate_sys::outbound_socket(real.is_ipv6(), Type::DGRAM, mark)?;
        s.connect(&real.into())?;
        Ok::<_, io::Error>((UdpSocket::from_std(s.into())?, real))
    }
    .await;
    let (out, real) = match opened {
        Ok(o) => o,
        Err(e) => {
            info!("udp {client} -> {dst} ({name}) cannot open: {e}");
            nat.forget((client, dst), &last);
            return;
        }
    };
    debug!("udp {client} -> {dst} ({name}) connected to {real}");
    let mut ups: Vec<Bytes> = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut ups, BATCH) => {
                if n == 0 {
                    return;
                }
                let d: Vec<&[u8]> = ups.iter().map(|p| &p[..]).collect();
                send_batch_or_drop(&out, &d, None);
                ups.clear();
            }
            r = out.readable() => {
                if r.is_err() {
                    return;
                }
                match forward_replies(&out, &reply, client, &entry) {
                    Ok(_) => last.store(nat.now_ms(), Ordering::Relaxed),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    Err(e) => {
                        debug!("udp {client} -> {dst} ended: {e}");
                        return;
                    }
                }
            }
            () = entry.closed() => return closed(&nat, (client, dst), &last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::gso_run;

    #[test]
    fn segmented_runs_are_equal_sizes_with_a_shorter_last() {
        let (big, small) = (vec![0u8; 1400], vec![0u8; 300]);
        let d: Vec<&[u8]> = vec![&big, &big, &big, &small, &big, &big];
        assert_eq!(gso_run(&d), 4, "three of 1400 and a shorter last");
        assert_eq!(gso_run(&d[3..]), 1, "a short one cannot lead");
        assert_eq!(gso_run(&d[4..]), 2);
        let huge = vec![0u8; 40_000];
        let h: Vec<&[u8]> = vec![&huge, &huge];
        assert_eq!(gso_run(&h), 1, "65,000 bytes at most");
        let tiny = vec![0u8; 10];
        let many: Vec<&[u8]> = vec![&tiny; 200];
        assert_eq!(gso_run(&many), tpgate_sys::MAX_SEGMENTS);
        assert_eq!(gso_run(&[]), 1);
    }
}
