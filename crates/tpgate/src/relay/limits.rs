//! The `limits` at run time: a new TCP connection or UDP flow takes a slot before anything
//! is done for it, and gives it back when it ends. A flow over a cap is refused at once
//! (the caller resets the connection or drops the datagram), counted by network and reason
//! for the metrics, and logged at most once per [`LOG_EVERY_MS`] per client address.
//! One instance lives as long as the daemon: a reload changes the caps, not the counts.
//!
//! Deliberately not here: the accounting itself ([`tpgate_core::flow::caps`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tpgate_core::config;
use tpgate_core::flow::caps::{Caps, Over, RefusalLog};
use tpgate_core::net::Network;
use tracing::warn;

/// At most one refusal line per client address this often.
const LOG_EVERY_MS: u64 = 5000;

const NETWORKS: [Network; 2] = [Network::Tcp, Network::Udp];
const REASONS: [Over; 2] = [Over::Total, Over::PerSource];

/// The caps, the live flows against them and the refusals.
#[derive(Debug)]
pub(crate) struct Limits {
    caps: Mutex<Caps>,
    /// The caps as numbers, for the log lines.
    max: AtomicUsize,
    per_source: AtomicUsize,
    /// `udp-table-size`, read by the NAT table when a flow is added.
    udp_table: AtomicUsize,
    /// The open-files limit the default `max-connections` follows.
    open_files: u64,
    log: Mutex<RefusalLog>,
    start: Instant,
    /// Refusals by [`NETWORKS`] x [`REASONS`].
    refused: [AtomicU64; 4],
}

/// A live flow's place under the caps; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    limits: Arc<Limits>,
    src: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut caps) = self.limits.caps.lock() {
            caps.release(self.src);
        }
    }
}

impl Limits {
    /// The `limits` of a config, on a host where the daemon may open `open_files`
    /// descriptors.
    pub(crate) fn new(l: &config::Limits, open_files: u64) -> Arc<Self> {
        let this = Arc::new(Self {
            caps: Mutex::new(Caps::new(0, 0)),
            max: AtomicUsize::new(0),
            per_source: AtomicUsize::new(0),
            udp_table: AtomicUsize::new(0),
            open_files,
            log: Mutex::new(RefusalLog::new(LOG_EVERY_MS)),
            start: Instant::now(),
            refused: Default::default(),
        });
        this.set(l);
        this
    }

    /// New caps (a reload); live flows keep their slots.
    pub(crate) fn set(&self, l: &config::Limits) {
        let max = l.max_connections_for(self.open_files);
        let per_source = l.per_source_for(max);
        if let Ok(mut caps) = self.caps.lock() {
            caps.set(max, per_source);
        }
        self.max.store(max as usize, Ordering::Relaxed);
        self.per_source
            .store(per_source as usize, Ordering::Relaxed);
        self.udp_table
            .store(l.udp_table_size() as usize, Ordering::Relaxed);
    }

