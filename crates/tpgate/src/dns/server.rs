//! The DNS server's sockets: UDP datagrams and TCP connections (two-byte length framing,
//! split by `tpgate_core::dns::Frames`; several queries per connection) on `dns.listen`. Bound before interception is
//! installed, so a busy port is a clear startup error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use socket2::Type;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tpgate_core::dns::{frame, Frames};
use tracing::{debug, info, warn};

use super::{Access, Dns};
use crate::shutdown::Shutdown;

/// Queries answered at once; more wait (UDP) so a flood cannot exhaust memory.
const IN_FLIGHT: usize = 1024;
/// A TCP client idle this long is closed (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

pub(crate) struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

/// Binds UDP and TCP on `addr`. The sockets carry `mark` (the routing mark) so that, with
/// `intercept.local`, the server's own replies are never taken for new outgoing flows.
pub(crate) fn bind(addr: SocketAddr, mark: u32) -> Result<Sockets> {
    let context = |proto: &str| format!("binding the DNS server (dns.listen) on {proto} {addr}");
    let udp = (|| {
        let s = tpgate_sys::outbound_socket(addr.is_ipv6(), Type::DGRAM, mark)?;
        // Answers leave from the address each query was sent to (see `serve_udp`).
        tpgate_sys::enable_pktinfo(&s, addr.is_ipv6())?;
        s.bind(&addr.into())?;
        UdpSocket::from_std(s.into())
    })()
    .with_context(|| context("udp"))?;
    let tcp = (|| {
        let s = tpgate_sys::outbound_socket(addr.is_ipv6(), Type::STREAM, mark)?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        TcpListener::from_std(s.into())
    })()
    .with_context(|| context("tcp"))?;
    info!("dns server on {addr} (udp, tcp)");
    Ok(Sockets { udp, tcp })
}

/// Serves, answering whom `access` allows, until `stop` fires.
pub(crate) async fn serve(sockets: Sockets, dns: Arc<Dns>, access: Arc<Access>, stop: Shutdown) {
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let udp = Arc::new(sockets.udp);
    tokio::join!(
        serve_udp(
            udp,
            dns.clone(),
            access.clone(),
            limit.clone(),
            stop.clone()
        ),
        serve_tcp(sockets.tcp, dns, access, limit, stop),
    );
}

async fn serve_udp(
    sock: Arc<UdpSocket>,
    dns: Arc<Dns>,
    access: Arc<Access>,
    limit: Arc<Semaphore>,
    stop: Shutdown,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer, local) = tokio::select! {
            r = sock.async_io(Interest::READABLE, || tpgate_sys::recv_with_arrival(&*sock, &mut buf)) => match r {
                Ok(a) if access.allows(a.peer.ip(), a.ifindex) => (a.len, a.peer, a.local),
                Ok(_) => continue,
                Err(e) => {
                    // ICMP errors of earlier replies surface here; they end nothing.
                    debug!("dns udp recv: {e}");
                    continue;
                }
            },
            () = stop.wait() => return,
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let query = buf[..n].to_vec();
        let (sock, dns) = (sock.clone(), dns.clone());
        tokio::spawn(async move {
            if let Some(reply) = dns.handle(&query, true).await {
                // From the address the query was sent to: a query redirected by
                // dns-hijack, or sent to one of several local addresses, expects exactly
                // that address to answer (conntrack maps it back to the server asked).
                let sent = sock
                    .async_io(Interest::WRITABLE, || {
                        tpgate_sys::send_from(&*sock, &reply, peer, local)
                    })
                    .await;
                if let Err(e) = sent {
                    debug!("dns reply to {peer}: {e}");
                }
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(
    listener: TcpListener,
    dns: Arc<Dns>,
    access: Arc<Access>,
    limit: Arc<Semaphore>,
    stop: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.wait() => return,
        };
        match accepted {
            Ok((_, peer)) if !access.allows(peer.ip(), None) => {}
            Ok((stream, peer)) => {
                let (dns, limit, stop) = (dns.clone(), limit.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        r = connection(stream, &dns, &limit) => {
                            if let Err(e) = r {
                                debug!("dns tcp {peer}: {e}");
                            }
                        }
                        () = stop.wait() => {}
                    }
                });
            }
            Err(e) => {
                warn!("dns tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(mut s: TcpStream, dns: &Dns, limit: &Semaphore) -> std::io::Result<()> {
    let mut frames = Frames::default();
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(query) = frames.next_message() {
            let _permit = limit.acquire().await;
            let Some(reply) = dns.handle(&query, false).await.as_deref().and_then(frame) else {
                return Ok(());
            };
            s.write_all(&reply).await?;
        }
        match tokio::time::timeout(TCP_IDLE, s.read(&mut buf)).await {
            Err(_) if frames.is_partial() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "slow query",
                ))
            }
            Err(_) | Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => frames.push(&buf[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}
