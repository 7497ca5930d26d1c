//! UDP: transparent listeners receive intercepted datagrams in batches (recvmmsg) with their
//! original destinations; a bounded NAT table maps (client, original destination) to a flow
//! with its own marked outbound socket; replies leave, in batches (sendmmsg), from a
//! transparent socket bound to the original destination, shared by every flow to that
//! destination. No socket is created per packet and the table is locked once per batch.
//! Deciding a new flow (`open`) and the per-flow tasks (`pump`) live in the submodules.

mod open;
mod pump;

pub(crate) use pump::{send_batch_or_drop, with_reply_batch};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tpgate_core::sniff::quic::QuicSniffer;
use tpgate_core::sniff::Sniffed;
use tpgate_sys::RecvBatch;
use tracing::debug;

use super::gauge::{Live, LIVE};
use super::limits::Slot;
use super::registry::Registered;
use super::tcp::canonical;
use super::{Shared, SharedCell};
use crate::shutdown::Shutdown;
use tpgate_core::flow::Decider;

const IDLE: Duration = Duration::from_secs(60);
/// DNS and other port-53 exchanges are one question, one answer.
const IDLE_DNS: Duration = Duration::from_secs(10);
const SWEEP: Duration = Duration::from_secs(2);
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams taken from the listener per system call.
const BATCH: usize = 32;
/// Datagrams waiting for a proxied flow's task; more are dropped.
const QUEUE: usize = 256;
/// Datagrams held while a flow is not decided yet (a QUIC first flight is a few Initials).
const MAX_HELD: usize = 16;

type Key = (SocketAddr, SocketAddr);

/// Where a flow's client datagrams go.
enum FlowOut {
    /// Rejected, or could not be opened: dropped until the flow goes idle.
    Drop,
    /// DIRECT: straight to a connected socket, no copy, no queue.
    Direct(Arc<UdpSocket>),
    /// Through an upstream: a bounded queue to the flow's task (full: dropped).
    Queue(mpsc::Sender<Bytes>),
    /// Not decided yet: sniffing the client's first QUIC datagrams for the name, or
    /// waiting for a decision that needs I/O (the owning process, a fake name's real
    /// address). Datagrams are held (bounded) and sent once the flow is decided.
    Held(Box<Pending>),
}

struct Pending {
    /// The flow's decision, under way.
    decider: Decider,
    /// `Some` while the decider waits for the first datagrams' name.
    sniffer: Option<QuicSniffer>,
    held: Vec<Bytes>,
}

impl Pending {
    /// Holds `data`; `Some(name)` when sniffing is over with this datagram (with a name
    /// or without one), `None` while it goes on or when not sniffing.
    fn hold(&mut self, data: &[u8]) -> Option<Option<String>> {
        if self.held.len() < MAX_HELD {
            self.held.push(Bytes::copy_from_slice(data));
        }
        let sniffer = self.sniffer.as_mut()?;
        Self::sniffed(sniffer.push(data), self.held.len())
    }

    /// Sniffing starts: the datagrams held so far go through the sniffer first. Same
    /// answer as [`Pending::hold`].
    fn sniff_held(&mut self) -> Option<Option<String>> {
        let sniffer = self.sniffer.as_mut()?;
        let mut last = Sniffed::NeedMore;
        for d in &self.held {
            last = sniffer.push(d);
            if !matches!(last, Sniffed::NeedMore) {
                break;
            }
        }
        Self::sniffed(last, self.held.len())
    }

    fn sniffed(s: Sniffed, held: usize) -> Option<Option<String>> {
        match s {
            Sniffed::NeedMore if held < MAX_HELD => None,
            Sniffed::Name(n) => Some(Some(n)),
            _ => Some(None),
        }
    }
}

struct Flow {
    out: FlowOut,
    replier: Option<AbortHandle>,
    /// Listed in the registry once it has a way out (counts its bytes, can be closed).
    reg: Option<Registered>,
    /// Milliseconds since `Nat::start` of the last datagram either way; also the flow's
    /// identity (a newer flow under the same key has another clock).
    last: Arc<AtomicU64>,
    idle: Duration,
    _live: Live,
    /// Its place under the `limits`, given back when the flow leaves the table.
    _slot: Slot,
}

impl Drop for Flow {
    fn drop(&mut self) {
        if let Some(h) = &self.replier {
            h.abort();
        }
    }
}

/// The NAT table in shards, one per listener of an address (`SO_REUSEPORT`): the kernel
/// keeps each flow's datagrams to one listener, so each listener's receive loop locks only
/// its own shard, and listeners on several CPUs never wait for each other. The i-th IPv4
/// and the i-th IPv6 listener share shard i.
pub(crate) struct NatTable {
    shards: Vec<Arc<Nat>>,
}

