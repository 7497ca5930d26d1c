//! The data plane. The life of one flow:
//!
//! ```text
//! listener (tcp::serve accept / udp::serve batch)    I/O only
//!   -> decider (tpgate_core::flow::Decider)            asks: process? first bytes? real address?
//!   -> route (Outbounds::route)                        DIRECT | REJECT | proxy chain
//!   -> relay (sockmap / splice / copy / UDP pumps)     moves bytes, counts them
//!   -> registry (registry::Registry)                   listed, counted, closable
//! ```
//!
//! The decider is pure; this module answers its questions through [`FlowIo`] (a real
//! implementation over the host's tables, the process lookup and the DNS server, and test
//! ones), connects, relays and registers.

mod copy;
pub(crate) mod gauge;
mod io;
pub(crate) mod limits;
pub(crate) mod registry;
mod sniff;
mod sockmap;
mod splice;
pub(crate) mod tcp;
#[cfg(test)]
mod test_pairs;
#[cfg(test)]
pub(crate) mod tests;
pub(crate) mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use tpgate_core::flow::{Decided, Decider, FlowStart, Settings};
use tpgate_core::net::{ClientAddr, Network, OrigDst};
use tpgate_core::rules::RuleEngine;
use tracing::info;

pub(crate) use io::{FlowIo, HostIo};
use registry::Registry;

use crate::outbound::{Outbounds, Route};

/// What every flow handler shares: the rules, the settings and tables they are decided
/// with, the outbounds they leave through and the registry they are listed in.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) engine: RuleEngine,
    pub(crate) settings: Settings,
    pub(crate) outbounds: Arc<Outbounds>,
    /// The mark of every socket tpgate opens toward a server, so OUTPUT lets it pass.
    pub(crate) routing_mark: RoutingMark,
    /// The decider's answers: tables, process lookup, resolving fake-ip names.
    pub(crate) io: Arc<dyn FlowIo>,
    pub(crate) registry: Arc<Registry>,
    /// The caps on live flows; one for the daemon's life, carried across reloads.
    pub(crate) limits: Arc<limits::Limits>,
}

/// The [`Shared`] new flows are decided with. A reload stores a new one; a flow keeps the
/// one it started with for its whole life.
#[derive(Debug)]
pub(crate) struct SharedCell(std::sync::RwLock<Arc<Shared>>);

impl SharedCell {
    pub(crate) fn new(shared: Arc<Shared>) -> Arc<Self> {
        Arc::new(Self(std::sync::RwLock::new(shared)))
    }

    /// The current one.
    pub(crate) fn load(&self) -> Arc<Shared> {
        match self.0.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces it for new flows.
    pub(crate) fn store(&self, shared: Arc<Shared>) {
        match self.0.write() {
            Ok(mut s) => *s = shared,
            Err(poisoned) => *poisoned.into_inner() = shared,
        }
    }
}

/// Why a TCP relay ended before both directions finished: which side's socket failed, so
/// the flow's last line can say whether the client went away or the upstream broke.
#[derive(Debug)]
pub(crate) enum Broken {
    /// Nothing moved either way for the idle limit.
    Idle,
    /// Reading from or writing to the client failed.
    Client(std::io::Error),
    /// Reading from or writing to the server side (the first upstream's connection, for a
    /// proxied flow) failed.
    Server(std::io::Error),
    /// tpgate itself could not go on (no pipe for splice).
    Local(std::io::Error),
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Idle => f.write_str("idle timeout"),
            Self::Client(e) => write!(f, "client: {e}"),
            Self::Server(e) => write!(f, "server: {e}"),
            Self::Local(e) => write!(f, "local: {e}"),
        }
    }
}

/// One direction's failure, before the relay knows which side that direction reads from.
#[derive(Debug)]
enum Failed {
    /// Reading the source failed.
    Read(std::io::Error),
    /// Writing (flushing, shutting down) the sink failed.
    Write(std::io::Error),
    /// Neither side: tpgate could not go on (see [`Broken::Local`]).
    Local(std::io::Error),
}

impl Failed {
    /// The relay's view of a failure of the client-to-server direction (`up`) or the other.
    fn broken(self, up: bool) -> Broken {
        match (self, up) {
            (Self::Read(e), true) | (Self::Write(e), false) => Broken::Client(e),
            (Self::Read(e), false) | (Self::Write(e), true) => Broken::Server(e),
            (Self::Local(e), _) => Broken::Local(e),
        }
    }
}

/// How a TCP relay moved its bytes: joined in the kernel (sockmap), zero-copy in the kernel
/// driven by tpgate (splice), or through tpgate's buffers (copy: every upstream, and DIRECT
/// with `TPGATE_SPLICE=0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayPath {
    Sockmap,
    Splice,
    Copy,
}

impl RelayPath {
    pub(crate) const ALL: [Self; 3] = [Self::Sockmap, Self::Splice, Self::Copy];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sockmap => "sockmap",
            Self::Splice => "splice",
            Self::Copy => "copy",
        }
    }

    /// TCP relays that took this path since start.
    pub(crate) fn count(self) -> u64 {
        RELAYS[self as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    fn taken(self) {
        RELAYS[self as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

static RELAYS: [std::sync::atomic::AtomicU64; 3] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 3];

/// The `SO_MARK` of tpgate's own outbound sockets (`routing-mark`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoutingMark(pub(crate) u32);

impl Shared {
    /// A new flow's decider.
    pub(crate) fn decider(network: Network, src: SocketAddr, dst: SocketAddr) -> Decider {
        Decider::new(FlowStart {
            network,
            client: ClientAddr(src),
            dst: OrigDst(dst),
        })
    }

    /// The route of a decided flow (groups choose now).
    pub(crate) fn route(&self, d: &Decided) -> Route {
        self.outbounds.route(d.verdict, &d.destination())
    }
}

/// The one info line of a decided flow.
pub(crate) fn log_decided(d: &Decided, route: &str) {
    info!(
        "{} {} -> {} origin={}{}{} rule=\"{}\" action={}",
        d.network,
        d.client.0,
        d.dst.0,
        origin_name(d.origin),
        host_field(d.host.as_deref()),
        who(d),
        d.rule,
        route
    );
}

/// ` process=NAME uid=N` when the owning process was looked up.
fn who(d: &Decided) -> String {
    d.process.as_ref().map_or_else(String::new, |p| {
        let name = p.name.as_deref().unwrap_or("?");
        match p.uid {
            Some(uid) => format!(" process={name} uid={uid}"),
            None => format!(" process={name}"),
        }
    })
}

/// ` host=NAME` for the per-flow log line, or nothing.
fn host_field(host: Option<&str>) -> String {
    host.map_or_else(String::new, |h| format!(" host={h}"))
}

pub(crate) fn origin_name(o: tpgate_core::net::Origin) -> &'static str {
    match o {
        tpgate_core::net::Origin::Local => "local",
        tpgate_core::net::Origin::Forwarded => "forwarded",
    }
}
