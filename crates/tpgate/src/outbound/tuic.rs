//! `type: tuic` (v5): one QUIC connection per proxy, authenticated by an `Authenticate`
//! command on a unidirectional stream (the token is exported from the TLS session); each TCP
//! flow is a bidirectional stream opened with `Connect`; each UDP flow an association whose
//! `Packet`s travel as QUIC datagrams (`udp-relay-mode: native`) or one unidirectional
//! stream each (`quic`), and a `Dissociate` when the flow ends. A `Heartbeat` datagram keeps
//! the connection alive. The framing is `tpgate_core::proto::tuic`.
//!
//! TUIC has no replies: a wrong password shows as the server closing the connection, which
//! ends the flows on it with the server's reason.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng as _;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tpgate_core::config::{CongestionControl, TuicOpts, UdpRelayMode};
use tpgate_core::net::Destination;
use tpgate_core::proto::fragments::Defragger;
use tpgate_core::proto::tuic as proto;
use tracing::debug;

use super::error::TlsError;
use super::quic::{self, Place, Sessions, Way};
use super::BoxIo;

/// Replies queued for one UDP flow before more are dropped.
const UDP_QUEUE: usize = 256;
/// Longest `Packet` read from a stream in `quic` mode (a datagram of 64 KiB and its header).
const MAX_STREAM_PACKET: usize = 70 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TuicError {
    #[error("QUIC connection to {addr}: {source}")]
    Quic {
        addr: String,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("QUIC handshake with {0} timed out after 10 s (nothing listening?)")]
    Timeout(String),
    #[error("the connection ended: {0} (a TUIC server closes the connection on a wrong uuid or password)")]
    Closed(#[from] quinn::ConnectionError),
    #[error("sending the Authenticate command: {0}")]
    Auth(String),
    #[error(transparent)]
    Frame(#[from] proto::TuicError),
    #[error("the server does not accept QUIC datagrams (use udp-relay-mode: quic)")]
    NoDatagrams,
}

impl From<TuicError> for io::Error {
    fn from(e: TuicError) -> Self {
        let kind = match &e {
            TuicError::Timeout(_) => io::ErrorKind::TimedOut,
            TuicError::Frame(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::ConnectionAborted,
        };
        Self::new(kind, e)
    }
}

pub(crate) struct Tuic {
    name: String,
    opts: TuicOpts,
    server_name: String,
    client: quinn::ClientConfig,
    /// The live connections (one per way), shared by every flow through this proxy.
    sessions: Sessions<Session>,
}

impl std::fmt::Debug for Tuic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tuic")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

type Flows = Arc<Mutex<HashMap<u16, mpsc::Sender<Vec<u8>>>>>;

struct Session {
    conn: quinn::Connection,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    flows: Flows,
    next_assoc: AtomicU16,
    _endpoint: quinn::Endpoint,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.conn.close(0u32.into(), b"");
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl quic::Live for Session {
    fn connection(&self) -> &quinn::Connection {
        &self.conn
    }
}

impl Tuic {
    pub(crate) fn new(name: &str, server: &str, opts: &TuicOpts) -> Result<Self, TlsError> {
        let mut transport = quinn::TransportConfig::default();
        match opts.congestion {
            CongestionControl::Cubic => {
                transport.congestion_controller_factory(Arc::new(
                    quinn::congestion::CubicConfig::default(),
                ));
            }
            CongestionControl::Bbr => {
                transport.congestion_controller_factory(Arc::new(
                    quinn::congestion::BbrConfig::default(),
                ));
            }
            CongestionControl::NewReno => {
                transport.congestion_controller_factory(Arc::new(
                    quinn::congestion::NewRenoConfig::default(),
                ));
            }
        }
        let mut tls = opts.tls.clone();
        if opts.disable_sni {
            tls.sni = None;
        }
        let (client, server_name) = quic::client_config(
            &tls,
            server,
            transport,
            quic::Options {
                early_data: opts.reduce_rtt,
                sni: !opts.disable_sni,
            },
        )?;
        Ok(Self {
            name: name.to_owned(),
            opts: opts.clone(),
            server_name,
            client,
            sessions: Sessions::default(),
        })
    }

    /// The live connection going `way`, made (and authenticated) when there is none.
    async fn session(&self, way: &Way<'_, '_>) -> io::Result<Arc<Session>> {
        self.sessions
            .get(
                way,
                |label| TuicError::Timeout(label).into(),
                |place| self.connect(place),
            )
            .await
    }

    async fn connect(&self, place: Place) -> io::Result<Session> {
        let addr = place.remote;
        let quic_error = |source| TuicError::Quic {
            addr: place.label.clone(),
            source,
        };
        let endpoint = quic::endpoint(&place, self.client.clone(), |s| s)?;
        let connecting = endpoint
            .connect(addr, &self.server_name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = if self.opts.reduce_rtt {
            match connecting.into_0rtt() {
                Ok((conn, _)) => {
                    debug!(proxy = %self.name, "tuic: 0-RTT");
                    conn
                }
                Err(connecting) => connecting.await.map_err(quic_error)?,
            }
        } else {
            connecting.await.map_err(quic_error)?
        };
        let mut token = [0u8; 32];
        conn.export_keying_material(&mut token, &self.opts.uuid.0, self.opts.password.as_bytes())
            .map_err(|_| TuicError::Auth("the TLS session exports no keying material".into()))?;
        let mut auth = conn.open_uni().await.map_err(TuicError::Closed)?;
        auth.write_all(&proto::encode_authenticate(&self.opts.uuid.0, &token))
            .await
            .map_err(|e| TuicError::Auth(e.to_string()))?;
        let _ = auth.finish();
        debug!(proxy = %self.name, server = %place.label, "tuic: authenticate sent");
        let flows: Flows = Arc::default();
        let mut tasks = vec![
            tokio::spawn(datagrams(conn.clone(), flows.clone())),
            tokio::spawn(uni_streams(conn.clone(), flows.clone())),
            tokio::spawn(heartbeat(conn.clone(), self.opts.heartbeat)),
        ];
        tasks.extend(place.watch(&conn));
        Ok(Session {
            conn,
            tasks,
            flows,
            next_assoc: AtomicU16::new(rand::rng().random()),
            _endpoint: endpoint,
        })
    }

    /// A stream to `dst` through the proxy. TUIC has no answer to wait for: the stream is
    /// usable at once, and a refusal shows as its end.
    pub(crate) async fn connect_tcp(
        &self,
        way: &Way<'_, '_>,
        dst: &Destination,
    ) -> io::Result<BoxIo> {
        let s = self.session(way).await?;
        let mut header = Vec::with_capacity(32);
        proto::encode_connect(dst, &mut header).map_err(TuicError::from)?;
        let (mut tx, rx) = match s.conn.open_bi().await {
            Ok(pair) => pair,
            Err(e) => {
                self.sessions.forget(&s).await;
                return Err(TuicError::Closed(e).into());
            }
        };
        tx.write_all(&header)
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e))?;
        let rx = quic::Explained::new(
            rx,
            s.conn.clone(),
            " (a TUIC server closes the connection on a wrong uuid or password)",
        );
        Ok(Box::new(tokio::io::join(rx, tx)))
    }

    /// A UDP association for one flow.
    pub(crate) async fn udp(&self, way: &Way<'_, '_>) -> io::Result<(TuicUdpSend, TuicUdpRecv)> {
        let s = self.session(way).await?;
        if self.opts.udp_relay_mode == UdpRelayMode::Native && s.conn.max_datagram_size().is_none()
        {
            return Err(TuicError::NoDatagrams.into());
        }
        let assoc = s.next_assoc.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(UDP_QUEUE);
        if let Ok(mut flows) = s.flows.lock() {
            flows.insert(assoc, tx);
        }
        let send = TuicUdpSend {
            session: s.clone(),
            assoc,
            packet: AtomicU16::new(0),
            mode: self.opts.udp_relay_mode,
        };
        Ok((
            send,
            TuicUdpRecv {
                session: s,
                assoc,
                rx,
            },
        ))
    }
}

pub(crate) struct TuicUdpSend {
    session: Arc<Session>,
    assoc: u16,
    packet: AtomicU16,
    mode: UdpRelayMode,
}

impl TuicUdpSend {
    /// Frames and sends `datagrams` to `dst`: each `Packet` a QUIC datagram (fragmented to
    /// the datagram room; one QUIC cannot take now is dropped, UDP's way), or in `quic`
    /// mode a unidirectional stream each.
    pub(crate) async fn send(&self, dst: &Destination, datagrams: &[Bytes]) -> io::Result<()> {
        let conn = &self.session.conn;
        for d in datagrams {
            let packet = self.packet.fetch_add(1, Ordering::Relaxed);
            match self.mode {
                UdpRelayMode::Native => {
                    let room = conn.max_datagram_size().ok_or(TuicError::NoDatagrams)?;
                    let mut err = None;
                    proto::encode_packet(self.assoc, packet, dst, d, room, |m| {
                        if let Err(e) = conn.send_datagram(Bytes::from(m)) {
                            err.get_or_insert(e);
                        }
                    })
                    .map_err(TuicError::from)?;
                    match err {
                        None | Some(quinn::SendDatagramError::TooLarge) => {}
                        Some(quinn::SendDatagramError::ConnectionLost(e)) => {
                            return Err(TuicError::Closed(e).into())
                        }
                        Some(e) => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, e)),
                    }
                }
                UdpRelayMode::Quic => {
                    let mut whole = Vec::new();
                    proto::encode_packet(self.assoc, packet, dst, d, usize::MAX, |m| whole = m)
                        .map_err(TuicError::from)?;
                    let mut s = conn.open_uni().await.map_err(TuicError::Closed)?;
                    s.write_all(&whole)
                        .await
                        .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e))?;
                    let _ = s.finish();
                }
            }
        }
        Ok(())
    }
}