impl NatTable {
    pub(crate) fn new(cell: &Arc<SharedCell>, shards: usize) -> Arc<Self> {
        let n = shards.max(1);
        Arc::new(Self {
            shards: (0..n).map(|_| Nat::part(cell.clone(), n)).collect(),
        })
    }

    /// The shard of listener `i`.
    pub(crate) fn shard(&self, i: usize) -> Arc<Nat> {
        self.shards[i % self.shards.len()].clone()
    }

    /// Flows in the table now, over every shard.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Flows the sweeps removed for being idle, since start.
    pub(crate) fn evicted(&self) -> u64 {
        self.shards.iter().map(|s| s.evicted()).sum()
    }

    /// Every shard's sweep, until shutdown.
    pub(crate) async fn sweep(self: Arc<Self>, shutdown: Shutdown) {
        futures::future::join_all(
            self.shards
                .iter()
                .map(|s| s.clone().sweep(shutdown.clone())),
        )
        .await;
    }
}

/// One shard of the NAT table, with its pool of reply sockets.
pub(crate) struct Nat {
    /// The current rules and outbounds; each new flow is decided with what it holds then.
    cell: Arc<SharedCell>,
    start: Instant,
    flows: Mutex<HashMap<Key, Flow>>,
    /// Reply sockets by original destination; weak so the last flow's end frees the socket.
    replies: Mutex<HashMap<SocketAddr, Weak<UdpSocket>>>,
    /// Flows removed by the sweep for being idle, for the metrics.
    evicted: AtomicU64,
    /// Shards in the whole table: this one holds its share of `udp-table-size`.
    parts: usize,
}

impl Nat {
    /// A whole table in one shard.
    #[cfg(test)]
    pub(crate) fn new(cell: Arc<SharedCell>) -> Arc<Self> {
        Self::part(cell, 1)
    }

    /// One of `parts` shards.
    fn part(cell: Arc<SharedCell>, parts: usize) -> Arc<Self> {
        Arc::new(Self {
            cell,
            start: Instant::now(),
            flows: Mutex::new(HashMap::new()),
            replies: Mutex::new(HashMap::new()),
            evicted: AtomicU64::new(0),
            parts: parts.max(1),
        })
    }

    /// Flows in the table now.
    pub(crate) fn len(&self) -> usize {
        self.flows.lock().map_or(0, |f| f.len())
    }

    /// Flows the sweep removed for being idle, since start.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn shared(&self) -> Arc<Shared> {
        self.cell.load()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `f` on flow `key` if it is still the one whose clock is `last`.
    fn with_flow(&self, key: Key, last: &Arc<AtomicU64>, f: impl FnOnce(&mut Flow)) {
        if let Ok(mut flows) = self.flows.lock() {
            if let Some(flow) = flows.get_mut(&key).filter(|f| Arc::ptr_eq(&f.last, last)) {
                f(flow);
            }
        }
    }

    /// Removes the flow `key` if it is still the one whose activity clock is `last` (a newer
    /// flow under the same key stays), so the client's next datagram is decided afresh.
    fn forget(&self, key: Key, last: &Arc<AtomicU64>) {
        if let Ok(mut flows) = self.flows.lock() {
            if flows.get(&key).is_some_and(|f| Arc::ptr_eq(&f.last, last)) {
                flows.remove(&key);
            }
        }
    }

    /// Removes idle flows and dead reply sockets, every [`SWEEP`], until shutdown.
    pub(crate) async fn sweep(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(SWEEP) => {}
                () = shutdown.wait() => return,
            }
            let now = self.now_ms();
            if let Ok(mut flows) = self.flows.lock() {
                flows.retain(|(src, dst), f| {
                    let idle_ms = now.saturating_sub(f.last.load(Ordering::Relaxed));
                    let keep = u128::from(idle_ms) < f.idle.as_millis();
                    if !keep {
                        debug!("udp {src} -> {dst} idle, closed");
                        self.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    keep
                });
            }
            if let Ok(mut r) = self.replies.lock() {
                r.retain(|_, w| w.strong_count() > 0);
            }
        }
    }
}

/// Receives on a transparent listener, a batch per system call, until shutdown.
pub(crate) async fn serve(listener: UdpSocket, nat: Arc<Nat>, shutdown: Shutdown) {
    let mut batch = RecvBatch::new(BATCH, MAX_DATAGRAM);
    loop {
        let got = tokio::select! {
            r = listener.async_io(Interest::READABLE, || batch.recv(&listener)) => r,
            () = shutdown.wait() => return,
        };
        match got {
            Ok(_) => nat.forward_batch(&batch),
            Err(e) => debug!(error = %e, "udp receive failed"),
        }
    }
}

