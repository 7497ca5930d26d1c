//! REALITY on stock rustls: the session id seals the ClientHello it sits in, under a key
//! made from the hello's own X25519 share and the server's public key
//! (`tpgate_core::proto::reality`); [`sealed`](super::sealed) has rustls write that hello.
//! The server is then checked by REALITY's certificate HMAC, and its CertificateVerify
//! against that certificate's Ed25519 key; no CA is involved.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use tpgate_core::config::Reality;
use tpgate_core::proto::reality::{self as core, Hello};
use x25519_dalek::{PublicKey, StaticSecret};

use super::sealed::{self, StartError};

/// The REALITY settings of one proxy, ready to start connections.
pub(crate) struct RealityClient {
    opts: Reality,
    name: ServerName<'static>,
    alpn: Vec<Vec<u8>>,
}

impl std::fmt::Debug for RealityClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealityClient")
            .field("name", &self.name)
            .finish()
    }
}

impl RealityClient {
    pub(crate) fn new(opts: Reality, name: ServerName<'static>, alpn: &[&[u8]]) -> Self {
        Self {
            opts,
            name,
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        }
    }

    /// Builds the connection with `make` (given the per-connection config and the server
    /// name), whose ClientHello carries the seal.
    pub(crate) fn start<T>(
        &self,
        make: impl FnOnce(Arc<ClientConfig>, ServerName<'static>) -> T,
    ) -> Result<T, StartError> {
        let verifier = Arc::new(Verifier {
            auth_key: OnceLock::new(),
        });
        let mut config = ClientConfig::builder_with_provider(sealed::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = self.alpn.clone();
        let seal = |hello: &Hello<'_>, secret: &[u8; 32]| {
            let server = PublicKey::from(self.opts.public_key);
            let shared = StaticSecret::from(*secret).diffie_hellman(&server);
            let auth_key = core::auth_key(shared.as_bytes(), hello.random());
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
            let _ = verifier.auth_key.set(auth_key);
            core::session_id(hello, &auth_key, &self.opts.short_id, now)
        };
        sealed::build(config, &self.name, seal, make)
    }

    /// A client connection not yet started, for a caller that moves its records itself.
    pub(crate) fn connection(&self) -> Result<ClientConnection, StartError> {
        Ok(self.start(ClientConnection::new)??)
    }
}

/// The server must show REALITY's certificate for this connection's auth key, and sign
/// the handshake with that certificate's key.
#[derive(Debug)]
struct Verifier {
    auth_key: OnceLock<[u8; 32]>,
}

impl Verifier {
    fn key_of(&self, cert: &CertificateDer<'_>) -> Result<[u8; 32], rustls::Error> {
        let auth = self
            .auth_key
            .get()
            .ok_or_else(|| rustls::Error::General("REALITY: no auth key".into()))?;
        core::check_certificate(cert.as_ref(), auth).map_err(|e| {
            rustls::Error::General(format!(
                "REALITY: {e}: the server did not take this client (wrong public-key or \
                 short-id), or is not a REALITY server"
            ))
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.key_of(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("REALITY: TLS 1.2 offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::General(format!(
                "REALITY: the handshake is signed with {:?}, not Ed25519",
                dss.scheme
            )));
        }
        let key = self.key_of(cert)?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
            .verify(message, dss.signature())
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
            })?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
