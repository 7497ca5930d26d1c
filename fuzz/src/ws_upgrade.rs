//! A server's answer to a WebSocket or HTTP upgrade: recognised, asked more of, or refused
//! without panicking, never claiming more bytes than given (what follows is the tunnel's).

use tpgate_core::proto::ws::parse_upgrade_response;

/// One input: no panic, and the invariant above. The first byte chooses whether a
/// `Sec-WebSocket-Key` was sent (then the answer's accept value is checked too).
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = (mode & 1 == 1).then_some(*b"the sample nonce");
    if let Ok(Some(used)) = parse_upgrade_response(rest, key.as_ref()) {
        assert!(used <= rest.len());
    }
}
