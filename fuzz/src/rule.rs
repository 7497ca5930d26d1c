//! A rule line must parse or fail cleanly, and a parsed rule must match without panicking.

use std::net::SocketAddr;

use tpgate_core::net::{Network, Origin};
use tpgate_core::rules::{parse_rule, FlowMeta};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rule) = parse_rule(text) {
        let flow = FlowMeta {
            network: Network::Udp,
            src: SocketAddr::from(([198, 51, 100, 2], 5353)),
            dst: SocketAddr::from(([203, 0, 113, 2], 53)),
            origin: Origin::Forwarded,
            host: None,
            process: None,
            geo: None,
        };
        let _ = rule.matcher.matches(&flow);
        let named = FlowMeta {
            host: Some("www.example.com"),
            ..flow
        };
        let _ = rule.matcher.matches(&named);
    }
}
