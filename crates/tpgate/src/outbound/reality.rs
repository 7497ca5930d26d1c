//! REALITY on stock rustls. The session id must seal the ClientHello it sits in, under a key
//! made from the hello's own X25519 share; rustls builds its hello from the provider's
//! randomness and key exchange, so this module gives it both:
//!
//! 1. A first `ClientConnection` is built with a random source that records every fill and
//!    a key exchange that keeps its secret; its ClientHello is read and the connection
//!    dropped.
//! 2. The auth key and the sealed session id are computed from that hello
//!    (`tpgate_core::proto::reality`).
//! 3. The real connection is built replaying the same fills, the session id's fill
//!    replaced by the seal, and the same key share: rustls writes the same hello byte for
//!    byte, with the sealed session id, and its transcript is that hello.
//!
//! The provider reads its script from a thread-local that is set only around the
//! (synchronous) construction of each connection, so connections on other threads, and
//! everything rustls draws later, get fresh randomness. Resumption is off: a ticket taken
//! by the first build would change the second hello. The server is then checked by
//! REALITY's certificate HMAC, and its CertificateVerify against that certificate's
//! Ed25519 key; no CA is involved.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, NamedGroup, SignatureScheme};
use tpgate_core::config::Reality;
use tpgate_core::proto::reality::{self as core, Hello};
use x25519_dalek::{PublicKey, StaticSecret};

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

/// Why a REALITY connection could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("REALITY: rustls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("REALITY: {0}")]
    Hello(#[from] core::HelloError),
    #[error("REALITY: rustls did not build the same ClientHello twice")]
    NotReproduced,
}

impl From<StartError> for io::Error {
    fn from(e: StartError) -> Self {
        Self::other(e)
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
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        config.alpn_protocols = self.alpn.clone();
        let config = Arc::new(config);

        let (first, script) = scripted(Script::recording(), || {
            ClientConnection::new(config.clone(), self.name.clone())
        });
        let mut hello = Vec::new();
        first?
            .write_tls(&mut hello)
            .map_err(|_| StartError::NotReproduced)?;
        let Script { fills, key, .. } = script;
        let secret = key.ok_or(StartError::NotReproduced)?;
        let parsed = Hello::parse(&hello)?;
        let server = PublicKey::from(self.opts.public_key);
        let shared = StaticSecret::from(secret).diffie_hellman(&server);
        let auth_key = core::auth_key(shared.as_bytes(), parsed.random());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let sealed = core::session_id(&parsed, &auth_key, &self.opts.short_id, now);
        let _ = verifier.auth_key.set(auth_key);

        // The fill that became the session id is replayed as the seal.
        let mut fills = fills;
        let at = fills
            .iter()
            .position(|f| f[..] == *parsed.session_id())
            .ok_or(StartError::NotReproduced)?;
        fills[at] = sealed.to_vec();
        let (made, rest) = scripted(Script::replaying(fills, secret), || {
            make(config, self.name.clone())
        });
        if !rest.fills.is_empty() || rest.key.is_some() {
            return Err(StartError::NotReproduced);
        }
        Ok(made)
    }

    /// A client connection not yet started, for a caller that moves its records itself.
    pub(crate) fn connection(&self) -> Result<ClientConnection, StartError> {
        Ok(self.start(ClientConnection::new)??)
    }
}

/// What the provider draws while a connection is built on this thread.
struct Script {
    replay: bool,
    fills: VecDeque<Vec<u8>>,
    /// Recording: the key share's secret once drawn. Replaying: the secret to use.
    key: Option<[u8; 32]>,
}

impl Script {
    fn recording() -> Self {
        Self {
            replay: false,
            fills: VecDeque::new(),
            key: None,
        }
    }

    fn replaying(fills: VecDeque<Vec<u8>>, key: [u8; 32]) -> Self {
        Self {
            replay: true,
            fills,
            key: Some(key),
        }
    }
}

thread_local! {
    static SCRIPT: RefCell<Option<Script>> = const { RefCell::new(None) };
}

/// Runs `f` with `script` in force on this thread; returns what `f` returned and what is
/// left of the script.
fn scripted<T>(script: Script, f: impl FnOnce() -> T) -> (T, Script) {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            SCRIPT.with(|s| s.borrow_mut().take());
        }
    }
    SCRIPT.with(|s| *s.borrow_mut() = Some(script));
    let clear = Clear;
    let out = f();
    let left = SCRIPT.with(|s| s.borrow_mut().take());
    drop(clear);
    (out, left.expect("the script is still in place"))
}

fn system_fill(buf: &mut [u8]) -> Result<(), GetRandomFailed> {
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf)
        .map_err(|_| GetRandomFailed)
}

/// The provider's randomness: fresh (and recorded) or replayed, per the thread's script.
#[derive(Debug)]
struct ScriptedRandom;

impl SecureRandom for ScriptedRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        SCRIPT.with(|s| match s.borrow_mut().as_mut() {
            None => system_fill(buf),
            Some(script) if script.replay => {
                let next = script.fills.pop_front().ok_or(GetRandomFailed)?;
                if next.len() != buf.len() {
                    return Err(GetRandomFailed);
                }
                buf.copy_from_slice(&next);
                Ok(())
            }
            Some(script) => {
                system_fill(buf)?;
                script.fills.push_back(buf.to_vec());
                Ok(())
            }
        })
    }
}

/// X25519 whose secret the script keeps (recording) or supplies (replaying).
#[derive(Debug)]
struct ScriptedX25519;

impl SupportedKxGroup for ScriptedX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut secret = [0u8; 32];
        let supplied = SCRIPT.with(|s| match s.borrow_mut().as_mut() {
            Some(script) if script.replay => script.key.take().map(|k| secret = k),
            _ => None,
        });
        if supplied.is_none() {
            system_fill(&mut secret).map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
            SCRIPT.with(|s| {
                if let Some(script) = s.borrow_mut().as_mut().filter(|s| !s.replay) {
                    script.key = Some(secret);
                }
            });
        }
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret).to_bytes();
        Ok(Box::new(X25519Share { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct X25519Share {
    secret: StaticSecret,
    public: [u8; 32],
}

impl ActiveKeyExchange for X25519Share {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer
            .try_into()
            .map_err(|_| rustls::PeerMisbehaved::InvalidKeyShare)?;
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer));
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// ring's provider with the scripted randomness and X25519 first (the share REALITY
/// reads); the other groups stay offered, as a browser offers them.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut p = rustls::crypto::ring::default_provider();
            p.kx_groups.retain(|g| g.name() != NamedGroup::X25519);
            p.kx_groups.insert(0, &ScriptedX25519);
            p.secure_random = &ScriptedRandom;
            Arc::new(p)
        })
        .clone()
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
