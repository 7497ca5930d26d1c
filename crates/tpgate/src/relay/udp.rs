//! UDP: one transparent listener receives every intercepted datagram with its original
//! destination; a bounded NAT table maps (client, original destination) to a flow with its
//! own marked outbound socket; replies leave from a transparent socket bound to the original
//! destination, shared by every flow to that destination. No socket is created per packet.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use socket2::{SockRef, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tpgate_core::net::{Destination, Network};
use tpgate_core::sniff::quic::QuicSniffer;
use tpgate_core::sniff::Sniffed;
use tpgate_sys::{recv_with_orig_dst, Datagram, UdpRole};
use tracing::{debug, info, warn};

use super::tcp::canonical;
use super::{destination, host_field, origin_name, Shared, Way};
use crate::outbound::{Leaf, Pick, Upstream};
use crate::shutdown::Shutdown;

/// At most this many flows; datagrams of new flows beyond it are dropped.
const MAX_FLOWS: usize = 16_384;
const IDLE: Duration = Duration::from_secs(60);
/// DNS and other port-53 exchanges are one question, one answer.
const IDLE_DNS: Duration = Duration::from_secs(10);
const SWEEP: Duration = Duration::from_secs(2);
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams waiting for a proxied flow's task; more are dropped.
const QUEUE: usize = 256;

