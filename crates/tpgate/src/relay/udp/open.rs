//! A new UDP flow: drive its decider (the same one TCP uses) while its datagrams are held,
//! answering what it asks: the owning process and the real address of a fake-ip name in
//! tasks (the table is never locked across I/O), the first datagrams by sniffing what is
//! held and what arrives, for at most the sniffer's timeout. Once decided: log it, open its
//! way out, register it, and send what was held.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use socket2::Type;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tpgate_core::flow::{Decided, DirectTo, Need, Refusal, Step};
use tpgate_core::net::{Destination, Network};
use tpgate_core::sniff::quic::QuicSniffer;
use tpgate_sys::UdpRole;
use tracing::{debug, info, warn};

use super::{deliver, pump, Flow, FlowOut, Key, Nat, Pending, QUEUE};
use crate::outbound::{Exit, Route, Upstream};
use crate::relay::registry::{Entry, FlowInfo};
use crate::relay::{log_decided, Shared};

impl Nat {
    /// Sets up a flow for its first datagram `data`: held, and the flow decided as far as
    /// it can be now.
    pub(super) fn first_datagram(self: &Arc<Self>, flow: &mut Flow, (src, dst): Key, data: &[u8]) {
        let mut pending = Box::new(Pending {
            decider: Shared::decider(Network::Udp, src, dst),
            sniffer: None,
            held: Vec::new(),
        });
        pending.hold(data);
        flow.out = FlowOut::Held(pending);
        self.advance(flow, (src, dst));
    }

    /// Another datagram of a flow still being decided: held, and sniffed when the decider
    /// waits for a name.
    pub(super) fn held_datagram(self: &Arc<Self>, flow: &mut Flow, key: Key, data: &[u8]) {
        let FlowOut::Held(p) = &mut flow.out else {
            return;
        };
        if let Some(name) = p.hold(data) {
            p.sniffer = None;
            p.decider.on_sniffed(name, &self.shared().settings);
            self.advance(flow, key);
        }
    }

    /// Polls the flow's decider until it needs something that takes time (asked for in a
    /// task, which comes back here) or decides.
    fn advance(self: &Arc<Self>, f: &mut Flow, key: Key) {
        let (src, dst) = key;
        loop {
            let FlowOut::Held(p) = &mut f.out else {
                return;
            };
            if p.sniffer.is_some() {
                return;
            }
            let shared = self.shared();
            match p
                .decider
                .poll(&shared.engine, &*shared.io, &shared.settings)
            {
                Step::Need(Need::Process) => {
                    let (nat, last) = (self.clone(), f.last.clone());
                    let lookup = shared.io.process(Network::Udp, src, dst);
                    tokio::spawn(async move {
                        let process = lookup.await;
                        nat.clone().with_flow(key, &last, |f| {
                            if let FlowOut::Held(p) = &mut f.out {
                                p.decider.on_process(process);
                                nat.advance(f, key);
                            }
                        });
                    });
                    return;
                }
                Step::Need(Need::FirstBytes { timeout }) => {
                    p.sniffer = Some(QuicSniffer::new());
                    match p.sniff_held() {
                        Some(name) => {
                            p.sniffer = None;
                            p.decider.on_sniffed(name, &shared.settings);
                        }
                        None => {
                            self.sniff_for_at_most(key, f.last.clone(), timeout);
                            return;
                        }
                    }
                }
                Step::Need(Need::RealAddr { name }) => {
                    let (nat, last) = (self.clone(), f.last.clone());
                    tokio::spawn(async move {
                        let real = crate::relay::tcp::resolve_for_rules(&nat.shared(), &name).await;
                        nat.clone().with_flow(key, &last, |f| {
                            if let FlowOut::Held(p) = &mut f.out {
                                p.decider.on_real_addr(real);
                                nat.advance(f, key);
                            }
                        });
                    });
                    return;
                }
                Step::Refused(r) => {
                    match r {
                        Refusal::OwnListener => warn!("udp {src} -> {dst} refused: {}", r.reason()),
                        Refusal::UnknownFakeIp => {
                            info!("udp {src} -> {dst} dropped: {}", r.reason())
                        }
                    }
                    f.out = FlowOut::Drop;
                    return;
                }
                Step::Decided(d) => return self.apply(f, key, &d),
            }
        }
    }

