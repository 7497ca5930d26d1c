//! The connection registry: every live TCP connection and UDP flow that was decided and
//! given a way out, with an id, what it is (addresses, origin, name and where it came from,
//! process, rule, route), byte counters its relay bumps (one relaxed atomic add per chunk
//! or datagram batch) and a handle that closes it. The controller's `/connections`, the
//! metrics and the logs read it; closing an entry ends that flow's relay.
//!
//! Deliberately not here: rejected flows (they are logged and gone) and the relays
//! themselves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Notify;
use tpgate_core::flow::{Decided, HostFrom};
use tpgate_core::net::{Network, Origin};
use tpgate_core::rules::ProcessInfo;

/// What a registered flow is; fixed once it is decided.
#[derive(Debug, Clone)]
pub(crate) struct FlowInfo {
    pub(crate) network: Network,
    pub(crate) client: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) origin: Origin,
    pub(crate) host: Option<String>,
    pub(crate) host_from: Option<HostFrom>,
    pub(crate) process: Option<ProcessInfo>,
    /// The deciding rule as written.
    pub(crate) rule: String,
    /// The route's label: `DIRECT`, a proxy, or a group path like `auto/dante`.
    pub(crate) route: String,
}

/// What the metrics count flows by: network, origin, action (`DIRECT`, `REJECT`,
/// `REJECT-DROP` or `PROXY`) and the deciding rule as written.
pub(crate) type FlowKind = (Network, Origin, &'static str, String);

impl FlowInfo {
    /// What the metrics count this flow under.
    pub(crate) fn kind(&self) -> FlowKind {
        // A group's route ends in what it chose: `Select/DIRECT` is DIRECT.
        let action = match self.route.rsplit('/').next().unwrap_or_default() {
            "DIRECT" => "DIRECT",
            "REJECT" => "REJECT",
            "REJECT-DROP" => "REJECT-DROP",
            _ => "PROXY",
        };
        (self.network, self.origin, action, self.rule.clone())
    }

    pub(crate) fn new(d: &Decided, route: &str) -> Self {
        Self {
            network: d.network,
            client: d.client.0,
            dst: d.dst.0,
            origin: d.origin,
            host: d.host.clone(),
            host_from: d.host_from,
            process: d.process.clone(),
            rule: d.rule.clone(),
            route: route.to_owned(),
        }
    }
}

/// Bytes moved each way, bumped by the relays.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Client -> server.
    pub(crate) up: AtomicU64,
    /// Server -> client.
    pub(crate) down: AtomicU64,
}

impl Counters {
    /// (up, down) now.
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

/// One live flow.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) info: FlowInfo,
    /// When the flow was registered, for `start` in the API.
    pub(crate) started: SystemTime,
    pub(crate) counters: Counters,
    closed: AtomicBool,
    close: Notify,
}

impl Entry {
    /// Client -> server bytes.
    pub(crate) fn add_up(&self, n: usize) {
        self.counters.up.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Server -> client bytes.
    pub(crate) fn add_down(&self, n: usize) {
        self.counters.down.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn up(&self) -> u64 {
        self.counters.up.load(Ordering::Relaxed)
    }

    pub(crate) fn down(&self) -> u64 {
        self.counters.down.load(Ordering::Relaxed)
    }

    /// Asks the flow's relay to end it.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.close.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves once [`Entry::close`] was called (at once if it already was).
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.close.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

/// Totals of flows that have ended, so counters stay monotonic after a flow is gone.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) flows: u64,
    pub(crate) up: u64,
    pub(crate) down: u64,
    /// The same by what the metrics break them down by: flows by kind, bytes (up, down)
    /// by route label.
    pub(crate) flows_by_kind: HashMap<FlowKind, u64>,
    pub(crate) bytes_by_route: HashMap<String, (u64, u64)>,
}

/// Every live flow, by id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Entry>>>,
    ended: Mutex<Totals>,
}

impl Registry {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds a flow; it stays listed while the returned handle lives.
    pub(crate) fn register(self: &Arc<Self>, info: FlowInfo) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(Entry {
            id,
            info,
            started: SystemTime::now(),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            close: Notify::new(),
        });
        if let Ok(mut live) = self.live.lock() {
            live.insert(id, entry.clone());
        }
        Registered {
            entry,
            registry: self.clone(),
        }
    }

