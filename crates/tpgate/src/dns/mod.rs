//! The built-in DNS server: answers from `hosts`, fake addresses (fake-ip), or upstream
//! nameservers through a cache, and remembers which name each address stands for so the
//! relay can route flows by the name the client resolved. What a request gets back is
//! decided in `tpgate_core::dns::answer` (with the pools, cache and mapping also there);
//! this module holds the locks, the sockets, the upstream I/O and the persistence.

mod access;
mod control;
mod doh;
pub(crate) mod error;
mod pipeline;
#[cfg(test)]
mod reuse_tests;
mod server;
#[cfg(test)]
mod tests;
mod upstream;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{RData, RecordType};
use ipnet::IpNet;
use tpgate_core::config::EnhancedMode;
use tpgate_core::dns::answer::{self, Step, Tables, Transport};
use tpgate_core::dns::{Cache, CacheKey, FakePool, Mapping, Snapshot, FAILURE_TTL};
use tracing::{debug, info, warn};

use crate::shutdown::Shutdown;
use error::UpstreamError;
use upstream::Forwarder;

pub(crate) use access::Access;
pub(crate) use server::{bind, serve};

/// How many redir-host answers are remembered.
const MAPPING_CAPACITY: usize = 65_536;
/// How often the fake-ip table is written to disk besides at shutdown.
const PERSIST_EVERY: Duration = Duration::from_secs(60);

/// What the fake-ip table says about a flow's destination.
pub(crate) enum FakeName {
    /// Not in a fake range.
    NotFake,
    Name(String),
    /// In the fake range, but no name holds it (forgotten, or never handed out).
    Unknown,
}

