//! TLS toward upstreams (HTTPS proxies, SOCKS5 over TLS, Trojan), on rustls with the
//! webpki roots; `skip-cert-verify` installs a verifier that accepts any certificate,
//! `fingerprint` one that pins a certificate, and `reality-opts` hands each connection to
//! [`RealityClient`].

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;
use tpgate_core::config::Tls;

use super::error::TlsError;
use super::reality::RealityClient;
use super::BoxIo;

/// A ready connector for one upstream's TLS settings.
#[derive(Clone)]
pub(crate) struct TlsClient {
    connector: TlsConnector,
    /// The connector's config, for a connection driven by hand (XTLS Vision).
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    /// `reality-opts`: each connection is REALITY's, not built from `config`.
    reality: Option<Arc<RealityClient>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .finish()
    }
}

impl TlsClient {
    /// `server` is the upstream's host, the SNI when `tls.sni` is not set.
    pub(crate) fn new(tls: &Tls, server: &str) -> Result<Self, TlsError> {
        Self::with_alpn(tls, server, &[])
    }

    /// Like [`Self::new`], offering `alpn` (the transports' protocols).
    pub(crate) fn with_alpn(tls: &Tls, server: &str, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let (config, sni) = Self::config(tls, server, alpn)?;
        let name = ServerName::try_from(sni).map_err(TlsError::ServerName)?;
        let reality = tls
            .reality
            .clone()
            .map(|r| Arc::new(RealityClient::new(r, name.clone(), alpn)));
        Ok(Self {
            connector: TlsConnector::from(config.clone()),
            config,
            name,
            reality,
        })
    }

    /// The connector and server name for `tls`, offering `alpn` (the DNS client's DoH
    /// asks for `http/1.1`).
    pub(crate) fn parts(
        tls: &Tls,
        server: &str,
        alpn: &[&[u8]],
    ) -> Result<(TlsConnector, ServerName<'static>), TlsError> {
        Self::parts_with_versions(tls, server, alpn, rustls::DEFAULT_VERSIONS)
    }

    /// [`Self::parts`] offering only `versions` (ShadowTLS v2 wants TLS 1.2: no message
    /// follows its handshake).
    pub(crate) fn parts_with_versions(
        tls: &Tls,
        server: &str,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<(TlsConnector, ServerName<'static>), TlsError> {
        let (config, sni) = Self::config_with_versions(tls, server, alpn, versions)?;
        let name = ServerName::try_from(sni).map_err(TlsError::ServerName)?;
        Ok((TlsConnector::from(config), name))
    }

    /// A client connection not yet started, for a caller that moves its records itself.
    pub(crate) fn connection(&self) -> io::Result<rustls::ClientConnection> {
        match &self.reality {
            Some(r) => Ok(r.connection()?),
            None => rustls::ClientConnection::new(self.config.clone(), self.name.clone())
                .map_err(io::Error::other),
        }
    }

    /// The rustls client config for `tls` offering `alpn`, and the server name to ask for
    /// (QUIC takes these as they are).
    pub(crate) fn config(
        tls: &Tls,
        server: &str,
        alpn: &[&[u8]],
    ) -> Result<(Arc<ClientConfig>, String), TlsError> {
        Self::config_with_versions(tls, server, alpn, rustls::DEFAULT_VERSIONS)
    }

    fn config_with_versions(
        tls: &Tls,
        server: &str,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<(Arc<ClientConfig>, String), TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (config, sni) = Self::config_on(provider, tls, server, alpn, versions)?;
        Ok((Arc::new(config), sni))
    }

    /// The rustls client config for `tls` on `provider` (ShadowTLS v3: the sealed-hello
    /// one), offering `versions` and `alpn`, and the server name to ask for.
    pub(crate) fn config_on(
        provider: Arc<rustls::crypto::CryptoProvider>,
        tls: &Tls,
        server: &str,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<(ClientConfig, String), TlsError> {
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(TlsError::Versions)?;
        let mut config = if let Some(pin) = tls.fingerprint {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    sha256: pin,
                    any: AcceptAny(provider),
                }))
                .with_no_client_auth()
        } else if tls.skip_cert_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        } else {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let sni = tls.sni.as_deref().unwrap_or(server).to_string();
        Ok((config, sni))
    }

    pub(crate) async fn wrap(&self, io: BoxIo) -> io::Result<BoxIo> {
        let connect = match &self.reality {
            Some(r) => r.start(|config, name| TlsConnector::from(config).connect(name, io))?,
            None => self.connector.connect(self.name.clone(), io),
        };
        Ok(Box::new(connect.await?))
    }
}

/// `fingerprint`: the server's chain must hold the certificate with this SHA-256 (mihomo's
/// pinning: names and issuers are not checked; the handshake's signatures are).
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    any: AcceptAny,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = std::iter::once(end_entity).chain(intermediates).any(|c| {
            ring::digest::digest(&ring::digest::SHA256, c.as_ref()).as_ref() == self.sha256
        });
        if pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "no certificate of the server matches the pinned `fingerprint`".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.any.supported_verify_schemes()
    }
}

/// `skip-cert-verify: true`: the user chose to trust whatever answers.
#[derive(Debug)]
pub(super) struct AcceptAny(pub(super) Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
