//! Marked TCP dialing and upstream server addresses. Every socket opened toward a server
//! carries the routing mark, so tpgate's own traffic is never intercepted again.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use socket2::Type;
use tokio::net::{TcpSocket, TcpStream};
use tpgate_core::net::Destination;

use super::error::DialError;
use super::resolve::Resolver;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `dst` from a socket carrying `mark`, within [`CONNECT_TIMEOUT`].
pub(crate) async fn connect_marked(dst: SocketAddr, mark: u32) -> io::Result<TcpStream> {
    let s = tpgate_sys::outbound_socket(dst.is_ipv6(), Type::STREAM, mark)?;
    let s: std::net::TcpStream = s.into();
    let fut = TcpSocket::from_std_stream(s).connect(dst);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| DialError::ConnectTimeout(dst))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// An upstream's `server:port`, resolved at start and again after a failure.
#[derive(Debug)]
pub(crate) struct ServerAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The last successful resolution; cleared when a dial fails so the next one re-resolves.
    cached: Mutex<Option<SocketAddr>>,
}

impl ServerAddr {
    pub(crate) fn new(host: &str, port: u16) -> Self {
        let cached = host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        Self {
            host: host.to_string(),
            port,
            cached: Mutex::new(cached),
        }
    }

    /// What a previous hop of a relay chain is asked to connect to.
    pub(crate) fn destination(&self) -> Destination {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => Destination::Addr(SocketAddr::new(ip, self.port)),
            Err(_) => Destination::Domain(self.host.clone(), self.port),
        }
    }

    fn is_literal(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }

    pub(crate) async fn resolve(&self, resolver: &Resolver) -> io::Result<SocketAddr> {
        if let Some(a) = self.cached.lock().ok().and_then(|c| *c) {
            return Ok(a);
        }
        let ip = resolver.lookup(&self.host).await?;
        let a = SocketAddr::new(ip, self.port);
        if let Ok(mut c) = self.cached.lock() {
            *c = Some(a);
        }
        Ok(a)
    }

    /// Forgets the resolved address after a failure (a literal address stays).
    pub(crate) fn invalidate(&self) {
        if !self.is_literal() {
            if let Ok(mut c) = self.cached.lock() {
                *c = None;
            }
        }
    }

    pub(crate) async fn connect(&self, resolver: &Resolver, mark: u32) -> io::Result<TcpStream> {
        let addr = self.resolve(resolver).await?;
        connect_marked(addr, mark)
            .await
            .inspect_err(|_| self.invalidate())
    }
}
