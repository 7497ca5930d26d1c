//! What the QUIC proxies (hysteria2, tuic) share: a quinn client config on the same rustls
//! settings as the TLS outbounds; their live connections, one straight to the server and
//! one per way through a relay chain's earlier hops; and the socket under each: a marked UDP
//! socket of its own, or a [`Tunnel`] through the earlier hops' UDP association.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::{mpsc, watch};
use tpgate_core::config::Tls;
use tpgate_core::net::Destination;
use tracing::debug;

use super::dial::ServerAddr;
use super::error::TlsError;
use super::tls::TlsClient;
use super::udp::{Batch, UdpRecv, UdpSend, BATCH};
use super::{Ctx, Outbounds, Upstream};

/// The QUIC handshake (and what the protocol does before a connection is usable), at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets queued each way in a [`Tunnel`] before more are dropped (QUIC resends them).
const TUNNEL_QUEUE: usize = 1024;

/// Idle QUIC connections are kept alive by pings this often...
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// ...and end after this long without an answer.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS choices beyond [`Tls`] that only the QUIC proxies make.
#[derive(Debug, Clone, Copy)]
pub(super) struct Options {
    /// 0-RTT on resumed sessions (tuic's `reduce-rtt`).
    pub(super) early_data: bool,
    /// Send the server name (tuic's `disable-sni` turns it off).
    pub(super) sni: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            early_data: false,
            sni: true,
        }
    }
}

/// The quinn client config for `tls` (its `alpn` offered) and the server name to ask for;
/// `transport` gets the keep-alive and idle timeout every QUIC proxy uses.
pub(super) fn client_config(
    tls: &Tls,
    server: &str,
    mut transport: quinn::TransportConfig,
    options: Options,
) -> Result<(quinn::ClientConfig, String), TlsError> {
    let alpn: Vec<&[u8]> = tls.alpn.iter().map(|a| a.as_bytes()).collect();
    let (config, server_name) = TlsClient::config(tls, server, &alpn)?;
    let config = if options.early_data || !options.sni {
        let mut c = (*config).clone();
        c.enable_early_data = options.early_data;
        c.enable_sni = options.sni;
        Arc::new(c)
    } else {
        config
    };
    let quic = QuicClientConfig::try_from(config).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
    client.transport_config(Arc::new(transport));
    Ok((client, server_name))
}

/// A client endpoint on the socket `place` says: a new UDP socket carrying the routing
/// mark (so its packets are never intercepted), of the server's family, or the tunnel
/// through earlier hops; `wrap` may put a layer between QUIC and it (obfuscation, port
/// hopping).
pub(super) fn endpoint(
    place: &Place,
    client: quinn::ClientConfig,
    wrap: impl FnOnce(Arc<dyn AsyncUdpSocket>) -> Arc<dyn AsyncUdpSocket>,
) -> io::Result<quinn::Endpoint> {
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let inner: Arc<dyn AsyncUdpSocket> = match &place.under {
        Under::Socket(mark) => {
            let remote = place.remote;
            let sock = tpgate_sys::outbound_socket(remote.is_ipv6(), socket2::Type::DGRAM, *mark)?;
            sock.bind(&unspecified(remote.ip()).into())?;
            runtime.wrap_udp_socket(sock.into())?
        }
        Under::Tunnel(t) => t.clone(),
    };
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        wrap(inner),
        runtime,
    )?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// Port 0 on the unspecified address of `ip`'s family.
fn unspecified(ip: IpAddr) -> SocketAddr {
    if ip.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

/// How a QUIC proxy's packets reach its server.
pub(crate) enum Way<'a, 'v> {
    /// From a marked UDP socket of the connection's own.
    Direct {
        server: &'a ServerAddr,
        ctx: &'a Ctx,
    },
    /// Through a relay chain's earlier hops: their UDP association to the server.
    Via(&'a Via<'v>),
}

/// A QUIC proxy reached through earlier hops (a relay chain, a `dialer-proxy`).
pub(crate) struct Via<'a> {
    /// The earlier hops' names: a connection through other hops is another connection.
    pub(crate) key: String,
    /// The QUIC proxy's server, as the earlier hops are asked to reach it.
    pub(crate) server: Destination,
    pub(crate) outbounds: &'a Outbounds,
    /// The earlier hops, first first.
    pub(crate) before: &'a [Arc<Upstream>],
}

impl Via<'_> {
    /// The earlier hops' UDP association to the server.
    async fn open(&self) -> io::Result<(UdpSend, UdpRecv)> {
        self.outbounds
            .open_udp_chain(self.before, &self.server)
            .await
    }
}

