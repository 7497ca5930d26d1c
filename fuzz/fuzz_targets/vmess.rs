//! VMess responses and body chunks from a hostile server must be recognised, asked more of,
//! or refused without panicking, and never claim more bytes than they were given.
#![no_main]
#![forbid(unsafe_code)]
use tpgate_core::proto::vmess::{parse_response, BodyCipher, Randomness, Security};

const RAND: Randomness = Randomness {
    body_key: [1; 16],
    body_iv: [2; 16],
    response_auth: 3,
    auth_nonce: [0; 4],
    connection_nonce: [0; 8],
    padding: [0; 15],
    padding_len: 0,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Some(used)) = parse_response(&RAND, data) {
        assert!(used <= data.len());
    }
    for security in [
        Security::None,
        Security::Aes128Gcm,
        Security::Chacha20Poly1305,
    ] {
        let mut rx = BodyCipher::response(security, &RAND);
        let mut rest = data.to_vec();
        while let Ok(Some((payload, used))) = rx.open_chunk(&mut rest) {
            assert!(used >= 2 + payload.len() && used <= rest.len());
            rest.drain(..used);
        }
    }
});
