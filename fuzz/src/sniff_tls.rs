//! Whatever a TCP client sends first, the TLS sniffer must answer without panicking, and a
//! name it reports must be a normalised hostname that more bytes cannot change.

use tpgate_core::sniff::{tls::sniff_sni, Sniffed};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let verdict = sniff_sni(data);
    if let Sniffed::Name(name) = &verdict {
        assert!(!name.is_empty() && !name.ends_with('.'));
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\x17\x03\x03\x00\x01\x00");
        assert_eq!(sniff_sni(&longer), verdict);
    }
}