    /// The live flows, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Entry>> {
        let mut all: Vec<Arc<Entry>> = self
            .live
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by_key(|e| e.id);
        all
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live.lock().map_or(0, |l| l.len())
    }

    /// Closes flow `id`; false when no such flow is live.
    pub(crate) fn close(&self, id: u64) -> bool {
        let entry = self.live.lock().ok().and_then(|l| l.get(&id).cloned());
        entry.inspect(|e| e.close()).is_some()
    }

    /// Closes every live flow; returns how many.
    pub(crate) fn close_all(&self) -> usize {
        let all = self.snapshot();
        for e in &all {
            e.close();
        }
        all.len()
    }

    /// Bytes and flows of ended flows plus the live ones' counters: (flows, up, down).
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        let (mut flows, mut up, mut down) = self
            .ended
            .lock()
            .map_or((0, 0, 0), |t| (t.flows, t.up, t.down));
        for e in self.snapshot() {
            flows += 1;
            up += e.up();
            down += e.down();
        }
        (flows, up, down)
    }
}

/// Ended flows by (network, origin) and bytes (up, down) by route, for the metrics (the
/// live ones are in [`Registry::snapshot`]).
pub(crate) struct Ended {
    pub(crate) flows_by_kind: HashMap<FlowKind, u64>,
    pub(crate) bytes_by_route: HashMap<String, (u64, u64)>,
}

impl Registry {
    /// What [`Ended`] says.
    pub(crate) fn ended(&self) -> Ended {
        self.ended.lock().map_or_else(
            |_| Ended {
                flows_by_kind: HashMap::new(),
                bytes_by_route: HashMap::new(),
            },
            |t| Ended {
                flows_by_kind: t.flows_by_kind.clone(),
                bytes_by_route: t.bytes_by_route.clone(),
            },
        )
    }
}

/// A registered flow: listed while this lives; dropping it (the relay ended) unlists it and
/// adds its bytes to the totals.
#[derive(Debug)]
pub(crate) struct Registered {
    entry: Arc<Entry>,
    registry: Arc<Registry>,
}

impl std::ops::Deref for Registered {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.entry
    }
}

impl Registered {
    /// The entry, for tasks that count bytes.
    pub(crate) fn entry(&self) -> Arc<Entry> {
        self.entry.clone()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut live) = self.registry.live.lock() {
            live.remove(&self.entry.id);
        }
        if let Ok(mut t) = self.registry.ended.lock() {
            let (i, (up, down)) = (&self.entry.info, self.entry.counters.get());
            t.flows += 1;
            t.up += up;
            t.down += down;
            *t.flows_by_kind.entry(i.kind()).or_default() += 1;
            let route = t.bytes_by_route.entry(i.route.clone()).or_default();
            route.0 += up;
            route.1 += down;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn info(port: u16) -> FlowInfo {
        FlowInfo {
            network: Network::Tcp,
            client: SocketAddr::from(([198, 51, 100, 2], port)),
            dst: SocketAddr::from(([203, 0, 113, 2], 80)),
            origin: Origin::Forwarded,
            host: None,
            host_from: None,
            process: None,
            rule: "MATCH,DIRECT".into(),
            route: "DIRECT".into(),
        }
    }

    #[test]
    fn flows_are_listed_while_they_live_and_their_bytes_stay_counted() {
        let r = Registry::new();
        let a = r.register(info(1));
        let b = r.register(info(2));
        a.add_up(10);
        b.add_down(7);
        let ids: Vec<u64> = r.snapshot().iter().map(|e| e.id).collect();
        assert_eq!(ids, [a.id, b.id]);
        assert_ne!(a.id, b.id);
        drop(a);
        assert_eq!(r.len(), 1);
        assert_eq!(r.totals(), (2, 10, 7));
        drop(b);
        assert_eq!((r.len(), r.totals()), (0, (2, 10, 7)));
    }

    #[tokio::test]
    async fn close_wakes_the_flow_even_before_it_waits() {
        let r = Registry::new();
        let a = r.register(info(1));
        assert!(r.close(a.id));
        tokio::time::timeout(Duration::from_secs(1), a.closed())
            .await
            .expect("an already closed flow resolves at once");
        let b = r.register(info(2));
        let e = b.entry();
        let waiter = tokio::spawn(async move { e.closed().await });
        tokio::task::yield_now().await;
        assert_eq!(r.close_all(), 2);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("a waiting flow is woken")
            .unwrap();
        assert!(!r.close(9999), "no such flow");
    }
}
