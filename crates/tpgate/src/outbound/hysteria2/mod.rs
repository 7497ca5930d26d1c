//! `type: hysteria2`: one QUIC connection per proxy (quinn, rustls), authenticated by an
//! HTTP/3 `POST /auth` (the h3 crate); each TCP flow is a bidirectional stream opened with a
//! TCPRequest, each UDP flow a session of QUIC datagrams. The connection is made on first
//! use and again after it ends (one per way, when relay chains reach the server through
//! earlier hops). The framing is `tpgate_core::proto::hysteria2`.

mod brutal;
mod socket;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rand::Rng as _;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tpgate_core::config::Hysteria2Opts;
use tpgate_core::net::Destination;
use tpgate_core::proto::hysteria2::{self as proto, Defragger, Salamander, SALT_LEN};
use tracing::debug;

use super::error::TlsError;
use super::quic::{self, Place, Sessions, Way};
use super::BoxIo;

/// Replies queued for one UDP flow before more are dropped.
const UDP_QUEUE: usize = 256;
/// Random padding on requests, as Hysteria's own client sends.
const PADDING: std::ops::Range<usize> = 64..512;

/// Why a Hysteria 2 connection or stream failed; one log line names the hop and this.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Hy2Error {
    #[error("QUIC connection to {addr}: {source}")]
    Quic {
        addr: String,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("QUIC handshake with {0} timed out after 10 s (nothing listening, or salamander or the port wrong)")]
    Timeout(String),
    #[error("HTTP/3 authentication: {0}")]
    Http3(String),
    #[error(transparent)]
    Auth(#[from] proto::AuthError),
    #[error("opening a stream: {0}")]
    Stream(#[from] quinn::ConnectionError),
    #[error("the server refused {dst}: {message}")]
    Refused { dst: String, message: String },
    #[error("bad TCPResponse: {0}")]
    Response(#[from] proto::TcpResponseError),
    #[error("the server ended the stream before answering the TCPRequest")]
    NoResponse,
    #[error("the server does not relay UDP (Hysteria-UDP: false)")]
    NoUdp,
    #[error("the server does not accept QUIC datagrams")]
    NoDatagrams,
}

impl From<Hy2Error> for io::Error {
    fn from(e: Hy2Error) -> Self {
        let kind = match &e {
            Hy2Error::Timeout(_) => io::ErrorKind::TimedOut,
            Hy2Error::Auth(_) => io::ErrorKind::PermissionDenied,
            Hy2Error::Refused { .. } => io::ErrorKind::ConnectionRefused,
            _ => io::ErrorKind::ConnectionAborted,
        };
        Self::new(kind, e)
    }
}

pub(crate) struct Hysteria2 {
    name: String,
    opts: Hysteria2Opts,
    server_name: String,
    client: quinn::ClientConfig,
    /// Brutal's sending rate for the live connection (0: Cubic), set once it is authenticated.
    rate: Arc<AtomicU64>,
    /// The live connections (one per way), shared by every flow through this proxy.
    sessions: Sessions<Session>,
}

impl std::fmt::Debug for Hysteria2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hysteria2")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// One authenticated QUIC connection.
struct Session {
    conn: quinn::Connection,
    /// Dropping the last request handle closes the HTTP/3 (and so the QUIC) connection.
    _h3: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: tokio::task::JoinHandle<()>,
    demux: tokio::task::JoinHandle<()>,
    /// Closes the connection when the earlier hops under it end.
    watch: Option<tokio::task::JoinHandle<()>>,
    udp: bool,
    flows: Arc<Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>>,
    next_session: AtomicU32,
    /// Each socket wrapper or endpoint lives as long as the connection.
    _endpoint: quinn::Endpoint,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.conn.close(0u32.into(), b"");
        self.driver.abort();
        self.demux.abort();
        if let Some(w) = &self.watch {
            w.abort();
        }
    }
}

impl quic::Live for Session {
    fn connection(&self) -> &quinn::Connection {
        &self.conn
    }
}

impl Hysteria2 {
    pub(crate) fn new(name: &str, server: &str, opts: &Hysteria2Opts) -> Result<Self, TlsError> {
        let rate = Arc::new(AtomicU64::new(0));
        let mut transport = quinn::TransportConfig::default();
        transport.congestion_controller_factory(Arc::new(brutal::Factory { rate: rate.clone() }));
        if opts.obfs.is_some() {
            // Salamander adds its salt to every packet: leave room for it.
            let mut mtu = quinn::MtuDiscoveryConfig::default();
            mtu.upper_bound(1452 - SALT_LEN as u16);
            transport.mtu_discovery_config(Some(mtu));
        }
        let (client, server_name) =
            quic::client_config(&opts.tls, server, transport, quic::Options::default())?;
        Ok(Self {
            name: name.to_owned(),
            opts: opts.clone(),
            server_name,
            client,
            rate,
            sessions: Sessions::default(),
        })
    }

    /// The live connection going `way`, made (and authenticated) when there is none.
    async fn session(&self, way: &Way<'_, '_>) -> io::Result<Arc<Session>> {
        self.sessions
            .get(
                way,
                |label| Hy2Error::Timeout(label).into(),
                |place| self.connect(place),
            )
            .await
    }

    async fn connect(&self, place: Place) -> io::Result<Session> {
        let addr = place.remote;
        let endpoint = quic::endpoint(&place, self.client.clone(), |inner| {
            if self.opts.obfs.is_none() && self.opts.ports.is_empty() {
                return inner;
            }
            Arc::new(socket::Wrapped {
                inner,
                salamander: self.opts.obfs.as_deref().map(Salamander::new),
                hop: (!self.opts.ports.is_empty()).then(|| {
                    socket::Hop::new(self.opts.ports.clone(), self.opts.hop_interval, addr.port())
                }),
                remote: addr,
            })
        })?;
        let conn = endpoint
            .connect(addr, &self.server_name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            .await
            .map_err(|source| Hy2Error::Quic {
                addr: place.label.clone(),
                source,
            })?;
        let (h3, driver, auth) = self.authenticate(&conn).await?;
        self.rate.store(
            proto::send_rate(auth, self.opts.up).unwrap_or(0),
            Ordering::Relaxed,
        );
        debug!(proxy = %self.name, server = %place.label, udp = auth.udp, rx = ?auth.rx, "hysteria2: authenticated");
        let flows: Arc<Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>> = Arc::default();
        let demux = tokio::spawn(demux(conn.clone(), flows.clone()));
        Ok(Session {
            watch: place.watch(&conn),
            conn,
            _h3: h3,
            driver,
            demux,
            udp: auth.udp,
            flows,
            next_session: AtomicU32::new(rand::rng().random()),
            _endpoint: endpoint,
        })
    }

    async fn authenticate(
        &self,
        conn: &quinn::Connection,
    ) -> Result<
        (
            h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
            tokio::task::JoinHandle<()>,
            proto::AuthOk,
        ),
        Hy2Error,
    > {
        let h3err = |e: &dyn std::fmt::Display| Hy2Error::Http3(e.to_string());
        let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .map_err(|e| h3err(&e))?;
        let driver = tokio::spawn(async move {
            let _ = driver.wait_idle().await;
        });
        let req = http::Request::post("https://hysteria/auth")
            .header("Hysteria-Auth", &self.opts.password)
            .header("Hysteria-CC-RX", self.opts.down.to_string())
            .header("Hysteria-Padding", padding_text())
            .body(())
            .map_err(|e| h3err(&e))?;
        let mut stream = send.send_request(req).await.map_err(|e| h3err(&e))?;
        stream.finish().await.map_err(|e| h3err(&e))?;
        let resp = stream.recv_response().await.map_err(|e| h3err(&e))?;
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok());
        let auth = proto::auth_response(
            resp.status().as_u16(),
            header("Hysteria-UDP"),
            header("Hysteria-CC-RX"),
        )?;
        Ok((send, driver, auth))
    }

    /// A stream through the proxy to `dst`, once the server has connected to it.
    pub(crate) async fn connect_tcp(
        &self,
        way: &Way<'_, '_>,
        dst: &Destination,
    ) -> io::Result<BoxIo> {
        let s = self.session(way).await?;
        let (mut tx, rx) = match s.conn.open_bi().await {
            Ok(pair) => pair,
            Err(e) => {
                // The connection died under us: forget it; the next flow reconnects.
                self.sessions.forget(&s).await;
                return Err(Hy2Error::Stream(e).into());
            }
        };
        // Reads that fail say why the connection ended.
        let mut rx = quic::Explained::new(rx, s.conn.clone(), "");
        let mut req = Vec::new();
        proto::encode_tcp_request(dst, &padding(), &mut req);
        tx.write_all(&req).await?;
        // Wait for the answer before handing the stream over: a server-first protocol's
        // client sends nothing until the server speaks, and a refusal must fail the dial.
        let mut got = Vec::with_capacity(64);
        let (resp, used) = loop {
            if let Some(r) = proto::parse_tcp_response(&got).map_err(Hy2Error::from)? {
                break r;
            }
            if rx.read_buf(&mut got).await? == 0 {
                return Err(Hy2Error::NoResponse.into());
            }
        };
        if !resp.ok {
            return Err(Hy2Error::Refused {
                dst: dst.to_string(),
                message: resp.message,
            }
            .into());
        }
        let rest = got.split_off(used);
        let rd: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if rest.is_empty() {
            Box::new(rx)
        } else {
            Box::new(io::Cursor::new(rest).chain(rx))
        };
        Ok(Box::new(tokio::io::join(rd, tx)))
    }

    /// A UDP session for one flow: datagrams to the server with a session id of its own.
    pub(crate) async fn udp(&self, way: &Way<'_, '_>) -> io::Result<(Hy2UdpSend, Hy2UdpRecv)> {
        let s = self.session(way).await?;
        if !s.udp {
            return Err(Hy2Error::NoUdp.into());
        }
        if s.conn.max_datagram_size().is_none() {
            return Err(Hy2Error::NoDatagrams.into());
        }
        let id = s.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(UDP_QUEUE);
        if let Ok(mut flows) = s.flows.lock() {
            flows.insert(id, tx);
        }
        let send = Hy2UdpSend {
            session: s.clone(),
            id,
            packet: AtomicU16::new(0),
        };
        let recv = Hy2UdpRecv { session: s, id, rx };
        Ok((send, recv))
    }
}

/// Sends one flow's datagrams.
pub(crate) struct Hy2UdpSend {
    session: Arc<Session>,
    id: u32,
    packet: AtomicU16,
}

impl Hy2UdpSend {
    /// Frames and sends `datagrams` to `dst`, fragmenting each to QUIC's datagram room. A
    /// datagram QUIC cannot take now (its send buffer is full) is dropped, UDP's way.
    pub(crate) fn send(&self, dst: &Destination, datagrams: &[Bytes]) -> io::Result<()> {
        let addr = dst.to_string();
        let room = self
            .session
            .conn
            .max_datagram_size()
            .ok_or(Hy2Error::NoDatagrams)?;
        for d in datagrams {
            let packet = self.packet.fetch_add(1, Ordering::Relaxed);
            let mut err = None;
            proto::encode_udp_message(self.id, packet, &addr, d, room, |m| {
                if let Err(e) = self.session.conn.send_datagram(Bytes::from(m)) {
                    err.get_or_insert(e);
                }
            })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            match err {
                None | Some(quinn::SendDatagramError::TooLarge) => {}
                Some(quinn::SendDatagramError::ConnectionLost(e)) => {
                    return Err(Hy2Error::Stream(e).into())
                }
                Some(e) => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, e)),
            }
        }
        Ok(())
    }
}

