//! Shadowsocks through the maintained `shadowsocks` crate (AEAD and AEAD-2022 ciphers): tpgate
//! supplies the marked transport and the destination; the crate does the cryptography.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use shadowsocks::config::{ServerConfig, ServerType};
use shadowsocks::context::{Context, SharedContext};
use shadowsocks::crypto::CipherKind;
use shadowsocks::net::ConnectOpts;
use shadowsocks::relay::udprelay::ProxySocket;
use shadowsocks::relay::Address;
use shadowsocks::ProxyClientStream;
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
        f.debug_struct("Shadowsocks").field("cipher", &self.cipher).finish()
    }
}

impl Shadowsocks {
    pub(crate) fn new(cipher: Cipher, password: &str) -> io::Result<Self> {
        let kind: CipherKind = cipher
            .name()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("cipher {}", cipher.name())))?;
        Ok(Self {
            cipher: kind,
            password: password.to_string(),
            context: Arc::new(Context::new(ServerType::Local)),
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
        Ok(Box::new(s))
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
        Ok(SsUdp { sock })
    }
}

pub(crate) struct SsUdp {
    sock: ProxySocket<shadowsocks::net::UdpSocket>,
}

impl SsUdp {
    pub(crate) async fn send(&self, dst: &Destination, data: &[u8]) -> io::Result<()> {
        self.sock.send(&address(dst), data).await.map_err(io::Error::from)?;
        Ok(())
    }

    /// Receives one datagram's payload into `buf`; returns its length.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, _from, _) = self.sock.recv(buf).await.map_err(io::Error::from)?;
        Ok(n)
    }
}

fn address(dst: &Destination) -> Address {
    match dst {
        Destination::Addr(a) => Address::SocketAddress(*a),
        Destination::Domain(d, p) => Address::DomainNameAddress(d.clone(), *p),
    }
}
