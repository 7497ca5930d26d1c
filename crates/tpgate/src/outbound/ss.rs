//! Shadowsocks through the maintained `shadowsocks` crate (AEAD and AEAD-2022 ciphers): tpgate
//! supplies the marked transport and the destination; the crate does the cryptography.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use shadowsocks::config::{ServerConfig, ServerType};
use std::pin::Pin;
use std::task::{Context, Poll};

use shadowsocks::context::{Context as SsContext, SharedContext};
use shadowsocks::crypto::CipherKind;
use shadowsocks::net::ConnectOpts;
use shadowsocks::relay::udprelay::options::UdpSocketControlData;
use shadowsocks::relay::udprelay::ProxySocket;
use shadowsocks::relay::Address;
use shadowsocks::ProxyClientStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tpgate_core::config::Cipher;
use tpgate_core::net::Destination;

use super::BoxIo;

pub(crate) struct Shadowsocks {
    cipher: CipherKind,
    password: String,
    context: SharedContext,
}

impl std::fmt::Debug for Shadowsocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadowsocks")
            .field("cipher", &self.cipher)
            .finish()
    }
}

impl Shadowsocks {
    pub(crate) fn new(cipher: Cipher, password: &str) -> io::Result<Self> {
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
        })
    }

    fn server_config(&self, server: SocketAddr) -> io::Result<ServerConfig> {
        ServerConfig::new(server, self.password.clone(), self.cipher)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }

    /// Wraps a stream that already reaches the server (directly or through earlier hops).
    pub(crate) fn wrap(&self, io: BoxIo, dst: &Destination) -> io::Result<BoxIo> {
        // The address in the config is only used to dial, which tpgate has done itself.
        let cfg = self.server_config(SocketAddr::from(([0, 0, 0, 0], 0)))?;
        let s = ProxyClientStream::from_stream(self.context.clone(), io, &cfg, address(dst));
        Ok(Box::new(FirstWriteCap {
            inner: s,
            first: true,
        }))
    }

    /// A UDP association for one flow.
    pub(crate) async fn udp(&self, server: SocketAddr, mark: u32) -> io::Result<SsUdp> {
        let cfg = self.server_config(server)?;
        let opts = ConnectOpts {
            fwmark: Some(mark),
            ..ConnectOpts::default()
        };
        let sock = ProxySocket::connect_with_opts(self.context.clone(), &cfg, &opts)
            .await
            .map_err(io::Error::from)?;
        let mut ctrl = UdpSocketControlData::default();
        ctrl.client_session_id = rand::random();
        Ok(SsUdp {
            sock,
            ctrl: std::sync::Mutex::new(ctrl),
        })
    }
}

pub(crate) struct SsUdp {
    sock: ProxySocket<shadowsocks::net::UdpSocket>,
    /// SIP022 (the 2022 ciphers) keys a UDP session by a random client session id and drops
    /// a packet id it has seen: one session per flow, ids counting up from 1. Ignored by the
    /// classic ciphers.
    ctrl: std::sync::Mutex<UdpSocketControlData>,
}

impl SsUdp {
    pub(crate) async fn send(&self, dst: &Destination, data: &[u8]) -> io::Result<()> {
        let ctrl = {
            let mut c = self.ctrl.lock().unwrap_or_else(|p| p.into_inner());
            c.packet_id += 1;
            c.clone()
        };
        self.sock
            .send_with_ctrl(&address(dst), &ctrl, data)
            .await
            .map_err(io::Error::from)?;
        Ok(())
    }

    /// Receives one datagram's payload into `buf`; returns its length.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, _from, _) = self.sock.recv(buf).await.map_err(io::Error::from)?;
        Ok(n)
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