/// Where a new QUIC connection goes, and the socket under it.
pub(super) struct Place {
    /// What quinn connects to. A server named by a domain behind earlier hops gets a
    /// stand-in (loopback, its port): the last earlier hop resolves the name.
    pub(super) remote: SocketAddr,
    /// The server as log lines name it.
    pub(super) label: String,
    under: Under,
}

enum Under {
    /// A new socket with this routing mark.
    Socket(u32),
    Tunnel(Arc<Tunnel>),
}

impl Place {
    /// For a connection through earlier hops, a task that closes `conn` once their
    /// association ends (its flows fail at once instead of at the idle timeout); abort it
    /// with the connection.
    pub(super) fn watch(&self, conn: &quinn::Connection) -> Option<tokio::task::JoinHandle<()>> {
        let Under::Tunnel(t) = &self.under else {
            return None;
        };
        let mut ended = t.ended.clone();
        let conn = conn.clone();
        let label = self.label.clone();
        Some(tokio::spawn(async move {
            let why = loop {
                if let Some(why) = ended.borrow_and_update().clone() {
                    break why;
                }
                if ended.changed().await.is_err() {
                    return;
                }
            };
            debug!(server = %label, %why, "QUIC connection closed: the way through the earlier hops ended");
            conn.close(0u32.into(), b"");
        }))
    }
}

/// A QUIC session: what [`Sessions`] needs of it.
pub(super) trait Live {
    fn connection(&self) -> &quinn::Connection;
}

/// One QUIC proxy's live connections, by way: made on first use and again after they end.
pub(super) struct Sessions<S> {
    slots: tokio::sync::Mutex<HashMap<String, Arc<S>>>,
}

impl<S> Default for Sessions<S> {
    fn default() -> Self {
        Self {
            slots: tokio::sync::Mutex::default(),
        }
    }
}

impl<S: Live> Sessions<S> {
    /// The live connection going `way`, or a new one from `connect` (within 10 s, or
    /// `timed_out` with the server's label).
    pub(super) async fn get<F, Fut>(
        &self,
        way: &Way<'_, '_>,
        timed_out: impl FnOnce(String) -> io::Error,
        connect: F,
    ) -> io::Result<Arc<S>>
    where
        F: FnOnce(Place) -> Fut,
        Fut: Future<Output = io::Result<S>>,
    {
        let key = match way {
            Way::Direct { .. } => "",
            Way::Via(v) => v.key.as_str(),
        };
        let mut slots = self.slots.lock().await;
        if let Some(s) = slots
            .get(key)
            .filter(|s| s.connection().close_reason().is_none())
        {
            return Ok(s.clone());
        }
        slots.remove(key);
        let place = match way {
            Way::Direct { server, ctx } => {
                let remote = server.resolve(&ctx.resolver).await?;
                Place {
                    remote,
                    label: remote.to_string(),
                    under: Under::Socket(ctx.mark),
                }
            }
            Way::Via(v) => {
                let (send, recv) = v.open().await?;
                let remote = match &v.server {
                    Destination::Addr(a) => *a,
                    Destination::Domain(_, port) => (Ipv4Addr::LOCALHOST, *port).into(),
                };
                Place {
                    remote,
                    label: format!("{} via {}", v.server, v.key),
                    under: Under::Tunnel(Tunnel::start(send, recv, v.server.clone(), remote)),
                }
            }
        };
        let label = place.label.clone();
        let made = tokio::time::timeout(CONNECT_TIMEOUT, connect(place))
            .await
            .map_err(|_| timed_out(label))
            .and_then(|r| r);
        if made.is_err() {
            if let Way::Direct { server, .. } = way {
                server.invalidate();
            }
        }
        let s = Arc::new(made?);
        slots.insert(key.to_owned(), s.clone());
        Ok(s)
    }

    /// Drops `s` (its connection died under a flow): the next flow makes another.
    pub(super) async fn forget(&self, s: &Arc<S>) {
        let mut slots = self.slots.lock().await;
        slots.retain(|_, c| !Arc::ptr_eq(c, s));
    }
}

/// The socket under a QUIC connection through earlier hops: each packet QUIC sends goes
/// to the server through their UDP association (to the port QUIC addressed, for port
/// hopping), and what comes back is handed to QUIC as from `remote`. Two tasks carry the
/// packets; a full queue drops a packet, which QUIC resends. When the association ends,
/// `ended` says why.
pub(super) struct Tunnel {
    out: mpsc::Sender<(u16, Bytes)>,
    replies: Mutex<mpsc::Receiver<Bytes>>,
    remote: SocketAddr,
    ended: watch::Receiver<Option<String>>,
    pumps: [tokio::task::JoinHandle<()>; 2],
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        for p in &self.pumps {
            p.abort();
        }
    }
}

