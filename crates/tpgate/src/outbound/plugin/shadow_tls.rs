//! ShadowTLS, versions 2 and 3: a real TLS handshake with the handshake server (the
//! ShadowTLS server relays it), then the Shadowsocks stream in application-data records.
//!
//! - **v2**: TLS 1.2, every byte read hashed; the first record opens with the hash
//!   ([`Framed`]). TLS 1.2 because nothing follows its handshake: TLS 1.3 servers send
//!   session tickets after it, which would arrive after the switch and be taken for the
//!   stream.
//! - **v3**: TLS 1.3 whose ClientHello carries an HMAC in its session id (written by
//!   [`sealed`](crate::outbound::sealed)); the server signs the handshake server's records,
//!   which are checked and unwrapped before rustls reads them (a record not signed means
//!   the server did not take the password); then records signed both ways
//!   (`tpgate_core::proto::shadow_tls::v3`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsConnector;
use tpgate_core::config::{ShadowTlsVersion, Tls};
use tpgate_core::proto::shadow_tls::v3;
use tpgate_core::proto::shadow_tls::HandshakeMac;

use super::framed::{Framed, Framing};
use crate::outbound::error::TlsError;
use crate::outbound::tls::TlsClient;
use crate::outbound::{sealed, vision, BoxIo};

/// mihomo's ALPN for the borrowed handshake.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

pub(crate) struct ShadowTlsClient {
    name: ServerName<'static>,
    password: String,
    version: Version,
}

enum Version {
    V2(TlsConnector),
    /// The config the sealed hello is built on (one per connection).
    V3(Box<ClientConfig>),
}

impl std::fmt::Debug for ShadowTlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowTlsClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a ShadowTLS v3 handshake failed.
#[derive(Debug, thiserror::Error)]
enum V3Error {
    #[error("shadow-tls v3: {0}: a wrong password, or not a ShadowTLS v3 server")]
    NotSigned(v3::NotSigned),
    #[error("shadow-tls v3: application data before the ServerHello")]
    NoServerHello,
}

impl From<V3Error> for io::Error {
    fn from(e: V3Error) -> Self {
        Self::new(io::ErrorKind::InvalidData, e)
    }
}

impl ShadowTlsClient {
    pub(crate) fn new(
        host: &str,
        password: &str,
        skip_cert_verify: bool,
        version: ShadowTlsVersion,
    ) -> Result<Self, TlsError> {
        let tls = Tls {
            sni: Some(host.to_owned()),
            skip_cert_verify,
            alpn: Vec::new(),
            fingerprint: None,
            reality: None,
        };
        let (version, name) = match version {
            ShadowTlsVersion::V2 => {
                let (connector, name) =
                    TlsClient::parts_with_versions(&tls, host, &ALPN, &[&rustls::version::TLS12])?;
                (Version::V2(connector), name)
            }
            ShadowTlsVersion::V3 => {
                let (config, sni) = TlsClient::config_on(
                    sealed::provider(),
                    &tls,
                    host,
                    &ALPN,
                    &[&rustls::version::TLS13],
                )?;
                let name = ServerName::try_from(sni).map_err(TlsError::ServerName)?;
                (Version::V3(Box::new(config)), name)
            }
        };
        Ok(Self {
            name,
            password: password.to_owned(),
            version,
        })
    }

    /// Shakes hands through the server, then frames the stream.
    pub(crate) async fn open(&self, io: BoxIo) -> io::Result<BoxIo> {
        match &self.version {
            Version::V2(connector) => self.open_v2(connector, io).await,
            Version::V3(config) => self.open_v3(ClientConfig::clone(config), io).await,
        }
    }

    async fn open_v2(&self, connector: &TlsConnector, io: BoxIo) -> io::Result<BoxIo> {
        let hashed = Hashed {
            inner: io,
            mac: HandshakeMac::new(&self.password),
        };
        let tls = connector.connect(self.name.clone(), hashed).await?;
        let (hashed, _session) = tls.into_inner();
        let mac = hashed.mac.sum();
        Ok(Box::new(Framed::new(
            hashed.inner,
            Framing::ShadowTls { mac: Some(mac) },
        )))
    }

    async fn open_v3(&self, config: ClientConfig, mut io: BoxIo) -> io::Result<BoxIo> {
        let password = &self.password;
        let seal = |hello: &tpgate_core::proto::reality::Hello<'_>, _: &[u8; 32]| {
            let random: [u8; 28] = rand::random();
            // Cannot fail: a parsed hello holds a 32-byte session id.
            v3::session_id(password, hello.record(), &random).unwrap_or_default()
        };
        let mut conn = sealed::build(config, &self.name, seal, ClientConnection::new)?
            .map_err(io::Error::other)?;
        let mut handshake: Option<v3::Handshake> = None;
        vision::handshake_with(&mut io, &mut conn, |record| {
            if let Some(random) = v3::server_random(record) {
                handshake = Some(v3::Handshake::new(password, random));
            } else if record.first() == Some(&0x17) {
                let h = handshake.as_mut().ok_or(V3Error::NoServerHello)?;
                *record = h.unwrap(record).map_err(V3Error::NotSigned)?;
            }
            Ok(())
        })
        .await?;
        // rustls refuses a handshake without a ServerHello, so this is there.
        let handshake = handshake.ok_or(V3Error::NoServerHello)?;
        let (writer, reader) = handshake.into_data(password);
        Ok(Box::new(Framed::new(
            io,
            Framing::ShadowTlsV3 {
                writer: Box::new(writer),
                reader: Box::new(reader),
            },
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