    /// The client may send nothing more until it hears back: decide without a name when
    /// the sniffing wait is over.
    fn sniff_for_at_most(self: &Arc<Self>, key: Key, last: Arc<AtomicU64>, wait: Duration) {
        let nat = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let n = nat.clone();
            nat.with_flow(key, &last, |f| {
                if let FlowOut::Held(p) = &mut f.out {
                    if p.sniffer.take().is_some() {
                        debug!("udp {} -> {} sniffing timed out", key.0, key.1);
                        p.decider.on_sniffed(None, &n.shared().settings);
                        n.advance(f, key);
                    }
                }
            });
        });
    }

    /// Logs the decision, opens the flow's way out, registers it and sends what was held.
    fn apply(self: &Arc<Self>, f: &mut Flow, (src, dst): Key, d: &Decided) {
        let route = self.shared().route(d);
        log_decided(d, &route.label);
        let held = match std::mem::replace(&mut f.out, FlowOut::Drop) {
            FlowOut::Held(p) => p.held,
            _ => Vec::new(),
        };
        let opened = match &route.exit {
            Exit::Reject | Exit::RejectDrop => return,
            _ => {
                let reg = self
                    .shared()
                    .registry
                    .register(FlowInfo::new(d, &route.label));
                let entry = reg.entry();
                f.reg = Some(reg);
                self.open(f, (src, dst), d, &route, entry)
            }
        };
        match opened {
            Ok((out, task)) => {
                f.out = out;
                f.replier = Some(task);
            }
            Err(e) => {
                info!("udp {src} -> {dst} cannot open: {e}");
                f.reg = None;
                return;
            }
        }
        if let Some(reg) = &f.reg {
            reg.add_up(held.iter().map(|d| d.len()).sum());
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

    /// Opens the way out `route` says: DIRECT to the address (UDP has no
    /// `override-destination`) or to a fake-ip name resolved for real, or one upstream.
    fn open(
        self: &Arc<Self>,
        f: &Flow,
        key: Key,
        d: &Decided,
        route: &Route,
        entry: Arc<Entry>,
    ) -> io::Result<(FlowOut, AbortHandle)> {
        let last = f.last.clone();
        match (&route.exit, d.direct_to()) {
            (Exit::Direct, DirectTo::FakeName(name, _)) => {
                self.open_direct_named(key, &name, last, entry)
            }
            (Exit::Direct, _) => self.open_direct(key, last, entry),
            (Exit::Chain(chain), _) if !chain.is_empty() => {
                let hops = (chain.clone(), route.clone());
                self.open_proxied(key, d.destination(), hops, last, entry)
            }
            (Exit::Chain(_), _) => Err(io::Error::new(io::ErrorKind::InvalidInput, "empty chain")),
            (Exit::Reject | Exit::RejectDrop, _) => {
                Err(io::Error::new(io::ErrorKind::InvalidInput, "rejected"))
            }
        }
    }

    fn open_direct(
        self: &Arc<Self>,
        (src, dst): Key,
        last: Arc<AtomicU64>,
        entry: Arc<Entry>,
    ) -> io::Result<(FlowOut, AbortHandle)> {
        let mark = self.shared().routing_mark.0;
        let s = tpgate_sys::outbound_socket(dst.is_ipv6(), Type::DGRAM, mark)?;
        s.connect(&dst.into())?;
        let out = Arc::new(UdpSocket::from_std(s.into())?);
        let reply = self.reply_socket(dst)?;
        let task = tokio::spawn(pump::replies(
            self.clone(),
            (out.clone(), reply),
            (src, dst),
            last,
            entry,
        ));
        Ok((FlowOut::Direct(out), task.abort_handle()))
    }

    /// DIRECT to a fake address: the flow's task resolves `name` for real (through the
    /// DNS server's upstreams), then relays both ways; datagrams wait in the queue meanwhile.
    fn open_direct_named(
        self: &Arc<Self>,
        (src, dst): Key,
        name: &str,
        last: Arc<AtomicU64>,
        entry: Arc<Entry>,
    ) -> io::Result<(FlowOut, AbortHandle)> {
        let reply = self.reply_socket(dst)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(pump::direct_named(
            self.clone(),
            name.to_owned(),
            (src, dst),
            (reply, rx),
            last,
            entry,
        ));
        Ok((FlowOut::Queue(tx), task.abort_handle()))
    }

    /// A flow through an upstream (or a relay chain): its task opens the association
    /// (datagrams meanwhile wait in the bounded queue) and then pumps both ways.
    fn open_proxied(
        self: &Arc<Self>,
        (src, dst): Key,
        target: Destination,
        hop: (Vec<Arc<Upstream>>, Route),
        last: Arc<AtomicU64>,
        entry: Arc<Entry>,
    ) -> io::Result<(FlowOut, AbortHandle)> {
        let reply = self.reply_socket(dst)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(pump::proxied(
            self.clone(),
            hop,
            (src, dst, target),
            (reply, rx),
            last,
            entry,
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
            tpgate_sys::transparent_udp_socket(from, self.shared().routing_mark.0, UdpRole::Reply)?;
        let s = Arc::new(UdpSocket::from_std(std)?);
        pool.insert(from, Arc::downgrade(&s));
        Ok(s)
    }
}
