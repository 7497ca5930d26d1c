//! Whatever an HTTP proxy answers to CONNECT must parse or fail cleanly, and a success must
//! not claim more head than it was given or than the cap allows. The same bytes as the
//! response head of `network: http` (V2Ray's HTTP header): the same bounds.

use tpgate_core::proto::http::{parse_connect_response, MAX_HEAD_LEN};
use tpgate_core::proto::http_header::response_head_len;

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    if let Ok(Some(response)) = parse_connect_response(data) {
        assert!((200..300).contains(&response.status));
        assert!(response.head_len <= data.len().min(MAX_HEAD_LEN));
    }
    if let Ok(Some(n)) = response_head_len(data) {
        assert!(n > 0 && n <= data.len().min(MAX_HEAD_LEN));
    }
}
