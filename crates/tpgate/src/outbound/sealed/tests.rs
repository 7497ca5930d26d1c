//! The hello rustls sends carries exactly the seal computed over it, and building one
//! leaves nothing behind on the thread for the next connection.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use tpgate_core::proto::reality::Hello;

use super::{build, provider};

/// Accepts nothing: these connections never get past their hello.
#[derive(Debug)]
struct Refuse;

impl ServerCertVerifier for Refuse {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General("test".into()))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("test".into()))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("test".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Refuse))
        .with_no_client_auth()
}

fn name() -> ServerName<'static> {
    ServerName::try_from("sealed.test").expect("name")
}

fn hello_of(mut conn: ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

#[test]
fn the_hello_sent_is_the_one_sealed_with_the_seal_in_place() {
    let mut seen = Vec::new();
    let mut share = [0u8; 32];
    let sent = build(
        config(),
        &name(),
        |hello, secret| {
            seen = hello.record().to_vec();
            share = *secret;
            // A seal that depends on every byte of the hello.
            let d = ring::digest::digest(&ring::digest::SHA256, hello.record());
            d.as_ref().try_into().expect("32 bytes")
        },
        |config, name| ClientConnection::new(config, name).map(hello_of),
    )
    .expect("built")
    .expect("connection");
    assert_eq!(sent.len(), seen.len());
    // Byte for byte the hello that was sealed, but for the session id...
    assert_eq!(sent[..44], seen[..44]);
    assert_eq!(sent[76..], seen[76..]);
    // ...which is the seal over that hello.
    let d = ring::digest::digest(&ring::digest::SHA256, &seen);
    assert_eq!(&sent[44..76], d.as_ref());
    // The key share is the secret's.
    let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(share));
    assert!(sent.windows(32).any(|w| w == public.as_bytes()));
}

#[test]
fn a_connection_built_after_one_draws_fresh_randomness() {
    let sealed = build(
        config(),
        &name(),
        |_, _| [7; 32],
        |c, n| ClientConnection::new(c, n).map(hello_of),
    )
    .expect("built")
    .expect("connection");
    let plain = hello_of(ClientConnection::new(Arc::new(config()), name()).expect("plain"));
    let (s, p) = (
        Hello::parse(&sealed).expect("sealed"),
        Hello::parse(&plain).expect("plain"),
    );
    assert_eq!(s.session_id(), &[7; 32]);
    assert_ne!(s.random(), p.random());
    assert_ne!(p.session_id(), &[7; 32]);
    assert_ne!(sealed[76..], plain[76..], "the key share was reused");
}
