//! A rule-provider file (any behaviour, either format) must parse or fail cleanly, and a
//! parsed set must match without panicking.

use std::net::SocketAddr;

use tpgate_core::net::{Network, Origin};
use tpgate_core::rules::{Behavior, FlowMeta, Format, RuleSet};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let behavior = [Behavior::Domain, Behavior::IpCidr, Behavior::Classical][usize::from(sel % 3)];
    let format = if sel & 4 == 0 {
        Format::Yaml
    } else {
        Format::Text
    };
    if let Ok((set, _)) = RuleSet::parse(behavior, format, text) {
        let flow = FlowMeta {
            network: Network::Tcp,
            src: SocketAddr::from(([198, 51, 100, 2], 40000)),
            dst: SocketAddr::from(([203, 0, 113, 2], 443)),
            origin: Origin::Forwarded,
            host: Some("www.example.com"),
            process: None,
            geo: None,
        };
        let _ = set.matches(&flow);
    }
}