pub(crate) struct Dns {
    cfg: tpgate_core::config::Dns,
    /// Fake pools (IPv4, IPv6), only in fake-ip mode.
    fake4: Option<Mutex<FakePool>>,
    fake6: Option<Mutex<FakePool>>,
    /// Address -> name of real answers, so bare-address flows get their name back.
    mapping: Mutex<Mapping>,
    cache: Mutex<Cache>,
    forwarder: Forwarder,
    /// Where the fake-ip table survives restarts (`<state-file>.fakeip.json`).
    store: Option<PathBuf>,
    /// Answers served from `cache`, for the metrics.
    pub(crate) cache_hits: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("mode", &self.cfg.enhanced_mode)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a table leaves it usable: every update is a single insert.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Dns {
    pub(crate) fn new(
        cfg: &tpgate_core::config::Dns,
        mark: u32,
        state_file: &str,
    ) -> io::Result<Arc<Self>> {
        let fake = cfg.enhanced_mode == EnhancedMode::FakeIp;
        let fake4 = fake
            .then(|| FakePool::new(IpNet::V4(cfg.fake_ip_range)))
            .flatten();
        let fake6 = cfg
            .fake_ip_range6
            .filter(|_| fake)
            .and_then(|n| FakePool::new(IpNet::V6(n)));
        let store = fake.then(|| PathBuf::from(format!("{state_file}.fakeip.json")));
        let dns = Self {
            cfg: cfg.clone(),
            fake4: fake4.map(Mutex::new),
            fake6: fake6.map(Mutex::new),
            mapping: Mutex::new(Mapping::new(MAPPING_CAPACITY)),
            cache: Mutex::new(Cache::default()),
            forwarder: Forwarder::new(cfg, mark)?,
            store,
            cache_hits: std::sync::atomic::AtomicU64::new(0),
        };
        dns.load();
        info!(
            mode = ?cfg.enhanced_mode,
            nameservers = %dns.forwarder.describe(),
            "dns configured"
        );
        Ok(Arc::new(dns))
    }

    fn pool(&self, ip: IpAddr) -> Option<&Mutex<FakePool>> {
        match ip {
            IpAddr::V4(_) => self.fake4.as_ref(),
            IpAddr::V6(_) => self.fake6.as_ref(),
        }
    }

    /// Per upstream server: (name as written, answers, failures, seconds the answers took).
    pub(crate) fn upstream_stats(&self) -> Vec<(String, u64, u64, f64)> {
        use std::sync::atomic::Ordering::Relaxed;
        self.forwarder
            .stats()
            .into_iter()
            .map(|(name, s)| {
                let secs = s.latency_micros.load(Relaxed) as f64 / 1e6;
                (
                    name,
                    s.answers.load(Relaxed),
                    s.failures.load(Relaxed),
                    secs,
                )
            })
            .collect()
    }

    /// The fake-ip pools' use: (family, addresses handed out, addresses in the range).
    pub(crate) fn fake_ip_use(&self) -> Vec<(&'static str, u64, u128)> {
        let mut out = Vec::new();
        for (family, pool) in [("ipv4", &self.fake4), ("ipv6", &self.fake6)] {
            if let Some(p) = pool {
                let p = lock(p);
                out.push((family, p.len() as u64, p.capacity()));
            }
        }
        out
    }

    /// The name a fake destination stands for.
    pub(crate) fn fake_name(&self, ip: IpAddr) -> FakeName {
        let Some(pool) = self.pool(ip) else {
            return FakeName::NotFake;
        };
        let mut pool = lock(pool);
        if !pool.contains(ip) {
            return FakeName::NotFake;
        }
        pool.name_of(ip).map_or(FakeName::Unknown, FakeName::Name)
    }

    /// The name `ip` was recently answered for (redir-host).
    pub(crate) fn mapped_name(&self, ip: IpAddr) -> Option<String> {
        lock(&self.mapping)
            .name_of(ip, Instant::now())
            .map(str::to_owned)
    }

    /// The real address of `name` (A, then AAAA when `ipv6`), asked of the upstream
    /// nameservers through the cache: what a DIRECT flow to a fake address connects to.
    pub(crate) async fn resolve(&self, name: &str) -> io::Result<IpAddr> {
        if let Some(ip) = self.cfg.host_addrs(name).and_then(|ips| ips.first()) {
            return Ok(*ip);
        }
        let fqdn = hickory_proto::rr::Name::from_ascii(format!("{name}."))
            .map_err(UpstreamError::BadName)?;
        let mut kinds = vec![RecordType::A];
        if self.cfg.ipv6 {
            kinds.push(RecordType::AAAA);
        }
        for kind in kinds {
            let mut q = Message::new();
            q.set_id(rand::random())
                .set_message_type(MessageType::Query)
                .set_op_code(OpCode::Query)
                .set_recursion_desired(true)
                .add_query(Query::query(fqdn.clone(), kind));
            let Some(reply) = self.forward(&q, name).await else {
                continue;
            };
            let found = reply.answers().iter().find_map(|r| match r.data() {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            });
            if let Some(ip) = found {
                return Ok(ip);
            }
        }
        Err(UpstreamError::NoAddress {
            host: name.to_owned(),
        }
        .into())
    }

    /// Reads the fake-ip table saved by a previous run, if any.
    fn load(&self) {
        let (Some(path), Some(pool4)) = (&self.store, &self.fake4) else {
            return;
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                warn!(
                    "reading {}: {e}; fake-ip table starts empty",
                    path.display()
                );
                return;
            }
        };
        match Snapshot::from_json(&text) {
            Ok(snap) => {
                lock(pool4).restore(&snap);
                if let Some(p6) = &self.fake6 {
                    lock(p6).restore(&snap);
                }
                info!(
                    "fake-ip: {} names restored from {}",
                    snap.entries.len(),
                    path.display()
                );
            }
            Err(e) => warn!("{}: {e}; fake-ip table starts empty", path.display()),
        }
    }

    /// Writes the fake-ip table (atomically: a crash leaves the old file whole); says how
    /// many names it holds, or why it could not be written.
    fn save(&self) -> Option<io::Result<usize>> {
        let (Some(path), Some(pool4)) = (&self.store, &self.fake4) else {
            return None;
        };
        let mut snap = lock(pool4).snapshot();
        if let Some(p6) = &self.fake6 {
            snap.entries.extend(lock(p6).snapshot().entries);
        }
        let names = snap.entries.len();
        Some(crate::persist::write_atomic(path, snap.to_json().as_bytes()).map(|()| names))
    }

