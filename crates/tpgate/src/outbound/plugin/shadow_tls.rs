//! ShadowTLS v2: a real TLS 1.2 handshake with the handshake server (the ShadowTLS server
//! relays it), every byte read hashed, then the Shadowsocks stream in application-data
//! records whose first opens with the hash ([`Framed`]). TLS 1.2 because nothing follows
//! its handshake: TLS 1.3 servers send session tickets after it, which would arrive after
//! the switch and be taken for the stream. Version 3 is not here (the loader skips it):
//! its ClientHello carries an HMAC in the session id, which rustls does not let a client
//! choose.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsConnector;
use tpgate_core::config::Tls;
use tpgate_core::proto::shadow_tls::HandshakeMac;

use super::framed::{Framed, Framing};
use crate::outbound::error::TlsError;
use crate::outbound::tls::TlsClient;
use crate::outbound::BoxIo;

/// mihomo's ALPN for the borrowed handshake.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

pub(crate) struct ShadowTlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
    password: String,
}

impl std::fmt::Debug for ShadowTlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowTlsClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ShadowTlsClient {
    pub(crate) fn new(
        host: &str,
        password: &str,
        skip_cert_verify: bool,
    ) -> Result<Self, TlsError> {
        let tls = Tls {
            sni: Some(host.to_owned()),
            skip_cert_verify,
            alpn: Vec::new(),
            fingerprint: None,
            reality: None,
        };
        let (connector, name) =
            TlsClient::parts_with_versions(&tls, host, &ALPN, &[&rustls::version::TLS12])?;
        Ok(Self {
            connector,
            name,
            password: password.to_owned(),
        })
    }

    /// Shakes hands through the server, then frames the stream.
    pub(crate) async fn open(&self, io: BoxIo) -> io::Result<BoxIo> {
        let hashed = Hashed {
            inner: io,
            mac: HandshakeMac::new(&self.password),
        };
        let tls = self.connector.connect(self.name.clone(), hashed).await?;
        let (hashed, _session) = tls.into_inner();
        let mac = hashed.mac.sum();
        Ok(Box::new(Framed::new(
            hashed.inner,
            Framing::ShadowTls { mac: Some(mac) },
        )))
    }
}

/// The connection during the handshake: what is read is hashed.
struct Hashed {
    inner: BoxIo,
    mac: HandshakeMac,
}

impl AsyncRead for Hashed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.mac.update(&buf.filled()[before..]);
        }
        r
    }
}

impl AsyncWrite for Hashed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
