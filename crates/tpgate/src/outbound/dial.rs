//! Marked TCP dialing and upstream server addresses. Every socket opened toward a server
//! carries the routing mark, so tpgate's own traffic is never intercepted again.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive, Type};
use tokio::net::{TcpSocket, TcpStream};
use tpgate_core::net::Destination;

use super::error::DialError;
use super::resolve::Resolver;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long bytes sent to an upstream proxy may stay unacknowledged before the connection is
/// given up (`TCP_USER_TIMEOUT`). An upstream that vanished without a RST or FIN (a
/// blackhole: its host or a middlebox drops everything) would otherwise hold the flow for
/// the kernel's ~15 minutes of retransmissions, and a client waiting on it with nothing to
/// send, until the relay's idle limit.
const UPSTREAM_USER_TIMEOUT: Duration = Duration::from_secs(20);
/// An idle upstream connection is probed after this long without a packet from it
/// (`TCP_KEEPIDLE`), then every [`KEEPALIVE_INTERVAL`]; with [`UPSTREAM_USER_TIMEOUT`] set,
/// the kernel gives up once nothing came back for that long (about 20 s after the last
/// packet), instead of counting probes. One probe per 15 s is nothing to a live upstream.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Probes before giving up; the kernel counts them only when no user timeout is set.
const KEEPALIVE_PROBES: u32 = 3;

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

    /// A marked connection to the upstream's server that notices when the server vanishes
    /// silently (see [`UPSTREAM_USER_TIMEOUT`]).
    pub(crate) async fn connect(&self, resolver: &Resolver, mark: u32) -> io::Result<TcpStream> {
        let addr = self.resolve(resolver).await?;
        let stream = connect_marked(addr, mark)
            .await
            .inspect_err(|_| self.invalidate())?;
        detect_silent_death(&stream)?;
        Ok(stream)
    }
}

/// Keepalive probes and a user timeout on an upstream connection: a dead upstream ends the
/// flow with `ETIMEDOUT` within about 20 s, whether bytes were in flight or not.
fn detect_silent_death(stream: &TcpStream) -> io::Result<()> {
    let s = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    s.set_tcp_keepalive(&keepalive)?;
    s.set_tcp_user_timeout(Some(UPSTREAM_USER_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upstream_connections_notice_a_silent_death() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        detect_silent_death(&stream).unwrap();
        let s = SockRef::from(&stream);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(UPSTREAM_USER_TIMEOUT));
    }
}
