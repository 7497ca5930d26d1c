//! Who the DNS server answers: this machine and the LAN side (`intercept.lan-interfaces`),
//! so a server on `0.0.0.0` is not an open resolver for the WAN; `dns.allow-wan: true`
//! answers everyone. A UDP query counts as the LAN's when it arrived on a LAN interface
//! (`IP_PKTINFO`); a TCP one when its source is on a LAN interface's subnet (a routed
//! subnet behind the LAN reaches TCP only with `allow-wan`). A refused query gets no
//! answer at all, is counted, and is logged at debug.
//!
//! Deliberately not here: the sockets (`server`) and answering (`super::Dns`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// How long the interfaces' addresses are trusted before they are read again.
const REFRESH: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) struct Access {
    allow_wan: bool,
    /// `intercept.lan-interfaces` (a reload may change them).
    lan: RwLock<Vec<String>>,
    view: RwLock<(Instant, View)>,
    /// Queries answered and refused, for the metrics.
    allowed: AtomicU64,
    dropped: AtomicU64,
}

/// The interfaces as last read.
#[derive(Debug, Default)]
struct View {
    /// Every address of this machine.
    local: HashSet<IpAddr>,
    /// Indexes of the LAN interfaces.
    lan_index: HashSet<u32>,
    /// The subnets of the LAN interfaces' addresses.
    lan_nets: Vec<IpNet>,
}

impl Access {
    pub(crate) fn new(allow_wan: bool, lan: Vec<String>) -> Self {
        let view = read(&lan);
        Self {
            allow_wan,
            lan: RwLock::new(lan),
            view: RwLock::new((Instant::now(), view)),
            allowed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether a query from `peer` (that came in on interface `ifindex`, when known) gets
    /// an answer; counts and logs the refusals.
    pub(crate) fn allows(&self, peer: IpAddr, ifindex: Option<u32>) -> bool {
        let peer = peer.to_canonical();
        let ok =
            self.allow_wan || peer.is_loopback() || self.with_view(|v| v.allows(peer, ifindex));
        if ok {
            self.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                "dns: query from {peer} refused (not from this machine or a LAN interface; \
                 `dns.allow-wan: true` answers everyone)"
            );
        }
        ok
    }

    /// A reload's new `intercept.lan-interfaces`, in force for the next query.
    pub(crate) fn set_lan(&self, lan: Vec<String>) {
        let view = read(&lan);
        if let Ok(mut l) = self.lan.write() {
            *l = lan;
        }
        if let Ok(mut v) = self.view.write() {
            *v = (Instant::now(), view);
        }
    }

    /// Queries refused so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queries let through so far.
    pub(crate) fn allowed(&self) -> u64 {
        self.allowed.load(Ordering::Relaxed)
    }

    fn with_view(&self, f: impl Fn(&View) -> bool) -> bool {
        if let Ok(v) = self.view.read() {
            if v.0.elapsed() < REFRESH {
                return f(&v.1);
            }
        }
        let fresh = match self.lan.read() {
            Ok(lan) => read(&lan),
            Err(poisoned) => read(&poisoned.into_inner()),
        };
        let ok = f(&fresh);
        if let Ok(mut v) = self.view.write() {
            *v = (Instant::now(), fresh);
        }
        ok
    }
}

impl View {
    fn allows(&self, peer: IpAddr, ifindex: Option<u32>) -> bool {
        self.local.contains(&peer)
            || ifindex.is_some_and(|i| self.lan_index.contains(&i))
            || (ifindex.is_none() && self.lan_nets.iter().any(|n| n.contains(&peer)))
    }
}

fn read(lan: &[String]) -> View {
    let mut v = View::default();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return v;
    };
    for a in addrs {
        let is_lan = lan.contains(&a.interface_name);
        if is_lan {
            if let Ok(i) = nix::net::if_::if_nametoindex(a.interface_name.as_str()) {
                v.lan_index.insert(i);
            }
        }
        let (Some(addr), mask) = (a.address, a.netmask) else {
            continue;
        };
        let ip_of = |s: &nix::sys::socket::SockaddrStorage| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        };
        let Some(ip) = ip_of(&addr) else {
            continue;
        };
        v.local.insert(ip);
        if is_lan {
            let prefix = mask.as_ref().and_then(ip_of).map(|m| match m {
                IpAddr::V4(m) => u32::from(m).count_ones(),
                IpAddr::V6(m) => u128::from(m).count_ones(),
            });
            if let Some(net) = prefix
                .and_then(|p| u8::try_from(p).ok())
                .and_then(|p| IpNet::new(ip, p).ok())
            {
                v.lan_nets.push(net.trunc());
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_side_and_this_machine_only() {
        let v = View {
            local: ["192.0.2.1".parse().unwrap()].into(),
            lan_index: [7].into(),
            lan_nets: vec!["198.51.100.0/24".parse().unwrap()],
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(v.allows(ip("192.0.2.1"), Some(2)), "this machine");
        assert!(v.allows(ip("203.0.113.9"), Some(7)), "arrived on the LAN");
        assert!(
            !v.allows(ip("198.51.100.9"), Some(2)),
            "LAN address on the WAN"
        );
        assert!(
            v.allows(ip("198.51.100.9"), None),
            "TCP from the LAN subnet"
        );
        assert!(!v.allows(ip("203.0.113.9"), None));
        let open = Access::new(true, vec![]);
        assert!(open.allows(ip("203.0.113.9"), Some(2)));
        let closed = Access::new(false, vec![]);
        assert!(closed.allows(ip("127.0.0.1"), None));
        assert!(closed.allows(ip("::ffff:127.0.0.1"), None));
        assert!(!closed.allows(ip("203.0.113.9"), None));
        assert_eq!(closed.dropped(), 1);
    }
}