pub(crate) struct TuicUdpRecv {
    session: Arc<Session>,
    assoc: u16,
    rx: mpsc::Receiver<Vec<u8>>,
}

impl TuicUdpRecv {
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
                format!("tuic connection {why}"),
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

impl Drop for TuicUdpRecv {
    fn drop(&mut self) {
        if let Ok(mut flows) = self.session.flows.lock() {
            flows.remove(&self.assoc);
        }
        // Tell the server to free the association's socket.
        let conn = self.session.conn.clone();
        let assoc = self.assoc;
        if conn.close_reason().is_none() {
            tokio::spawn(async move {
                if let Ok(mut s) = conn.open_uni().await {
                    let _ = s.write_all(&proto::encode_dissociate(assoc)).await;
                    let _ = s.finish();
                }
            });
        }
    }
}

/// Hands each `Packet` to its association's flow, reassembling fragments.
struct Demux {
    flows: Flows,
    defrag: HashMap<u16, Defragger>,
}

impl Demux {
    fn take(&mut self, bytes: &[u8]) {
        // The server's own keep-alive: nothing to hand on.
        if bytes == proto::HEARTBEAT_COMMAND {
            return;
        }
        let Ok(Some((p, _))) = proto::parse_packet(bytes) else {
            debug!("tuic: dropped a malformed packet from the server");
            return;
        };
        let Some(tx) = self
            .flows
            .lock()
            .ok()
            .and_then(|f| f.get(&p.assoc).cloned())
        else {
            self.defrag.remove(&p.assoc);
            return;
        };
        // Unfragmented packets skip the map: an entry per flow would stay after it ends.
        let whole = if p.fragments == 1 {
            Some(p.payload.to_vec())
        } else {
            self.defrag.entry(p.assoc).or_default().push(&p)
        };
        if let Some(whole) = whole {
            let _ = tx.try_send(whole);
        }
    }
}

async fn datagrams(conn: quinn::Connection, flows: Flows) {
    let mut demux = Demux {
        flows: flows.clone(),
        defrag: HashMap::new(),
    };
    while let Ok(d) = conn.read_datagram().await {
        demux.take(&d);
    }
    if let Ok(mut f) = flows.lock() {
        f.clear();
    }
}

/// `quic` relay mode: the server sends each `Packet` on a unidirectional stream.
async fn uni_streams(conn: quinn::Connection, flows: Flows) {
    let demux = Arc::new(Mutex::new(Demux {
        flows,
        defrag: HashMap::new(),
    }));
    while let Ok(mut s) = conn.accept_uni().await {
        let demux = demux.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            if (&mut s)
                .take(MAX_STREAM_PACKET as u64)
                .read_to_end(&mut buf)
                .await
                .is_ok()
            {
                if let Ok(mut d) = demux.lock() {
                    d.take(&buf);
                }
            }
        });
    }
}

async fn heartbeat(conn: quinn::Connection, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if conn
            .send_datagram(Bytes::from_static(&proto::HEARTBEAT_COMMAND))
            .is_err()
            && conn.close_reason().is_some()
        {
            return;
        }
    }
}
