//! A new UDP flow: sniff its first datagrams when the port says so, decide it (at once, or
//! in a task when deciding needs I/O: the owning process, or the real address of a fake-ip
//! name for address rules), log it, and open its way out.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use socket2::Type;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tpgate_core::net::{Destination, Network};
use tpgate_core::sniff::quic::QuicSniffer;
use tpgate_sys::UdpRole;
use tracing::{debug, info, warn};

use super::{deliver, pump, Flow, FlowOut, Key, Nat, Pending, QUEUE};
use crate::outbound::{Leaf, Pick, Upstream};
use crate::relay::{destination, host_field, origin_name, FlowName, NameNeed, Verdict, Way};

impl Nat {
    /// Sets up a flow for its first datagram `data`. Returns the socket to send `data` on
    /// when the flow turned out DIRECT at once (the caller batches the send); otherwise
    /// `data` was queued, held or dropped here.
    pub(super) fn first_datagram(
        self: &Arc<Self>,
        flow: &mut Flow,
        src: SocketAddr,
        dst: SocketAddr,
        data: &[u8],
    ) -> Option<Arc<UdpSocket>> {
        if self.shared.is_self(dst) {
            warn!("udp {src} -> {dst} refused: that is tpgate's own listener");
            return None;
        }
        // A fake address names itself and a flow rejected by its address needs no name.
        // (With process rules the verdict waits for the process, so sniff as usual.)
        let sniffing = self.sniffs(dst.port())
            && (self.shared.needs_process(src)
                || self.shared.name_need(Network::Udp, src, dst, None) != NameNeed::Nothing);
        let mut pending = Box::new(Pending {
            sniffer: sniffing.then(QuicSniffer::new),
            held: Vec::new(),
        });
        if sniffing {
            let done = pending.hold(data);
            flow.out = FlowOut::Held(pending);
            match done {
                Some(host) => self.settle(flow, src, dst, host),
                None => self.sniff_for_at_most((src, dst), flow.last.clone()),
            }
            return None;
        }
        flow.out = FlowOut::Held(pending);
        self.settle(flow, src, dst, None);
        match &mut flow.out {
            FlowOut::Direct(s) => Some(s.clone()),
            FlowOut::Held(p) => {
                p.hold(data);
                None
            }
            out => {
                deliver(out, data, src, dst);
                None
            }
        }
    }

    /// Whether new flows to `port` are sniffed as QUIC first.
    fn sniffs(&self, port: u16) -> bool {
        let s = &self.shared.sniffer;
        s.enable && s.parse_pure_ip && s.quic_ports.iter().any(|r| r.contains(port))
    }

    /// The client may send nothing more until it hears back: decide with the address when
    /// the sniffing wait is over.
    fn sniff_for_at_most(self: &Arc<Self>, key: Key, last: Arc<AtomicU64>) {
        let (nat, wait) = (self.clone(), self.shared.sniffer.timeout);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let n = nat.clone();
            nat.with_flow(key, &last, |f| {
                if matches!(&f.out, FlowOut::Held(p) if p.sniffer.is_some()) {
                    debug!("udp {} -> {} sniffing timed out", key.0, key.1);
                    n.settle(f, key.0, key.1, None);
                }
            });
        });
    }

    /// Sniffing of a held flow is over (`host`: the name it found): decide it, at once when
    /// that needs no I/O, else in a task while its datagrams stay held.
    pub(super) fn settle(
        self: &Arc<Self>,
        f: &mut Flow,
        src: SocketAddr,
        dst: SocketAddr,
        host: Option<String>,
    ) {
        if let FlowOut::Held(p) = &mut f.out {
            p.sniffer = None;
        }
        let host = host.filter(|h| self.shared.sniffer.accepts(h));
        let Some(name) = self.shared.flow_name(dst.ip(), host) else {
            info!("udp {src} -> {dst} dropped: a fake-ip address that stands for no name");
            f.out = FlowOut::Drop;
            return;
        };
        let host = name.host.as_deref();
        let resolve = name.fake && self.shared.needs_real_dst(Network::Udp, src, dst, host);
        if resolve || self.shared.needs_process(src) {
            let (nat, last) = (self.clone(), f.last.clone());
            tokio::spawn(async move { nat.decide_later((src, dst), name, resolve, last).await });
            return;
        }
        let v = self.shared.decide(Network::Udp, src, dst, host, None);
        self.apply(f, src, dst, &name, v);
    }

    /// Decides a held flow in its own task: its owning process looked up, and (`resolve`)
    /// its fake address's name resolved for the address rules.
    async fn decide_later(
        self: Arc<Self>,
        (src, dst): Key,
        name: FlowName,
        resolve: bool,
        last: Arc<AtomicU64>,
    ) {
        let host = name.host.as_deref();
        let rules_dst = match host {
            Some(h) if resolve => self.shared.real_dst_for_rules(h, dst).await,
            _ => dst,
        };
        let v = self
            .shared
            .decide_flow(Network::Udp, (src, dst), rules_dst, host)
            .await;
        let nat = self.clone();
        self.with_flow((src, dst), &last, |f| {
            if matches!(f.out, FlowOut::Held(_)) {
                nat.apply(f, src, dst, &name, v);
            }
        });
    }

    /// Logs the verdict, opens the flow's way out and sends what was held on it.
    fn apply(
        self: &Arc<Self>,
        f: &mut Flow,
        src: SocketAddr,
        dst: SocketAddr,
        name: &FlowName,
        v: Verdict,
    ) {
        let (host, fake) = (name.host.as_deref(), name.fake);
        info!(
            "udp {src} -> {dst} origin={}{}{} rule=\"{}\" action={}",
            origin_name(v.origin),
            host_field(host),
            v.who,
            v.rule,
            v.route()
        );
        let last = f.last.clone();
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
                    let target = destination(dst, host);
                    Some(self.open_proxied(src, dst, target, up, pick, last.clone()))
                }
                Leaf::Chain(_) => {
                    info!("udp {src} -> {dst} dropped: relay chains carry TCP only");
                    None
                }
            },
            Way::Reject | Way::RejectDrop => None,
        };
        let held = match std::mem::replace(&mut f.out, FlowOut::Drop) {
            FlowOut::Held(p) => p.held,
            _ => Vec::new(),
        };
        match opened {
            Some(Ok((out, task))) => {
                f.out = out;
                f.replier = Some(task);
            }
            Some(Err(e)) => info!("udp {src} -> {dst} cannot open: {e}"),
            None => {}
        }
        match &f.out {
            // What was held goes in one batch.
            FlowOut::Direct(s) => {
                let held: Vec<&[u8]> = held.iter().map(|d| d.as_ref()).collect();
                pump::send_batch_or_drop(s, &held, None);
            }
            out => {
                for d in &held {
                    deliver(out, d, src, dst);
                }
            }
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
        let task = tokio::spawn(pump::replies(out.clone(), reply, src, dst, last, nat));
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
        let task = tokio::spawn(pump::direct_named(
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
        let task = tokio::spawn(pump::proxied(
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

    /// The transparent socket that answers from `from`, shared by every flow to it.
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