    /// (max-connections, per-source) in force.
    pub(crate) fn caps(&self) -> (usize, usize) {
        (
            self.max.load(Ordering::Relaxed),
            self.per_source.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn udp_table_size(&self) -> usize {
        self.udp_table.load(Ordering::Relaxed)
    }

    /// Live flows holding a slot.
    pub(crate) fn live(&self) -> usize {
        self.caps.lock().map_or(0, |c| c.live())
    }

    /// A slot for a new `network` flow from `src`; `None`: refused (counted, and logged
    /// when this address has not been for a while).
    #[cfg(test)]
    pub(crate) fn admit(self: &Arc<Self>, network: Network, src: IpAddr) -> Option<Slot> {
        self.admit_from(network, src, false)
    }

    /// Like [`Self::admit`]; `own`: this machine's own traffic, held to `max-connections`
    /// only (everything it opens shares its few addresses).
    pub(crate) fn admit_from(
        self: &Arc<Self>,
        network: Network,
        src: IpAddr,
        own: bool,
    ) -> Option<Slot> {
        let src = src.to_canonical();
        let admitted = match self.caps.lock() {
            Ok(mut caps) => caps.admit_from(src, own),
            // A panic while counting: let flows through rather than refuse them all.
            Err(_) => Ok(()),
        };
        match admitted {
            Ok(()) => Some(Slot {
                limits: self.clone(),
                src,
            }),
            Err(over) => {
                self.refuse(network, src, over);
                None
            }
        }
    }

    fn refuse(&self, network: Network, src: IpAddr, over: Over) {
        self.refused[index(network, over)].fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let line = self.log.lock().ok().and_then(|mut l| l.note(src, now));
        if let Some(n) = line {
            let cap = match over {
                Over::Total => self.max.load(Ordering::Relaxed),
                Over::PerSource => self.per_source.load(Ordering::Relaxed),
            };
            warn!(
                "{network} flow from {src} refused: limits.{} ({cap}) reached; {n} refused \
                 from {src} since the last such line",
                over.label()
            );
        }
    }

    /// Refusals since start by network and reason.
    pub(crate) fn refused(&self) -> Vec<(Network, Over, u64)> {
        let mut out = Vec::with_capacity(4);
        for network in NETWORKS {
            for over in REASONS {
                let n = self.refused[index(network, over)].load(Ordering::Relaxed);
                out.push((network, over, n));
            }
        }
        out
    }
}

fn index(network: Network, over: Over) -> usize {
    let n = usize::from(network == Network::Udp);
    let r = usize::from(over == Over::PerSource);
    n * 2 + r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: u32, per_source: u32) -> Arc<Limits> {
        let l = config::Limits {
            max_connections: Some(max),
            per_source: Some(per_source),
            udp_table_size: None,
        };
        Limits::new(&l, 1024)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, last])
    }

    #[test]
    fn slots_are_given_back_and_refusals_counted_by_network_and_reason() {
        let l = limits(3, 2);
        let a = l.admit(Network::Tcp, ip(2)).unwrap();
        let _b = l.admit(Network::Udp, ip(2)).unwrap();
        assert!(l.admit(Network::Udp, ip(2)).is_none());
        assert!(l.admit(Network::Tcp, ip(2)).is_none());
        let _c = l.admit(Network::Tcp, ip(3)).unwrap();
        assert!(l.admit(Network::Tcp, ip(4)).is_none());
        assert_eq!(l.live(), 3);
        drop(a);
        assert_eq!(l.live(), 2);
        let mapped: IpAddr = "::ffff:198.51.100.2".parse().unwrap();
        let _d = l.admit(Network::Tcp, mapped).unwrap();
        assert!(
            l.admit(Network::Tcp, ip(2)).is_none(),
            "a v4-mapped address counts as its IPv4 form"
        );
        let refused = l.refused();
        let n = |net, over| {
            refused
                .iter()
                .find(|(a, b, _)| (*a, *b) == (net, over))
                .map_or(0, |r| r.2)
        };
        assert_eq!(n(Network::Tcp, Over::PerSource), 1);
        assert_eq!(n(Network::Udp, Over::PerSource), 1);
        assert_eq!(n(Network::Tcp, Over::Total), 2);
        assert_eq!(n(Network::Udp, Over::Total), 0);
    }

    #[test]
    fn a_reload_changes_the_caps_not_the_live_flows() {
        let l = limits(10, 10);
        let held: Vec<Slot> = (0..4)
            .filter_map(|_| l.admit(Network::Tcp, ip(2)))
            .collect();
        l.set(&config::Limits {
            max_connections: Some(10),
            per_source: Some(2),
            udp_table_size: Some(64),
        });
        assert_eq!((l.caps(), l.udp_table_size(), l.live()), ((10, 2), 64, 4));
        assert!(l.admit(Network::Tcp, ip(2)).is_none());
        drop(held);
        assert!(l.admit(Network::Tcp, ip(2)).is_some());
    }
}
