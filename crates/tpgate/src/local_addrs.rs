//! This machine's own addresses, refreshed at most once a second: they tell a local
//! process's flow from a LAN host's, and a connection aimed at tpgate's own listener.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct LocalAddrs {
    /// When the set was read and what it held; re-read lazily when older than [`REFRESH`].
    state: RwLock<(Instant, HashSet<IpAddr>)>,
}

impl LocalAddrs {
    pub(crate) fn new() -> Self {
        Self {
            state: RwLock::new((Instant::now(), read())),
        }
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_loopback() {
            return true;
        }
        if let Ok(s) = self.state.read() {
            if s.0.elapsed() < REFRESH {
                return s.1.contains(&ip);
            }
        }
        let fresh = read();
        let hit = fresh.contains(&ip);
        if let Ok(mut s) = self.state.write() {
            *s = (Instant::now(), fresh);
        }
        hit
    }
}

fn read() -> HashSet<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return HashSet::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|s| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}
