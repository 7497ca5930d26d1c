//! Reading a TCP client's first bytes to learn the name it asked for (TLS SNI, HTTP Host)
//! before deciding. The bytes read are kept and sent on first, so nothing is lost. The wait
//! is bounded by `sniffer.timeout` and ends as soon as the bytes so far decide: no added
//! latency when the client's first flight arrives at once, and server-first protocols
//! (which send nothing) pay at most the timeout, on sniffed ports only.

use std::io;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tpgate_core::config::Sniffer;
use tpgate_core::sniff::{http, tls, Sniffed};
use tracing::debug;

/// Enough for any real ClientHello (post-quantum key shares included) or request head.
const MAX_PEEK: usize = 16 * 1024;
/// The first read: a typical ClientHello or request head fits.
const FIRST_READ: usize = 2048;

/// What sniffing learned: the name (when one was found and accepted) and the bytes read.
pub(crate) struct Sniff {
    pub(crate) host: Option<String>,
    pub(crate) first: Vec<u8>,
}

/// Sniffs `client` if its destination port is configured for TLS or HTTP.
pub(crate) async fn tcp(client: &TcpStream, port: u16, cfg: &Sniffer) -> io::Result<Sniff> {
    let tls_port = cfg.tls_ports.iter().any(|r| r.contains(port));
    let http_port = cfg.http_ports.iter().any(|r| r.contains(port));
    let mut first = Vec::new();
    if !cfg.enable || !cfg.parse_pure_ip || !(tls_port || http_port) {
        return Ok(Sniff { host: None, first });
    }
    let deadline = Instant::now() + cfg.timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline, read_some(client, &mut first)).await {
            Err(_) => {
                debug!(port, bytes = first.len(), "sniffing timed out");
                break;
            }
            Ok(r) => r?,
        };
        if n == 0 {
            break;
        }
        let tls = if tls_port {
            tls::sniff_sni(&first)
        } else {
            Sniffed::NotThis
        };
        let http = if http_port {
            http::sniff_host(&first)
        } else {
            Sniffed::NotThis
        };
        match (tls, http) {
            (Sniffed::Name(name), _) | (_, Sniffed::Name(name)) => {
                let host = cfg.accepts(&name).then_some(name);
                return Ok(Sniff { host, first });
            }
            (Sniffed::NotThis, Sniffed::NotThis) => break,
            _ if first.len() >= MAX_PEEK => break,
            _ => {}
        }
    }
    Ok(Sniff { host: None, first })
}

/// Appends what `client` has now to `first` (growing it toward [`MAX_PEEK`], so a small
/// first flight costs a small buffer); `Ok(0)` at end of file.
async fn read_some(client: &TcpStream, first: &mut Vec<u8>) -> io::Result<usize> {
    let want = if first.is_empty() {
        FIRST_READ
    } else {
        first.len()
    };
    first.reserve(want.min(MAX_PEEK - first.len()));
    loop {
        client.readable().await?;
        match client.try_read_buf(first) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
