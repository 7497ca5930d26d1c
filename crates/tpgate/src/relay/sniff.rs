//! Reading a TCP client's first bytes to learn the name it asked for (TLS SNI, HTTP Host)
//! before deciding. The bytes read are kept and sent on first, so nothing is lost. The wait
//! is bounded by `sniffer.timeout` and ends as soon as the bytes so far decide: no added
//! latency when the client's first flight arrives at once. When the name cannot change
//! where a flow goes, [`tcp_while`] reads only while the connection to the server is being
//! made, so server-first protocols (which send nothing) are not delayed at all.

use std::future::Future;
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

/// What sniffing learned: the name (when one was found; the decider applies `skip-domain`)
/// and the bytes read.
#[derive(Debug, Default)]
pub(crate) struct Sniff {
    pub(crate) host: Option<String>,
    pub(crate) first: Vec<u8>,
}

/// Whether flows to `port` are sniffed at all.
pub(crate) fn applies(port: u16, cfg: &Sniffer) -> bool {
    let (tls, http) = kinds(port, cfg);
    cfg.enable && cfg.parse_pure_ip && (tls || http)
}

/// Which sniffers read flows to `port`: (TLS, HTTP).
fn kinds(port: u16, cfg: &Sniffer) -> (bool, bool) {
    (
        cfg.tls_ports.iter().any(|r| r.contains(port)),
        cfg.http_ports.iter().any(|r| r.contains(port)),
    )
}

/// Sniffs `client` if its destination port is configured for TLS or HTTP, waiting at most
/// `cfg.timeout` for bytes that decide.
pub(crate) async fn tcp(client: &TcpStream, port: u16, cfg: &Sniffer) -> io::Result<Sniff> {
    let mut s = Sniff::default();
    if applies(port, cfg) {
        read_name(client, port, cfg, &mut s).await?;
    }
    Ok(s)
}

/// Sniffs `client` only while `other` (the connection to the server) is under way: once
/// `other` is done, what was read so far is kept and sniffing ends. Returns both results.
pub(crate) async fn tcp_while<F: Future>(
    client: &TcpStream,
    port: u16,
    cfg: &Sniffer,
    other: F,
) -> (io::Result<Sniff>, F::Output) {
    let mut s = Sniff::default();
    tokio::pin!(other);
    let read = {
        let sniff = read_name(client, port, cfg, &mut s);
        tokio::select! {
            biased;
            out = &mut other => Err(out),
            r = sniff => Ok(r),
        }
    };
    match read {
        // Reading stopped mid-way: every byte read is in `s.first` (each read completes
        // synchronously once the socket is readable, so none is lost).
        Err(out) => (Ok(s), out),
        Ok(Ok(())) => (Ok(s), other.await),
        Ok(Err(e)) => (Err(e), other.await),
    }
}

/// Reads into `s.first` until the bytes decide (a name, or not this protocol), the client
/// stops, [`MAX_PEEK`] bytes, or the timeout; sets `s.host` to the name found.
async fn read_name(client: &TcpStream, port: u16, cfg: &Sniffer, s: &mut Sniff) -> io::Result<()> {
    let (tls_port, http_port) = kinds(port, cfg);
    let deadline = Instant::now() + cfg.timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline, read_some(client, &mut s.first)).await {
            Err(_) => {
                debug!(port, bytes = s.first.len(), "sniffing timed out");
                return Ok(());
            }
            Ok(r) => r?,
        };
        if n == 0 {
            return Ok(());
        }
        let tls = if tls_port {
            tls::sniff_sni(&s.first)
        } else {
            Sniffed::NotThis
        };
        let http = if http_port {
            http::sniff_host(&s.first)
        } else {
            Sniffed::NotThis
        };
        match (tls, http) {
            (Sniffed::Name(name), _) | (_, Sniffed::Name(name)) => {
                s.host = Some(name);
                return Ok(());
            }
            (Sniffed::NotThis, Sniffed::NotThis) => return Ok(()),
            _ if s.first.len() >= MAX_PEEK => return Ok(()),
            _ => {}
        }
    }
}

/// Appends what `client` has now to `first` (growing it toward [`MAX_PEEK`], so a small
/// first flight costs a small buffer); `Ok(0)` at end of file. Cancel-safe: the read itself
/// happens synchronously once the socket is readable.
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