impl Nat {
    /// Sends a batch of client datagrams on their flows, creating flows on first sight.
    /// DIRECT datagrams are gathered per socket and sent with one sendmmsg each, after the
    /// table is unlocked; a flow's datagrams keep their order.
    fn forward_batch(self: &Arc<Self>, batch: &RecvBatch) {
        let now = self.now_ms();
        let mut runs: Vec<(Arc<UdpSocket>, Vec<&[u8]>)> = Vec::new();
        {
            let Ok(mut flows) = self.flows.lock() else {
                return;
            };
            for i in 0..batch.len() {
                let Some((d, data)) = batch.get(i) else {
                    debug!("udp datagram too large or without source dropped");
                    continue;
                };
                let Some(dst) = d.orig_dst else {
                    debug!(
                        "udp datagram from {} without original destination dropped",
                        d.src
                    );
                    continue;
                };
                let (src, dst) = (canonical(d.src), canonical(dst));
                if let Some(sock) = self.forward(&mut flows, src, dst, data, now) {
                    match runs.last_mut() {
                        Some((s, v)) if Arc::ptr_eq(s, &sock) => v.push(data),
                        _ => runs.push((sock, vec![data])),
                    }
                }
            }
        }
        for (sock, datagrams) in runs {
            send_batch_or_drop(&sock, &datagrams, None);
        }
    }

    /// One client datagram: delivered, held or dropped here, or (a DIRECT flow) the
    /// socket it is to be sent on, left to the caller to batch.
    fn forward(
        self: &Arc<Self>,
        flows: &mut HashMap<Key, Flow>,
        src: SocketAddr,
        dst: SocketAddr,
        data: &[u8],
        now: u64,
    ) -> Option<Arc<UdpSocket>> {
        if let Some(f) = flows.get_mut(&(src, dst)) {
            f.last.store(now, Ordering::Relaxed);
            if let Some(r) = &f.reg {
                r.add_up(data.len());
            }
            match &mut f.out {
                FlowOut::Direct(s) => return Some(s.clone()),
                FlowOut::Held(_) => self.held_datagram(f, (src, dst), data),
                out => deliver(out, data, src, dst),
            }
            return None;
        }
        // Over a cap: the datagram is dropped, and the next one of this key asks again.
        let shared = self.shared();
        let own = shared.io.is_local(src.ip());
        let limits = shared.limits.clone();
        let slot = limits.admit_from(tpgate_core::net::Network::Udp, src.ip(), own)?;
        let table = limits.udp_table_size().div_ceil(self.parts).max(1);
        if flows.len() >= table {
            evict(flows, table);
        }
        let mut flow = Flow {
            out: FlowOut::Drop,
            replier: None,
            reg: None,
            last: Arc::new(AtomicU64::new(now)),
            idle: if dst.port() == 53 { IDLE_DNS } else { IDLE },
            _live: LIVE.enter(),
            _slot: slot,
        };
        self.first_datagram(&mut flow, (src, dst), data);
        flows.insert((src, dst), flow);
        None
    }
}

/// Makes room in a full table: drops the least recently active eighth of the flows in one
/// pass, so a churn of new flows costs O(1) per flow on average and never locks new
/// clients out.
fn evict(flows: &mut HashMap<Key, Flow>, table: usize) {
    let mut lasts: Vec<u64> = flows
        .values()
        .map(|f| f.last.load(Ordering::Relaxed))
        .collect();
    let k = lasts.len() / 8;
    let (_, cutoff, _) = lasts.select_nth_unstable(k);
    let cutoff = *cutoff;
    let before = flows.len();
    flows.retain(|_, f| f.last.load(Ordering::Relaxed) > cutoff);
    debug!(
        evicted = before - flows.len(),
        "udp NAT table full ({table} flows): least recently active flows evicted"
    );
}

/// One client datagram onto a decided flow's way out.
fn deliver(out: &FlowOut, data: &[u8], src: SocketAddr, dst: SocketAddr) {
    match out {
        FlowOut::Direct(s) => send_batch_or_drop(s, &[data], None),
        FlowOut::Queue(tx) => {
            if tx.try_send(Bytes::copy_from_slice(data)).is_err() {
                debug!("udp {src} -> {dst} datagram dropped: queue full");
            }
        }
        FlowOut::Drop | FlowOut::Held(_) => {}
    }
}

#[cfg(test)]
mod tests;