    /// Saves the fake-ip table every [`PERSIST_EVERY`] and once more at shutdown. A
    /// failure is said once when it starts (and again when saving works again), not every
    /// minute; the one at shutdown always, since those names are then lost.
    pub(crate) async fn persist(self: Arc<Self>, stop: Shutdown) {
        let Some(path) = self.store.clone() else {
            return;
        };
        let path = path.display();
        let mut failing = false;
        let mut tick = tokio::time::interval(PERSIST_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.wait() => break,
            }
            match self.save() {
                Some(Ok(n)) if failing => {
                    failing = false;
                    info!("fake-ip table ({n} names) saved to {path} again");
                }
                Some(Ok(n)) => debug!("fake-ip table ({n} names) saved to {path}"),
                Some(Err(e)) if !failing => {
                    failing = true;
                    warn!(
                        "cannot save the fake-ip table to {path}: {e}; trying again every \
                         {PERSIST_EVERY:?}, and once more at shutdown"
                    );
                }
                Some(Err(e)) => debug!("still cannot save the fake-ip table to {path}: {e}"),
                None => {}
            }
        }
        match self.save() {
            Some(Ok(n)) => info!("fake-ip table ({n} names) saved to {path}"),
            Some(Err(e)) => warn!(
                "cannot save the fake-ip table to {path}: {e}; clients' cached fake \
                 addresses will stand for nothing after the restart"
            ),
            None => {}
        }
    }

    /// Answers one query in wire format (see [`answer::start`]); `udp` bounds the reply's
    /// size. `None`: nothing to send.
    pub(crate) async fn handle(&self, bytes: &[u8], udp: bool) -> Option<Vec<u8>> {
        let transport = if udp {
            Transport::Udp
        } else {
            Transport::Stream
        };
        match answer::start(bytes, transport, self) {
            Step::Reply(out) => Some(out),
            Step::Drop => {
                debug!("dns: {} bytes dropped (not a query)", bytes.len());
                None
            }
            Step::Forward(pending) => {
                let reply = self.forward(&pending.request, &pending.name).await;
                Some(pending.finish(reply.as_ref()))
            }
        }
    }

    /// The nameservers' answer to `req` (through the cache); `None` when none answered,
    /// now or less than [`FAILURE_TTL`] ago.
    async fn forward(&self, req: &Message, name: &str) -> Option<Message> {
        let key = CacheKey::of(req);
        if let Some(k) = &key {
            let mut cache = lock(&self.cache);
            if let Some(mut hit) = cache.get(k, Instant::now()) {
                debug!("dns {name}: cached");
                self.cache_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                hit.set_id(req.id());
                return Some(hit);
            }
            if cache.failed_recently(k, Instant::now()) {
                debug!("dns {name}: no answer less than {FAILURE_TTL:?} ago");
                return None;
            }
        }
        match self.forwarder.forward(name, req).await {
            Ok(reply) => {
                if let Some(k) = key {
                    lock(&self.cache).put(k, &reply, Instant::now());
                }
                if self.cfg.enhanced_mode != EnhancedMode::Normal {
                    self.remember(name, &reply);
                }
                Some(reply)
            }
            Err(e) => {
                info!("dns {name}: no answer: {e}");
                if let Some(k) = key {
                    lock(&self.cache).put_failure(k, Instant::now());
                }
                None
            }
        }
    }

    /// redir-host: each address of the answer stands for the name the client asked.
    fn remember(&self, name: &str, reply: &Message) {
        let now = Instant::now();
        let mut mapping = lock(&self.mapping);
        for r in reply.answers() {
            let ip = match r.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            mapping.insert(ip, name, Duration::from_secs(u64::from(r.ttl())), now);
        }
    }
}

impl Tables for Dns {
    fn config(&self) -> &tpgate_core::config::Dns {
        &self.cfg
    }

    fn fake_addr(&self, name: &str, v6: bool) -> Option<IpAddr> {
        let pool = if v6 { &self.fake6 } else { &self.fake4 };
        let ip = lock(pool.as_ref()?).lookup_or_alloc(name);
        debug!("dns {name}: fake {ip}");
        Some(ip)
    }
}
