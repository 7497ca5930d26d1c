//! Whatever an HTTP proxy answers to CONNECT must parse or fail cleanly, and a success must
//! not claim more head than it was given or than the cap allows.

use tpgate_core::proto::http::{parse_connect_response, MAX_HEAD_LEN};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    if let Ok(Some(response)) = parse_connect_response(data) {
        assert!((200..300).contains(&response.status));
        assert!(response.head_len <= data.len().min(MAX_HEAD_LEN));
    }
}
