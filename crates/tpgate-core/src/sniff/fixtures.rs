//! Test-only access to the bytes real clients sent, captured by
//! `crates/tpgate-core/tests/fixtures/capture.sh`, and helpers that re-frame them.

macro_rules! fixture_files {
    ($($name:literal),* $(,)?) => {
        /// The captured file `name`, embedded at compile time.
        pub(super) fn file(name: &str) -> &'static [u8] {
            match name {
                $($name => include_bytes!(concat!("../../tests/fixtures/", $name)),)*
                _ => panic!("no fixture {name}"),
            }
        }
    };
}

fixture_files!(
    "openssl-tls12.bin",
    "openssl-tls13.bin",
    "openssl-large.bin",
    "openssl-fragmented.bin",
    "curl.bin",
    "curl-http.bin",
    "python-ssl.bin",
    "gnutls.bin",
    "quic-aioquic-v1.bin",
    "quic-aioquic-v2.bin",
    "quic-aioquic-multi.bin",
);

/// Every captured TLS stream and the name its client was told to ask for.
pub(super) const TLS_FIXTURES: [(&str, &str); 7] = [
    ("openssl-tls12.bin", "tls12.example.com"),
    ("openssl-tls13.bin", "tls13.example.com"),
    ("openssl-large.bin", "large.example.com"),
    ("openssl-fragmented.bin", "fragmented.example.com"),
    ("curl.bin", "curl.example.com"),
    ("python-ssl.bin", "python.example.com"),
    ("gnutls.bin", "gnutls.example.com"),
];

/// Every captured QUIC first flight and the name its client asked for.
pub(super) const QUIC_FIXTURES: [(&str, &str); 3] = [
    ("quic-aioquic-v1.bin", "quic1.example.com"),
    ("quic-aioquic-v2.bin", "quic2.example.com"),
    ("quic-aioquic-multi.bin", "multi.example.com"),
];

/// The handshake bytes of a captured TLS stream: its record payloads, concatenated.
pub(super) fn handshake(name: &str) -> Vec<u8> {
    let mut rest = file(name);
    let mut out = Vec::new();
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        out.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    out
}

/// `handshake` cut into handshake records of the given sizes (cycled), as a TLS stream.
pub(super) fn reframe(handshake: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = handshake;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).clamp(1, 1 << 14).min(rest.len()));
        out.extend([22, 3, 1]);
        out.extend((chunk.len() as u16).to_be_bytes());
        out.extend(chunk);
        rest = tail;
    }
    out
}

/// The datagrams of a captured QUIC first flight.
pub(super) fn datagrams(name: &str) -> Vec<&'static [u8]> {
    let mut rest = file(name);
    let mut out = Vec::new();
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        out.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    out
}

/// A ClientHello handshake message with an outer encrypted_client_hello extension
/// (draft-ietf-tls-esni §5: type 0xfe0d, ECHClientHello of type outer) appended, lengths
/// fixed up. None of the clients installed here speaks ECH, so a real hello is extended the
/// way an ECH client extends its outer hello.
pub(super) fn with_ech_outer(hello: &[u8]) -> Vec<u8> {
    let mut ech = vec![0u8]; // ECHClientHelloType outer
    ech.extend([0x00, 0x01, 0x00, 0x01]); // HKDF-SHA256, AES-128-GCM
    ech.push(0x2a); // config_id
    ech.extend(32u16.to_be_bytes());
    ech.extend([0x11; 32]); // enc
    ech.extend(200u16.to_be_bytes());
    ech.extend([0x5a; 200]); // payload (the encrypted inner hello)
    let mut ext = 0xfe0du16.to_be_bytes().to_vec();
    ext.extend((ech.len() as u16).to_be_bytes());
    ext.extend(ech);

    // Walk to the extensions block: header, version, random, session id, suites, compression.
    let mut at = 4 + 2 + 32;
    at += 1 + usize::from(hello[at]);
    at += 2 + usize::from(u16::from_be_bytes([hello[at], hello[at + 1]]));
    at += 1 + usize::from(hello[at]);
    let ext_len = usize::from(u16::from_be_bytes([hello[at], hello[at + 1]]));
    let mut out = hello.to_vec();
    out.extend(&ext);
    out[at..at + 2].copy_from_slice(&((ext_len + ext.len()) as u16).to_be_bytes());
    let body_len = out.len() - 4;
    out[1..4].copy_from_slice(&(body_len as u32).to_be_bytes()[1..]);
    out
}
