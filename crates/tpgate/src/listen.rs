//! The transparent listeners TPROXY delivers to. They are bound before interception is
//! installed (a busy port fails the start with nothing installed), and a reload that
//! changes the tproxy port, `udp` or `ipv6` binds the new ones before the rules point at
//! them and retires the old ones a moment after the rules stopped pointing at them (what
//! was already queued on them is still served). A retiring listener the next reload wants
//! again (the port changed back within those seconds) is kept instead of bound anew: a new
//! one would join its port's `SO_REUSEPORT` group, and a datagram the kernel handed the old
//! one just before it closed would be lost. Established TCP connections do not depend on
//! their listener, and UDP flows live in the one NAT table every UDP listener shares, so
//! both keep going across the change.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::net::{TcpListener, UdpSocket};
use tpgate_core::plan::Plan;
use tpgate_sys::UdpRole;
use tracing::{debug, info};

use crate::relay::{self, udp::NatTable, SharedCell};
use crate::shutdown::{self, Shutdown, Trigger};

/// How long a replaced listener keeps serving after the rules moved away from it: enough
/// for the connections in its accept queue and the datagrams in its buffer.
const RETIRE_AFTER: Duration = Duration::from_secs(2);

/// One listening address of one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    addr: SocketAddr,
    udp: bool,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", if self.udp { "udp" } else { "tcp" }, self.addr)
    }
}

enum Sockets {
    /// Several per address, among which the kernel spreads connections (`SO_REUSEPORT`).
    Tcp(Vec<TcpListener>),
    /// As many as TCP listeners, each serving its shard of the NAT table.
    Udp(Vec<UdpSocket>),
}

/// Listeners bound and not yet serving.
pub(crate) struct Bound(Vec<(Key, Sockets)>);

/// The listeners serving now; each ends when its trigger fires (or is dropped).
pub(crate) struct Listening {
    cell: Arc<SharedCell>,
    nat: Arc<NatTable>,
    stop: Shutdown,
    running: Vec<(Key, Trigger)>,
    /// Replaced, serving until [`RETIRE_AFTER`] has passed; by retirement.
    retiring: Arc<Mutex<Vec<(u64, Key, Trigger)>>>,
    retirements: u64,
}

/// The listening addresses `plan` needs.
fn wanted(plan: &Plan) -> Vec<Key> {
    let l = plan.listeners;
    let mut addrs = vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, l.port))];
    if l.ipv6 {
        addrs.push(SocketAddr::from((Ipv6Addr::UNSPECIFIED, l.port)));
    }
    let mut keys = Vec::new();
    for addr in addrs {
        keys.push(Key { addr, udp: false });
        if l.udp {
            keys.push(Key { addr, udp: true });
        }
    }
    keys
}

/// Binds what `plan` needs except `skip` (already serving).
fn bind_except(plan: &Plan, skip: &[Key]) -> Result<Bound> {
    let acceptors = acceptors();
    let mut out = Vec::new();
    for key in wanted(plan).into_iter().filter(|k| !skip.contains(k)) {
        let a = key.addr;
        let sockets = if key.udp {
            let role = UdpRole::Listener {
                shared: acceptors > 1,
            };
            let mut udp = Vec::new();
            for _ in 0..acceptors {
                let u = tpgate_sys::transparent_udp_socket(a, plan.routing_mark, role)
                    .with_context(|| format!("binding transparent UDP listener on {a}"))?;
                udp.push(UdpSocket::from_std(u)?);
            }
            Sockets::Udp(udp)
        } else {
            let mut tcp = Vec::new();
            for _ in 0..acceptors {
                let t = tpgate_sys::transparent_tcp_listener(a, plan.routing_mark, acceptors > 1)
                    .with_context(|| {
                    format!("binding transparent TCP listener on {a} (needs root or CAP_NET_ADMIN)")
                })?;
                tcp.push(TcpListener::from_std(t)?);
            }
            Sockets::Tcp(tcp)
        };
        out.push((key, sockets));
    }
    Ok(Bound(out))
}

