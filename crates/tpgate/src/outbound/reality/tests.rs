//! The hello rustls sends is the one that was sealed: a server holding the private key
//! opens its session id (the server's steps written out here), and the scripted provider
//! leaves nothing behind for the next connection.

use ring::aead;
use rustls::pki_types::ServerName;
use tpgate_core::config::Reality;
use tpgate_core::proto::reality::{auth_key, Hello};
use x25519_dalek::{PublicKey, StaticSecret};

use super::RealityClient;

const SERVER_KEY: [u8; 32] = [0x5a; 32];

fn client(short_id: [u8; 8]) -> RealityClient {
    let public = PublicKey::from(&StaticSecret::from(SERVER_KEY)).to_bytes();
    RealityClient::new(
        Reality {
            public_key: public,
            short_id,
        },
        ServerName::try_from("reality.test").expect("name"),
        &[b"h2"],
    )
}

/// The first record the connection sends.
fn hello_of(conn: &mut rustls::ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

/// The server's side: the client's X25519 share (group 0x001d, 32 bytes), the auth key,
/// the seal opened over the hello with its session id zeroed.
fn server_opens(record: &[u8]) -> Option<[u8; 16]> {
    let hello = Hello::parse(record).ok()?;
    let at = record
        .windows(4)
        .position(|w| w == [0x00, 0x1d, 0x00, 0x20])?;
    let share: [u8; 32] = record.get(at + 4..at + 36)?.try_into().ok()?;
    let shared = StaticSecret::from(SERVER_KEY).diffie_hellman(&PublicKey::from(share));
    let key = auth_key(shared.as_bytes(), hello.random());
    let mut aad = record[5..].to_vec();
    aad[39..71].fill(0);
    let mut sealed = hello.session_id().to_vec();
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &key).ok()?);
    let nonce = aead::Nonce::try_assume_unique_for_key(&hello.random()[20..]).ok()?;
    let plain = key
        .open_in_place(nonce, aead::Aad::from(&aad[..]), &mut sealed)
        .ok()?;
    plain.try_into().ok()
}

#[test]
fn the_hello_sent_carries_a_seal_the_server_opens() {
    let short_id = [0xab, 0xcd, 0, 0, 0, 0, 0, 0];
    let c = client(short_id);
    let mut conn = c.connection().expect("connection");
    let record = hello_of(&mut conn);
    let plain = server_opens(&record).expect("the server opens the session id");
    assert_eq!(&plain[..4], &[26, 3, 27, 0]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let sent = u64::from(u32::from_be_bytes(plain[4..8].try_into().expect("4")));
    assert!(now.abs_diff(sent) < 60, "{sent} vs {now}");
    assert_eq!(&plain[8..], &short_id);
    // ALPN is offered as configured.
    assert!(record.windows(3).any(|w| w == b"\x02h2"));
}

#[test]
fn each_connection_has_its_own_random_share_and_seal() {
    let c = client([1; 8]);
    let a = hello_of(&mut c.connection().expect("a"));
    let b = hello_of(&mut c.connection().expect("b"));
    let (ha, hb) = (Hello::parse(&a).expect("a"), Hello::parse(&b).expect("b"));
    assert_ne!(ha.random(), hb.random());
    assert_ne!(ha.session_id(), hb.session_id());
    assert!(server_opens(&a).is_some() && server_opens(&b).is_some());
}

#[test]
fn another_server_key_cannot_open_the_seal() {
    let other = PublicKey::from(&StaticSecret::from([0x11; 32])).to_bytes();
    let c = RealityClient::new(
        Reality {
            public_key: other,
            short_id: [0; 8],
        },
        ServerName::try_from("reality.test").expect("name"),
        &[],
    );
    let record = hello_of(&mut c.connection().expect("connection"));
    assert!(server_opens(&record).is_none());
}
