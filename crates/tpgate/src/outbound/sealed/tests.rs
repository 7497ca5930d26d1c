//! The hello rustls sends carries exactly the seal computed over it, and building one
//! leaves nothing behind on the thread for the next connection.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tpgate_core::proto::reality::Hello;

use super::{build, provider};
use crate::outbound::tls::AcceptAny;

fn config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
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
