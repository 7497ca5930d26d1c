//! Whatever a TCP client sends first, the HTTP sniffer must answer without panicking, and a
//! name it reports must be a normalised hostname.

use tpgate_core::sniff::{http::sniff_host, Sniffed};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    if let Sniffed::Name(name) = sniff_host(data) {
        assert!(!name.is_empty() && !name.ends_with('.'));
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase() || b == b':'));
    }
}
