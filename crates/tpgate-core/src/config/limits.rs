//! The `limits` section (tpgate's own): how many flows the relays hold at once, in all and
//! per client address, and the size of the UDP NAT table, so a flood from one LAN host
//! cannot exhaust the gateway's memory or descriptors. Defaults that depend on the host
//! (the open-files limit) are filled in by the daemon.

use super::decode::{check, entries, is_section, unknown_key};
use super::yaml::Node;
use super::{value, Diags};

/// Default `udp-table-size`.
pub const DEFAULT_UDP_TABLE_SIZE: u32 = 16_384;
/// The most `max-connections` defaults to, whatever the open-files limit allows.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16_384;
/// Largest value any of the limits takes.
const MAX_LIMIT: u64 = 1 << 24;

/// `limits`: caps on live flows. A new flow over a cap is refused (a TCP connection gets a
/// RST, a UDP flow's datagrams are dropped); flows already relayed are never touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// `max-connections`: TCP connections and UDP flows at once, from all clients. `None`:
    /// [`DEFAULT_MAX_CONNECTIONS`] or what the open-files limit allows, if less.
    pub max_connections: Option<u32>,
    /// `per-source`: the same from one client address. `None`: a quarter of
    /// `max-connections`.
    pub per_source: Option<u32>,
    /// `udp-table-size`: UDP flows in the NAT table; when full, the least recently active
    /// eighth is evicted (UDP has no close, and a new client must not be locked out).
    /// `None`: [`DEFAULT_UDP_TABLE_SIZE`].
    pub udp_table_size: Option<u32>,
}

impl Limits {
    /// `max-connections` as configured, or the default for a process that may open
    /// `open_files` descriptors: a relayed TCP connection holds up to six (client, server
    /// and splice's two pipes), and a few hundred stay for listeners, the API and DNS.
    pub fn max_connections_for(&self, open_files: u64) -> u32 {
        self.max_connections.unwrap_or_else(|| {
            let by_fds = open_files.saturating_sub(512) / 6;
            u32::try_from(by_fds)
                .unwrap_or(u32::MAX)
                .clamp(256, DEFAULT_MAX_CONNECTIONS)
        })
    }

    /// `per-source` as configured, or a quarter of `max` (at least one).
    pub fn per_source_for(&self, max: u32) -> u32 {
        self.per_source.unwrap_or((max / 4).max(1))
    }

    /// `udp-table-size` as configured, or its default.
    pub fn udp_table_size(&self) -> u32 {
        self.udp_table_size.unwrap_or(DEFAULT_UDP_TABLE_SIZE)
    }
}

/// Keys of the `limits` section.
pub(super) const KEYS: &[&str] = &["max-connections", "per-source", "udp-table-size"];

pub(super) fn limits(node: &Node, d: &mut Diags) -> Limits {
    let mut out = Limits::default();
    if !is_section(node, "limits", d) {
        return out;
    }
    for e in entries(node, "limits", d) {
        let path = format!("limits.{}", e.key);
        let n = e.value;
        let slot = match e.key {
            "max-connections" => &mut out.max_connections,
            "per-source" => &mut out.per_source,
            "udp-table-size" => &mut out.udp_table_size,
            _ => {
                unknown_key(d, &e, "limits", KEYS);
                continue;
            }
        };
        if let Some(v) = check(d, n, &path, positive(n)) {
            *slot = Some(v);
        }
    }
    out
}

fn positive(n: &Node) -> Result<u32, String> {
    match value::uint(n, MAX_LIMIT)? {
        0 => Err("must be at least 1".to_owned()),
        v => Ok(u32::try_from(v).unwrap_or(u32::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_open_files_limit_within_bounds() {
        let l = Limits::default();
        assert_eq!(l.max_connections_for(1_048_576), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(l.max_connections_for(1024), 256, "a floor, not zero");
        assert_eq!(l.max_connections_for(65_536), (65_536 - 512) / 6);
        assert_eq!(l.per_source_for(16_384), 4096);
        assert_eq!(l.per_source_for(2), 1);
        assert_eq!(l.udp_table_size(), DEFAULT_UDP_TABLE_SIZE);
        let set = Limits {
            max_connections: Some(2000),
            per_source: Some(500),
            udp_table_size: Some(100),
        };
        assert_eq!(
            set.max_connections_for(1024),
            2000,
            "as written, whatever the limit"
        );
        assert_eq!(set.per_source_for(2000), 500);
        assert_eq!(set.udp_table_size(), 100);
    }
}
