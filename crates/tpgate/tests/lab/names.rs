//! Helpers for tests about names: a plain HTTP request carrying a `Host` (what the HTTP
//! sniffer reads) from the LAN client, and per-namespace hosts files for upstream proxies.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{tcp_connect, Lab};

/// One HTTP/1.1 request with `Host: name` from the LAN client to `addr` (an echo server);
/// returns what came back: the echo of the request, or nothing when the connection was
/// refused or reset.
pub(crate) fn lan_request_for(lab: &Lab, name: &str, addr: SocketAddr) -> Vec<u8> {
    let Ok(mut s) = tcp_connect(&lab.client, addr) else {
        return Vec::new();
    };
    let req = format!("GET / HTTP/1.1\r\nHost: {name}\r\nUser-Agent: lab\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return Vec::new();
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let mut got = vec![0u8; req.len()];
    s.read_exact(&mut got).map(|()| got).unwrap_or_default()
}

/// /etc/netns/<ns>/hosts: `ip netns exec` mounts it over /etc/hosts for processes in that
/// namespace only, so an upstream proxy resolves names the lab's way. Removed on drop.
pub(crate) struct NetnsHosts(PathBuf);

impl NetnsHosts {
    pub(crate) fn write(ns: &str, text: &str) -> Self {
        let dir = PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<ns>");
        std::fs::write(dir.join("hosts"), text).expect("write hosts");
        Self(dir)
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