/// Receives one flow's datagrams (reassembled by the connection's demultiplexer).
pub(crate) struct Hy2UdpRecv {
    session: Arc<Session>,
    id: u32,
    rx: mpsc::Receiver<Vec<u8>>,
}

impl Hy2UdpRecv {
    /// The next reply and any already queued after it (up to `max`).
    pub(crate) async fn recv(&mut self, max: usize, mut take: impl FnMut(&[u8])) -> io::Result<()> {
        let Some(first) = self.rx.recv().await else {
            let why = self
                .session
                .conn
                .close_reason()
                .map_or_else(|| "ended".to_owned(), |e| e.to_string());
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("hysteria2 connection {why}"),
            ));
        };
        take(&first);
        for _ in 1..max {
            match self.rx.try_recv() {
                Ok(d) => take(&d),
                Err(_) => break,
            }
        }
        Ok(())
    }
}

impl Drop for Hy2UdpRecv {
    fn drop(&mut self) {
        if let Ok(mut flows) = self.session.flows.lock() {
            flows.remove(&self.id);
        }
    }
}

/// Hands each datagram of the connection to its flow, reassembling fragments; drops what
/// belongs to no flow or does not parse. Ends with the connection, which ends every flow.
async fn demux(conn: quinn::Connection, flows: Arc<Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>>) {
    let mut defrag: HashMap<u32, Defragger> = HashMap::new();
    while let Ok(d) = conn.read_datagram().await {
        let Ok(m) = proto::parse_udp_message(&d) else {
            debug!("hysteria2: dropped a malformed datagram from the server");
            continue;
        };
        let Some(tx) = flows.lock().ok().and_then(|f| f.get(&m.session).cloned()) else {
            defrag.remove(&m.session);
            continue;
        };
        let whole = if m.fragments == 1 {
            Some(m.payload.to_vec())
        } else {
            defrag.entry(m.session).or_default().push(&m)
        };
        if let Some(whole) = whole {
            let _ = tx.try_send(whole);
        }
    }
    if let Ok(mut f) = flows.lock() {
        f.clear();
    }
}

fn padding() -> Vec<u8> {
    let mut rng = rand::rng();
    let n = rng.random_range(PADDING);
    (0..n).map(|_| rng.random()).collect()
}

/// Header-safe padding (the server ignores it).
fn padding_text() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let n = rng.random_range(PADDING);
    (0..n)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}