/// The start's listeners, before any rule exists.
pub(crate) fn bind(plan: &Plan) -> Result<Bound> {
    bind_except(plan, &[])
}

/// Listeners per address and protocol, each with its own accept or receive loop, among
/// which the kernel spreads new connections and UDP flows (`SO_REUSEPORT`): one per CPU, up
/// to 4 (`TPGATE_ACCEPTORS` overrides, to compare in benchmarks). Also the NAT table's
/// shards.
pub(crate) fn acceptors() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    std::env::var("TPGATE_ACCEPTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| cpus.min(4))
        .clamp(1, 64)
}

impl Listening {
    pub(crate) fn new(cell: Arc<SharedCell>, nat: Arc<NatTable>, stop: Shutdown) -> Self {
        Self {
            cell,
            nat,
            stop,
            running: Vec::new(),
            retiring: Arc::default(),
            retirements: 0,
        }
    }

    /// Serves `bound` until the daemon stops or a reload retires it.
    pub(crate) fn start(&mut self, bound: Bound) {
        for (key, sockets) in bound.0 {
            let (trigger, retired) = shutdown::channel();
            let stop = shutdown::either(retired, self.stop.clone());
            match sockets {
                Sockets::Tcp(ls) => {
                    for l in ls {
                        tokio::spawn(relay::tcp::serve(l, self.cell.clone(), stop.clone()));
                    }
                }
                Sockets::Udp(us) => {
                    for (i, u) in us.into_iter().enumerate() {
                        tokio::spawn(relay::udp::serve(u, self.nat.shard(i), stop.clone()));
                    }
                }
            }
            debug!("listening on {key}");
            self.running.push((key, trigger));
        }
    }

    /// Binds what `plan` needs that is not served yet, first taking back the retiring
    /// listeners it wants (nothing else is changed on failure; a listener taken back is
    /// retired again by the next [`Self::retire_unwanted`] whose plan does not want it).
    pub(crate) fn bind_missing(&mut self, plan: &Plan) -> Result<Bound> {
        let want = wanted(plan);
        if let Ok(mut retiring) = self.retiring.lock() {
            let (back, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut *retiring)
                .into_iter()
                .partition(|(_, k, _)| want.contains(k));
            *retiring = stay;
            for (_, key, trigger) in back {
                debug!("{key} kept: wanted again before it closed");
                self.running.push((key, trigger));
            }
        }
        let running: Vec<Key> = self.running.iter().map(|(k, _)| *k).collect();
        bind_except(plan, &running)
    }

    /// Ends, after [`RETIRE_AFTER`], the listeners `plan` does not need.
    pub(crate) fn retire_unwanted(&mut self, plan: &Plan) {
        let keep = wanted(plan);
        let (stay, go): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|(k, _)| keep.contains(k));
        self.running = stay;
        if go.is_empty() {
            return;
        }
        let names: Vec<String> = go.iter().map(|(k, _)| k.to_string()).collect();
        info!(
            listeners = ?names,
            "replaced listeners close in {}s (what they queued is still served)",
            RETIRE_AFTER.as_secs()
        );
        self.retirements += 1;
        let id = self.retirements;
        if let Ok(mut retiring) = self.retiring.lock() {
            retiring.extend(go.into_iter().map(|(k, t)| (id, k, t)));
        }
        let retiring = self.retiring.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETIRE_AFTER).await;
            // What a reload took back in the meantime is no longer here.
            let due: Vec<_> = match retiring.lock() {
                Ok(mut r) => {
                    let (due, stay) = std::mem::take(&mut *r)
                        .into_iter()
                        .partition(|(i, _, _)| *i == id);
                    *r = stay;
                    due
                }
                Err(_) => Vec::new(),
            };
            for (_, _, trigger) in due {
                trigger.fire();
            }
        });
    }
}