impl Tunnel {
    fn start(send: UdpSend, recv: UdpRecv, server: Destination, remote: SocketAddr) -> Arc<Self> {
        let (out, to_send) = mpsc::channel(TUNNEL_QUEUE);
        let (replied, replies) = mpsc::channel(TUNNEL_QUEUE);
        let (end, ended) = watch::channel(None);
        let end = Arc::new(end);
        let pumps = [
            tokio::spawn(pump_out(send, server, to_send, end.clone())),
            tokio::spawn(pump_in(recv, replied, end)),
        ];
        Arc::new(Self {
            out,
            replies: Mutex::new(replies),
            remote,
            ended,
            pumps,
        })
    }
}

/// Sends what QUIC queued, a batch at a time (each run to one port together).
async fn pump_out(
    mut send: UdpSend,
    server: Destination,
    mut queued: mpsc::Receiver<(u16, Bytes)>,
    end: Arc<watch::Sender<Option<String>>>,
) {
    let mut items = Vec::with_capacity(BATCH);
    let mut run = Vec::with_capacity(BATCH);
    while let Some(first) = queued.recv().await {
        items.clear();
        items.push(first);
        while items.len() < BATCH {
            match queued.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        for same in items.chunk_by(|a: &(u16, Bytes), b| a.0 == b.0) {
            let dst = match &server {
                Destination::Addr(a) => Destination::Addr(SocketAddr::new(a.ip(), same[0].0)),
                Destination::Domain(host, _) => Destination::Domain(host.clone(), same[0].0),
            };
            run.clear();
            run.extend(same.iter().map(|(_, d)| d.clone()));
            if let Err(e) = send.send_batch(&dst, &run).await {
                end.send_replace(Some(format!("sending through them: {e}")));
                return;
            }
        }
    }
}

/// Queues what comes back for QUIC.
async fn pump_in(
    mut recv: UdpRecv,
    replied: mpsc::Sender<Bytes>,
    end: Arc<watch::Sender<Option<String>>>,
) {
    let mut batch = Batch::default();
    loop {
        batch.clear();
        if let Err(e) = recv.recv_batch(&mut batch).await {
            end.send_replace(Some(e.to_string()));
            return;
        }
        for d in batch.slices() {
            let _ = replied.try_send(Bytes::copy_from_slice(d));
        }
    }
}

/// Sending never waits: a full queue drops the packet.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for Tunnel {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let port = transmit.destination.port();
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for packet in transmit.contents.chunks(size) {
            let _ = self.out.try_send((port, Bytes::copy_from_slice(packet)));
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let Ok(mut replies) = self.replies.lock() else {
            return Poll::Pending;
        };
        let mut n = 0;
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
            let packet = if n == 0 {
                match replies.poll_recv(cx) {
                    Poll::Ready(Some(p)) => p,
                    // Ended: the watch closes the connection; nothing more comes.
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            } else {
                match replies.try_recv() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
            let len = packet.len().min(buf.len());
            buf[..len].copy_from_slice(&packet[..len]);
            *m = RecvMeta {
                addr: self.remote,
                len,
                stride: len,
                ecn: None,
                dst_ip: None,
            };
            n += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(unspecified(self.remote.ip()))
    }

    /// The earlier hops may split what they carry: QUIC keeps to its smallest packets.
    fn may_fragment(&self) -> bool {
        true
    }
}

/// A QUIC stream's receiving half whose errors carry the connection's close reason (and
/// `hint`, what that reason likely means for the protocol): a bare "connection lost" is
/// all quinn says otherwise.
pub(super) struct Explained {
    inner: quinn::RecvStream,
    conn: quinn::Connection,
    hint: &'static str,
}

impl Explained {
    pub(super) fn new(
        inner: quinn::RecvStream,
        conn: quinn::Connection,
        hint: &'static str,
    ) -> Self {
        Self { inner, conn, hint }
    }
}

impl tokio::io::AsyncRead for Explained {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match r {
            Poll::Ready(Err(e)) => {
                let why = match self.conn.close_reason() {
                    Some(reason) => format!("{e}: {reason}{}", self.hint),
                    None => e.to_string(),
                };
                Poll::Ready(Err(io::Error::new(e.kind(), why)))
            }
            other => other,
        }
    }
}
