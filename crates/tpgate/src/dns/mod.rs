//! The built-in DNS server: answers from `hosts`, fake addresses (fake-ip), or upstream
//! nameservers through a cache, and remembers which name each address stands for so the
//! relay can route flows by the name the client resolved. The pure tables (fake-ip pool,
//! mapping) live in `tpgate_core::dns`; this module does the sockets and the persistence.
//! Not here yet: DNS hijack rules (intercepting queries to other servers).

mod cache;
mod server;
#[cfg(test)]
mod tests;
mod upstream;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use ipnet::IpNet;
use tpgate_core::config::EnhancedMode;
use tpgate_core::dns::{FakePool, Mapping, Snapshot};
use tracing::{debug, info, warn};

use crate::shutdown::Shutdown;
use cache::Cache;
use upstream::Forwarder;

pub(crate) use server::{bind, serve};

/// mihomo answers fake addresses with TTL 1: clients ask again soon, and the same name
/// keeps its address anyway.
const FAKE_TTL: u32 = 1;
const HOSTS_TTL: u32 = 10;
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
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
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
            let reply = self.forward(&q, name).await;
            let found = reply.answers().iter().find_map(|r| match r.data() {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            });
            if let Some(ip) = found {
                return Ok(ip);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: no address"),
        ))
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

    /// Writes the fake-ip table (atomically: a crash leaves the old file).
    pub(crate) fn save(&self) {
        let (Some(path), Some(pool4)) = (&self.store, &self.fake4) else {
            return;
        };
        let mut snap = lock(pool4).snapshot();
        if let Some(p6) = &self.fake6 {
            snap.entries.extend(lock(p6).snapshot().entries);
        }
        let tmp = path.with_extension("json.tmp");
        let res = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, snap.to_json()))
            .and_then(|()| std::fs::rename(&tmp, path));
        match res {
            Ok(()) => debug!("fake-ip table saved to {}", path.display()),
            Err(e) => warn!("saving the fake-ip table to {}: {e}", path.display()),
        }
    }

    /// Saves the fake-ip table every [`PERSIST_EVERY`] and once more at shutdown.
    pub(crate) async fn persist(self: Arc<Self>, stop: Shutdown) {
        if self.store.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(PERSIST_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.save(),
                () = stop.wait() => break,
            }
        }
        self.save();
    }

    /// Answers one query in wire format; `max` bounds the answer's size (UDP), a larger
    /// one goes out truncated so the client retries over TCP. `None`: not even a header.
    pub(crate) async fn handle(&self, bytes: &[u8], udp: bool) -> Option<Vec<u8>> {
        let req = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(e) => {
                debug!("dns: malformed query: {e}");
                // Answer FORMERR when at least the id can be read.
                let id = u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
        };
        let reply = self.answer(&req).await;
        let out = reply.to_vec().ok()?;
        let max = match req.extensions() {
            Some(e) => usize::from(e.max_payload().max(512)),
            None => 512,
        };
        if udp && out.len() > max {
            return reply.truncate().to_vec().ok();
        }
        Some(out)
    }

    async fn answer(&self, req: &Message) -> Message {
        if req.message_type() != MessageType::Query || req.op_code() != OpCode::Query {
            return Message::error_msg(req.id(), req.op_code(), ResponseCode::NotImp);
        }
        let Some(q) = req.query().cloned() else {
            return Message::error_msg(req.id(), req.op_code(), ResponseCode::FormErr);
        };
        let lower = q.name().to_lowercase().to_ascii();
        let name = lower.trim_end_matches('.');
        let qtype = q.query_type();
        let address =
            q.query_class() == DNSClass::IN && matches!(qtype, RecordType::A | RecordType::AAAA);
        if address {
            if let Some(ips) = self.cfg.host_addrs(name) {
                return local(req, &q, ips, HOSTS_TTL);
            }
            if self.cfg.wants_fake(name) {
                let pool = match qtype {
                    RecordType::A => self.fake4.as_ref(),
                    _ => self.fake6.as_ref().filter(|_| self.cfg.ipv6),
                };
                let ips: Vec<IpAddr> = pool
                    .map(|p| lock(p).lookup_or_alloc(name))
                    .into_iter()
                    .collect();
                debug!("dns {name} {qtype}: fake {ips:?}");
                return local(req, &q, &ips, FAKE_TTL);
            }
            if qtype == RecordType::AAAA && !self.cfg.ipv6 {
                return local(req, &q, &[], HOSTS_TTL);
            }
        }
        // HTTPS/SVCB answers carry address hints that would bypass the fake address.
        if matches!(qtype, RecordType::HTTPS | RecordType::SVCB) && self.cfg.wants_fake(name) {
            return local(req, &q, &[], FAKE_TTL);
        }
        self.forward(req, name).await
    }

    async fn forward(&self, req: &Message, name: &str) -> Message {
        let key = cache::Key::of(req);
        if let Some(k) = &key {
            if let Some(mut hit) = lock(&self.cache).get(k, Instant::now()) {
                debug!("dns {name}: cached");
                hit.set_id(req.id());
                return hit;
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
                reply
            }
            Err(e) => {
                info!("dns {name}: no answer: {e}");
                let mut m = Message::error_msg(req.id(), req.op_code(), ResponseCode::ServFail);
                m.add_queries(req.queries().iter().cloned());
                m
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

/// An answer made here: `ips` of the query's family (none: NOERROR without records).
fn local(req: &Message, q: &Query, ips: &[IpAddr], ttl: u32) -> Message {
    let mut m = Message::new();
    m.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::NoError)
        .add_query(q.clone());
    for ip in ips {
        let data = match (ip, q.query_type()) {
            (IpAddr::V4(a), RecordType::A) => RData::A(A(*a)),
            (IpAddr::V6(a), RecordType::AAAA) => RData::AAAA(AAAA(*a)),
            _ => continue,
        };
        m.add_answer(Record::from_rdata(q.name().clone(), ttl, data));
    }
    if req.extensions().is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}
