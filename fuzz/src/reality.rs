//! What a REALITY server (or whoever answers in its place) sends that the client reads:
//! the end-entity certificate checked for REALITY's HMAC. The input's first 32 bytes are
//! the connection's auth key, the rest the certificate. A key the check returns is in the
//! certificate, and its HMAC is the certificate's last 64 bytes. The same bytes read as a
//! ClientHello record parse or fail cleanly, and a parsed one can be sealed.

use ring::hmac;
use tpgate_core::proto::reality::{auth_key, check_certificate, session_id, Hello};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let Some((key, cert)) = data.split_first_chunk::<32>() else {
        return;
    };
    if let Ok(public) = check_certificate(cert, key) {
        assert!(cert.windows(32).any(|w| w == public));
        let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA512, key), &public);
        assert!(cert.ends_with(mac.as_ref()));
    }
    if let Ok(hello) = Hello::parse(cert) {
        assert_eq!(hello.random().len(), 32);
        assert_eq!(hello.session_id().len(), 32);
        let auth = auth_key(key, hello.random());
        let a = session_id(&hello, &auth, &[1; 8], 7);
        assert_ne!(a, session_id(&hello, &auth, &[2; 8], 7));
    }
}
