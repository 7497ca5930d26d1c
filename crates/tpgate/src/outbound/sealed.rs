//! A ClientHello whose session id seals the hello itself (REALITY, ShadowTLS v3), written
//! by stock rustls. rustls builds its hello from the provider's randomness and key
//! exchange, so this module gives it both:
//!
//! 1. A first `ClientConnection` is built with a random source that records every fill and
//!    an X25519 key exchange that keeps its secret; its ClientHello is read and the
//!    connection dropped.
//! 2. The caller's `seal` computes the session id from that hello (and the share's secret,
//!    which REALITY's key needs).
//! 3. The real connection is built replaying the same fills, the session id's fill
//!    replaced by the seal, and the same key share: rustls writes the same hello byte for
//!    byte, with the sealed session id, and its transcript is that hello.
//!
//! The provider reads its script from a thread-local that is set only around the
//! (synchronous) construction of each connection, so connections on other threads, and
//! everything rustls draws later, get fresh randomness. Resumption is turned off: a ticket
//! taken by the first build would change the second hello.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, OnceLock};

use rustls::client::Resumption;
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, NamedGroup};
use tpgate_core::proto::reality::{Hello, HelloError};
use x25519_dalek::{PublicKey, StaticSecret};

/// Why a sealed connection could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("rustls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Hello(#[from] HelloError),
    #[error("rustls did not build the same ClientHello twice")]
    NotReproduced,
}

impl From<StartError> for io::Error {
    fn from(e: StartError) -> Self {
        Self::other(e)
    }
}

/// Builds a connection with `make` from `config` (made on [`provider`]) whose ClientHello's
/// session id is what `seal` returns for the hello rustls writes (given its X25519 share's
/// secret).
pub(crate) fn build<T>(
    mut config: ClientConfig,
    name: &ServerName<'static>,
    seal: impl FnOnce(&Hello<'_>, &[u8; 32]) -> [u8; 32],
    make: impl FnOnce(Arc<ClientConfig>, ServerName<'static>) -> T,
) -> Result<T, StartError> {
    config.resumption = Resumption::disabled();
    let config = Arc::new(config);
    let (first, script) = scripted(Script::recording(), || {
        ClientConnection::new(config.clone(), name.clone())
    });
    let mut hello = Vec::new();
    first?
        .write_tls(&mut hello)
        .map_err(|_| StartError::NotReproduced)?;
    let Script { mut fills, key, .. } = script;
    let secret = key.ok_or(StartError::NotReproduced)?;
    let parsed = Hello::parse(&hello)?;
    let sealed = seal(&parsed, &secret);
    // The fill that became the session id is replayed as the seal.
    let at = fills
        .iter()
        .position(|f| f[..] == *parsed.session_id())
        .ok_or(StartError::NotReproduced)?;
    fills[at] = sealed.to_vec();
    let (made, rest) = scripted(Script::replaying(fills, secret), || {
        make(config, name.clone())
    });
    if !rest.fills.is_empty() || rest.key.is_some() {
        return Err(StartError::NotReproduced);
    }
    Ok(made)
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
pub(crate) fn provider() -> Arc<CryptoProvider> {
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

#[cfg(test)]
mod tests;
