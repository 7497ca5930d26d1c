//! Shadowsocks through the maintained `shadowsocks` crate (AEAD and AEAD-2022 ciphers): tpgate
//! supplies the marked transport and the destination; the crate does the cryptography.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use shadowsocks::config::{ServerConfig, ServerType};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use shadowsocks::context::{Context as SsContext, SharedContext};
use shadowsocks::crypto::CipherKind;
use shadowsocks::relay::udprelay::crypto_io::{decrypt_server_payload, encrypt_client_payload};
use shadowsocks::relay::udprelay::options::UdpSocketControlData;
use shadowsocks::relay::Address;
use shadowsocks::ProxyClientStream;
use socket2::Type;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tpgate_core::config::Cipher;
use tpgate_core::net::Destination;

use super::plugin::Plugin;
use super::BoxIo;

pub(crate) struct Shadowsocks {
    cipher: CipherKind,
    password: String,
    context: SharedContext,
    /// What carries the TCP stream to the server (`plugin`); UDP never uses it.
    plugin: Option<Plugin>,
}

impl std::fmt::Debug for Shadowsocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadowsocks")
            .field("cipher", &self.cipher)
            .field("plugin", &self.plugin)
            .finish()
    }
}

impl Shadowsocks {
    pub(crate) fn new(cipher: Cipher, password: &str, plugin: Option<Plugin>) -> io::Result<Self> {
        let kind: CipherKind = cipher.name().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cipher {}", cipher.name()),
            )
        })?;
        Ok(Self {
            cipher: kind,
            password: password.to_string(),
            context: Arc::new(SsContext::new(ServerType::Local)),
            plugin,
        })
    }

    fn server_config(&self, server: SocketAddr) -> io::Result<ServerConfig> {
        ServerConfig::new(server, self.password.clone(), self.cipher)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }

    /// Wraps a stream that already reaches the server (directly or through earlier hops),
    /// through the plugin when there is one.
    pub(crate) async fn wrap(&self, io: BoxIo, dst: &Destination) -> io::Result<BoxIo> {
        let io = match &self.plugin {
            Some(p) => p.open(io).await?,
            None => io,
        };
        // The address in the config is only used to dial, which tpgate has done itself.
        let cfg = self.server_config(SocketAddr::from(([0, 0, 0, 0], 0)))?;
        let s = ProxyClientStream::from_stream(self.context.clone(), io, &cfg, address(dst));
        Ok(Box::new(FirstWriteCap {
            inner: s,
            first: true,
        }))
    }

    /// A UDP association for one flow: a marked socket connected to the server; the crate's
    /// packet functions seal and open each datagram, so tpgate sends and receives them in
    /// batches.
    pub(crate) fn udp(&self, server: SocketAddr, mark: u32) -> io::Result<SsUdp> {
        let s = tpgate_sys::outbound_socket(server.is_ipv6(), Type::DGRAM, mark)?;
        s.connect(&server.into())?;
        Ok(SsUdp {
            sock: UdpSocket::from_std(s.into())?,
            packets: self.packets()?,
        })
    }

    /// The sealing and opening of this proxy's UDP packets, for packets that travel to
    /// the server some other way (through a relay chain's UDP).
    pub(crate) fn packets(&self) -> io::Result<SsPackets> {
        // The address in the config only says where to send, which tpgate decides itself.
        let cfg = self.server_config(SocketAddr::from(([0, 0, 0, 0], 0)))?;
        Ok(SsPackets {
            context: self.context.clone(),
            method: cfg.method(),
            key: cfg.key().into(),
            identity_keys: cfg.clone_identity_keys(),
        })
    }
}

/// A sending half's session: SIP022 (the 2022 ciphers) keys a UDP session by a random client
/// session id and drops a packet id it has seen, so ids count up from 1. Ignored by the
/// classic ciphers.
pub(crate) struct SsControl(UdpSocketControlData);

/// A marked UDP socket connected to the server, and the packets' cryptography.
pub(crate) struct SsUdp {
    sock: UdpSocket,
    packets: SsPackets,
}

impl SsUdp {
    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.sock
    }
}

impl std::ops::Deref for SsUdp {
    type Target = SsPackets;

    fn deref(&self) -> &SsPackets {
        &self.packets
    }
}

/// One proxy's UDP packets: sealed for the server, opened from it.
pub(crate) struct SsPackets {
    context: SharedContext,
    method: CipherKind,
    key: Box<[u8]>,
    identity_keys: Arc<Vec<Bytes>>,
}

impl SsPackets {
    /// A new session for one flow's datagrams.
    pub(crate) fn new_session(&self) -> SsControl {
        let mut ctrl = UdpSocketControlData::default();
        ctrl.client_session_id = rand::random();
        SsControl(ctrl)
    }

    /// Appends `data` for `dst`, sealed as one packet of the session, to `out`.
    pub(crate) fn seal(
        &self,
        ctrl: &mut SsControl,
        dst: &Destination,
        data: &[u8],
        out: &mut BytesMut,
    ) {
        ctrl.0.packet_id += 1;
        encrypt_client_payload(
            &self.context,
            self.method,
            &self.key,
            &address(dst),
            &ctrl.0,
            &self.identity_keys,
            data,
            out,
        );
    }

    /// Opens a packet from the server in place: the payload's length, now at the start of
    /// `raw`; `None` for a packet that does not open (dropped).
    pub(crate) fn open(&self, raw: &mut [u8]) -> Option<usize> {
        match decrypt_server_payload(&self.context, self.method, &self.key, raw) {
            Ok((n, _, _)) => Some(n),
            Err(e) => {
                tracing::debug!("shadowsocks: a UDP packet dropped: {e}");
                None
            }
        }
    }
}

/// Largest first write handed to the crate's stream. Its first write encrypts the address
/// header and the data as ONE cipher chunk (at most 0x3FFF bytes for the classic AEAD
/// ciphers) but reports the whole caller buffer as written; a larger first write would
/// silently lose its tail. Capping it keeps header + data within one chunk.
const FIRST_WRITE_MAX: usize = 8 * 1024;

/// Caps the first `poll_write` to [`FIRST_WRITE_MAX`]; later writes pass through.
struct FirstWriteCap<S> {
    inner: S,
    first: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstWriteCap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstWriteCap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let len = if self.first {
            buf.len().min(FIRST_WRITE_MAX)
        } else {
            buf.len()
        };
        let r = Pin::new(&mut self.inner).poll_write(cx, &buf[..len]);
        if matches!(r, Poll::Ready(Ok(_))) {
            self.first = false;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn address(dst: &Destination) -> Address {
    match dst {
        Destination::Addr(a) => Address::SocketAddress(*a),
        Destination::Domain(d, p) => Address::DomainNameAddress(d.clone(), *p),
    }
}