thread_local! {
    /// One receive buffer per worker thread for replies, so an idle flow holds no buffer.
    static REPLY_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

type Key = (SocketAddr, SocketAddr);

/// Where a flow's client datagrams go.
enum FlowOut {
    /// Rejected, or could not be opened: dropped until the flow goes idle.
    Drop,
    /// DIRECT: straight to a connected socket, no copy, no queue.
    Direct(Arc<UdpSocket>),
    /// Through an upstream: a bounded queue to the flow's task (full: dropped).
    Queue(mpsc::Sender<Bytes>),
    /// Not decided yet: reading the client's first QUIC datagrams for the name; they are
    /// held (bounded) and sent once the flow is decided.
    Sniffing(Box<Pending>),
}

struct Pending {
    sniffer: QuicSniffer,
    held: Vec<Bytes>,
}

/// Datagrams held while sniffing: a QUIC client's first flight is a few Initials.
const MAX_HELD: usize = 16;

struct Flow {
    out: FlowOut,
    replier: Option<AbortHandle>,
    /// Milliseconds since `Nat::start` of the last datagram either way.
    last: Arc<AtomicU64>,
    idle: Duration,
}

impl Drop for Flow {
    fn drop(&mut self) {
        if let Some(h) = &self.replier {
            h.abort();
        }
    }
}

/// The NAT table and the pool of reply sockets.
pub(crate) struct Nat {
    shared: Arc<Shared>,
    start: Instant,
    flows: Mutex<HashMap<Key, Flow>>,
    /// Reply sockets by original destination; weak so the last flow's end frees the socket.
    replies: Mutex<HashMap<SocketAddr, Weak<UdpSocket>>>,
}

impl Nat {
    pub(crate) fn new(shared: Arc<Shared>) -> Arc<Self> {
        Arc::new(Self {
            shared,
            start: Instant::now(),
            flows: Mutex::new(HashMap::new()),
            replies: Mutex::new(HashMap::new()),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Removes the flow `key` if it is still the one whose activity clock is `last` (a newer
    /// flow under the same key stays).
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

/// Receives on a transparent listener until shutdown.
pub(crate) async fn serve(listener: UdpSocket, nat: Arc<Nat>, shutdown: Shutdown) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let got = tokio::select! {
            r = listener.async_io(Interest::READABLE, || recv_with_orig_dst(&listener, &mut buf)) => r,
            () = shutdown.wait() => return,
        };
        match got {
            Ok(Datagram {
                len,
                src,
                orig_dst: Some(dst),
            }) => {
                nat.forward(canonical(src), canonical(dst), &buf[..len]);
            }
            Ok(d) => debug!(
                "udp datagram from {} without original destination dropped",
                d.src
            ),
            Err(e) => {
                debug!(error = %e, "udp receive failed");
            }
        }
    }
}

impl Nat {
    /// Sends one client datagram on its flow, creating the flow on first sight.
    fn forward(self: &Arc<Self>, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        let now = self.now_ms();
        let Ok(mut flows) = self.flows.lock() else {
            return;
        };
        if let Some(f) = flows.get_mut(&(src, dst)) {
            f.last.store(now, Ordering::Relaxed);
            let host = match &mut f.out {
                FlowOut::Sniffing(p) => {
                    if p.held.len() < MAX_HELD {
                        p.held.push(Bytes::copy_from_slice(data));
                    }
                    match p.sniffer.push(data) {
                        Sniffed::NeedMore if p.held.len() < MAX_HELD => return,
                        Sniffed::Name(n) => Some(n),
                        _ => None,
                    }
                }
                out => return deliver(out, data, src, dst),
            };
            let last = f.last.clone();
            if let Some(f) = flows.get_mut(&(src, dst)) {
                self.finish_sniffing(f, src, dst, &last, host);
            }
            return;
        }
        if flows.len() >= MAX_FLOWS {
            debug!("udp {src} -> {dst} dropped: NAT table full ({MAX_FLOWS} flows)");
            return;
        }
        let idle = if dst.port() == 53 { IDLE_DNS } else { IDLE };
        let last = Arc::new(AtomicU64::new(now));
        let mut flow = Flow {
            out: FlowOut::Drop,
            replier: None,
            last: last.clone(),
            idle,
        };
        if self.shared.is_self(dst) {
            warn!("udp {src} -> {dst} refused: that is tpgate's own listener");
        } else if self.sniffs(dst.port()) {
            let mut sniffer = QuicSniffer::new();
            match sniffer.push(data) {
                Sniffed::NeedMore => {
                    flow.out = FlowOut::Sniffing(Box::new(Pending {
                        sniffer,
                        held: vec![Bytes::copy_from_slice(data)],
                    }));
                    // The client may send nothing more until it hears back: decide with
                    // the address when the wait is over.
                    let (nat, wait) = (self.clone(), self.shared.sniffer.timeout);
                    let clock = last.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        nat.sniffing_timed_out((src, dst), &clock);
                    });
                }
                found => {
                    let host = match found {
                        Sniffed::Name(n) => Some(n),
                        _ => None,
                    };
                    self.open(&mut flow, src, dst, &last, host.as_deref());
                    deliver(&flow.out, data, src, dst);
                }
            }
        } else {
            self.open(&mut flow, src, dst, &last, None);
            deliver(&flow.out, data, src, dst);
        }
        flows.insert((src, dst), flow);
    }

    /// Whether new flows to `port` are sniffed as QUIC first.
    fn sniffs(&self, port: u16) -> bool {
        let s = &self.shared.sniffer;
        s.enable && s.parse_pure_ip && s.quic_ports.iter().any(|r| r.contains(port))
    }

    /// Sniffing of `f` is over (a name, or none): decide, open, send what was held.
    fn finish_sniffing(
        self: &Arc<Self>,
        f: &mut Flow,
        src: SocketAddr,
        dst: SocketAddr,
        last: &Arc<AtomicU64>,
        host: Option<String>,
    ) {
        let FlowOut::Sniffing(p) = std::mem::replace(&mut f.out, FlowOut::Drop) else {
            return;
        };
        let host = host.filter(|h| self.shared.sniffer.accepts(h));
        self.open(f, src, dst, last, host.as_deref());
        for d in &p.held {
            deliver(&f.out, d, src, dst);
        }
    }

    /// The sniffing wait of flow `key` (still the one with clock `last`) is over.
    fn sniffing_timed_out(self: &Arc<Self>, key: Key, last: &Arc<AtomicU64>) {
        let Ok(mut flows) = self.flows.lock() else {
            return;
        };
        if let Some(f) = flows.get_mut(&key) {
            if Arc::ptr_eq(&f.last, last) && matches!(f.out, FlowOut::Sniffing(_)) {
                debug!("udp {} -> {} sniffing timed out", key.0, key.1);
                self.finish_sniffing(f, key.0, key.1, last, None);
            }
        }
    }

    /// Decides a new flow (with the sniffed `host`, if any), logs it and opens its way out.
    fn open(
        self: &Arc<Self>,
        flow: &mut Flow,
        src: SocketAddr,
        dst: SocketAddr,
        last: &Arc<AtomicU64>,
        host: Option<&str>,
    ) {
        let Some(name) = self.shared.flow_name(dst.ip(), host.map(str::to_owned)) else {
            info!("udp {src} -> {dst} dropped: a fake-ip address that stands for no name");
            return;
        };
        let (host, fake) = (name.host.as_deref(), name.fake);
        let v = self.shared.decide(Network::Udp, src, dst, host);
        info!(
            "udp {src} -> {dst} origin={}{}{} rule=\"{}\" action={}",
            origin_name(v.origin),
            host_field(host),
            v.who,
            v.rule,
            v.route()
        );
        let target = destination(dst, host);
        let direct = |nat: &Arc<Self>| match host {
            Some(name) if fake => nat.open_direct_named(src, dst, name, last.clone()),
            _ => nat.open_direct(src, dst, last.clone()),
        };
        let opened = match v.way {
            Way::Direct => Some(direct(self)),
            Way::Proxy(pick) => match &pick.leaf {
                Leaf::Direct => Some(direct(self)),
                Leaf::Reject => None,
                Leaf::Chain(chain) if chain.len() == 1 => {
                    let up = chain[0].clone();
                    Some(self.open_proxied(src, dst, target, up, pick, last.clone()))
                }
                Leaf::Chain(_) => {
                    info!("udp {src} -> {dst} dropped: relay chains carry TCP only");
                    None
                }
            },
            Way::Reject | Way::RejectDrop => None,
        };
        match opened {
            Some(Ok((out, task))) => {
                flow.out = out;
                flow.replier = Some(task);
            }
            Some(Err(e)) => info!("udp {src} -> {dst} cannot open: {e}"),
            None => {}
        }
    }

    fn open_direct(
        self: &Arc<Self>,
        src: SocketAddr,
        dst: SocketAddr,
        last: Arc<AtomicU64>,
    ) -> io::Result<(FlowOut, AbortHandle)> {
        let mark = self.shared.routing_mark;
        let s = tpgate_sys::outbound_socket(dst.is_ipv6(), Type::DGRAM, mark)?;
        s.connect(&dst.into())?;
        let out = Arc::new(UdpSocket::from_std(s.into())?);
        let reply = self.reply_socket(dst)?;
        let nat = self.clone();
        let task = tokio::spawn(replies(out.clone(), reply, src, dst, last, nat));
        Ok((FlowOut::Direct(out), task.abort_handle()))
    }

    /// DIRECT to a fake address: the flow's task resolves `name` for real (through the
    /// DNS server's upstreams), then relays both ways; datagrams wait in the queue meanwhile.
    fn open_direct_named(
        self: &Arc<Self>,
        src: SocketAddr,
        dst: SocketAddr,
        name: &str,
        last: Arc<AtomicU64>,
    ) -> io::Result<(FlowOut, AbortHandle)> {
        let reply = self.reply_socket(dst)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(direct_named(
            self.clone(),
            name.to_owned(),
            (src, dst),
            reply,
            rx,
            last,
        ));
        Ok((FlowOut::Queue(tx), task.abort_handle()))
    }

    /// A flow through one upstream: its task opens the association (datagrams meanwhile
    /// wait in the bounded queue) and then pumps both ways.
    fn open_proxied(
        self: &Arc<Self>,
        src: SocketAddr,
        dst: SocketAddr,
        target: Destination,
        up: Arc<Upstream>,
        pick: Pick,
        last: Arc<AtomicU64>,
    ) -> io::Result<(FlowOut, AbortHandle)> {
        let reply = self.reply_socket(dst)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(proxied(
            self.clone(),
            up,
            pick,
            (src, dst, target),
            reply,
            rx,
            last,
        ));
        Ok((FlowOut::Queue(tx), task.abort_handle()))
    }

    fn reply_socket(&self, from: SocketAddr) -> io::Result<Arc<UdpSocket>> {
        let mut pool = self
            .replies
            .lock()
            .map_err(|_| io::Error::other("reply pool poisoned"))?;
        if let Some(s) = pool.get(&from).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let std =
            tpgate_sys::transparent_udp_socket(from, self.shared.routing_mark, UdpRole::Reply)?;
        let s = Arc::new(UdpSocket::from_std(std)?);
        pool.insert(from, Arc::downgrade(&s));
        Ok(s)
    }
}

/// Server -> client: everything the flow's socket receives goes back from `dst`.
async fn replies(
    out: Arc<UdpSocket>,
    reply: Arc<UdpSocket>,
    client: SocketAddr,
    dst: SocketAddr,
    last: Arc<AtomicU64>,
    nat: Arc<Nat>,
) {
    loop {
        if out.readable().await.is_err() {
            return;
        }
        let r = REPLY_BUF.with(|b| {
            let mut b = b.borrow_mut();
            let n = out.try_recv(&mut b[..])?;
            if let Err(e) = SockRef::from(&*reply).send_to(&b[..n], &client.into()) {
                debug!("udp {dst} -> {client} reply dropped: {e}");
            }
            Ok::<_, io::Error>(n)
        });
        match r {
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

/// Sends without waiting: a full socket buffer drops the datagram (UDP semantics) instead of
/// queueing without bound. Goes straight to the socket because tokio's `try_send` refuses
/// until the reactor has once reported the socket writable.
#[allow(clippy::too_many_arguments)]
async fn proxied(
    nat: Arc<Nat>,
    up: Arc<Upstream>,
    pick: Pick,
    (client, dst, target): (SocketAddr, SocketAddr, Destination),
    reply: Arc<UdpSocket>,
    mut rx: mpsc::Receiver<Bytes>,
    last: Arc<AtomicU64>,
) {
    let outbounds = &nat.shared.outbounds;
    let (mut tx_half, mut rx_half) = match up.open_udp(&outbounds.ctx, &target).await {
        Ok(halves) => halves,
        Err(e) => {
            outbounds.report_error(&pick, &e);
            info!("udp {client} -> {dst} via {} failed: {e}", pick.route);
            // Forget the flow, so the client's next datagram is decided again (a group has
            // moved off a dead member by now) instead of vanishing until the flow idles out.
            nat.forget((client, dst), &last);
            return;
        }
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            pkt = rx.recv() => match pkt {
                Some(p) => {
                    if let Err(e) = tx_half.send(&target, &p).await {
                        debug!("udp {client} -> {dst} via {}: send failed: {e}", pick.route);
                    }
                }
                None => return,
            },
            r = rx_half.recv(&mut buf) => match r {
                Ok(n) => {
                    if let Err(e) = SockRef::from(&*reply).send_to(&buf[..n], &client.into()) {
                        debug!("udp {dst} -> {client} reply dropped: {e}");
                    }
                    last.store(nat.now_ms(), Ordering::Relaxed);
                }
                Err(e) => {
                    debug!("udp {client} -> {dst} via {} ended: {e}", pick.route);
                    return;
                }
            },
        }
    }
}

/// The task of a DIRECT flow to a fake address: resolve, connect a marked socket, relay.
async fn direct_named(
    nat: Arc<Nat>,
    name: String,
    (client, dst): (SocketAddr, SocketAddr),
    reply: Arc<UdpSocket>,
    mut rx: mpsc::Receiver<Bytes>,
    last: Arc<AtomicU64>,
) {
    let opened = async {
        let real = nat.shared.resolve_real(&name, dst.port()).await?;
        let s = tpgate_sys::outbound_socket(real.is_ipv6(), Type::DGRAM, nat.shared.routing_mark)?;
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
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            pkt = rx.recv() => match pkt {
                Some(p) => send_or_drop(&out, &p),
                None => return,
            },
            r = out.recv(&mut buf) => match r {
                Ok(n) => {
                    if let Err(e) = SockRef::from(&*reply).send_to(&buf[..n], &client.into()) {
                        debug!("udp {dst} -> {client} reply dropped: {e}");
                    }
                    last.store(nat.now_ms(), Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    debug!("udp {client} -> {dst} ended: {e}");
                    return;
                }
            },
        }
    }
}

/// One client datagram onto a decided flow's way out.
fn deliver(out: &FlowOut, data: &[u8], src: SocketAddr, dst: SocketAddr) {
    match out {
        FlowOut::Direct(s) => send_or_drop(s, data),
        FlowOut::Queue(tx) => {
            if tx.try_send(Bytes::copy_from_slice(data)).is_err() {
                debug!("udp {src} -> {dst} datagram dropped: queue full");
            }
        }
        FlowOut::Drop | FlowOut::Sniffing(_) => {}
    }
}

fn send_or_drop(out: &UdpSocket, data: &[u8]) {
    if let Err(e) = SockRef::from(out).send(data) {
        debug!("udp datagram dropped: {e}");
    }
}
