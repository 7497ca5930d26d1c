//! How the daemon answers a flow decider's questions: the in-memory tables it reads
//! synchronously ([`Tables`]) and the two answers that need I/O, the owning process and
//! the real address of a fake-ip name ([`FlowIo`]). [`HostIo`] is the real one; tests
//! give their own.

use std::fmt::Debug;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use tpgate_core::flow::{FakeIp, Tables};
use tpgate_core::net::Network;
use tpgate_core::rules::ProcessInfo;

use crate::dns::{Dns, FakeName};
use crate::geoip::GeoIp;
use crate::local_addrs::LocalAddrs;

/// The decider's answers that need I/O, besides its [`Tables`].
pub(crate) trait FlowIo: Tables + Debug + Send + Sync {
    /// The local process owning this host's flow `src -> dst` (`None`: not found).
    fn process(
        &self,
        network: Network,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> BoxFuture<'static, Option<ProcessInfo>>;

    /// The real address of a fake-ip flow's `name`, through the DNS server's upstreams
    /// (the system resolver may be tpgate itself and answer with the fake address again).
    fn resolve(&self, name: &str) -> BoxFuture<'static, io::Result<IpAddr>>;
}

/// The host's answers: its addresses, the DNS server's tables, GeoIP, sock_diag and /proc.
#[derive(Debug)]
pub(crate) struct HostIo {
    pub(crate) local: LocalAddrs,
    /// The country database, when a `GEOIP` rule needs one.
    pub(crate) geoip: Option<GeoIp>,
    /// The built-in DNS server's tables, when `dns.enable`.
    pub(crate) dns: Option<Arc<Dns>>,
}

impl Tables for HostIo {
    fn is_local(&self, ip: IpAddr) -> bool {
        self.local.contains(ip)
    }

    fn fake_ip(&self, ip: IpAddr) -> FakeIp {
        match self.dns.as_ref().map(|d| d.fake_name(ip)) {
            None | Some(FakeName::NotFake) => FakeIp::NotFake,
            Some(FakeName::Name(n)) => FakeIp::Name(n),
            Some(FakeName::Unknown) => FakeIp::Unknown,
        }
    }

    fn mapped_name(&self, ip: IpAddr) -> Option<String> {
        self.dns.as_ref()?.mapped_name(ip)
    }

    fn geo_codes(&self, ip: IpAddr) -> Vec<String> {
        self.geoip.as_ref().map(|g| g.codes(ip)).unwrap_or_default()
    }
}

/// No DNS server: a fake-ip name cannot be resolved (there are none without it).
#[derive(Debug, thiserror::Error)]
#[error("no DNS server to resolve {0}")]
struct NoDns(String);

impl FlowIo for HostIo {
    /// A sock_diag dump and a /proc scan, on the blocking pool so the async workers never
    /// wait for it.
    fn process(
        &self,
        network: Network,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> BoxFuture<'static, Option<ProcessInfo>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || crate::owner::lookup(network, src, dst))
                .await
                .ok()
        })
    }

    fn resolve(&self, name: &str) -> BoxFuture<'static, io::Result<IpAddr>> {
        let (dns, name) = (self.dns.clone(), name.to_owned());
        Box::pin(async move {
            match dns {
                Some(d) => d.resolve(&name).await,
                None => Err(io::Error::new(io::ErrorKind::NotFound, NoDns(name))),
            }
        })
    }
}
