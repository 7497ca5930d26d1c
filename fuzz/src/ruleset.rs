//! A rule-provider file (any behaviour, any format: yaml, text, mrs) must parse or fail cleanly, and a
//! parsed set must match without panicking.

use std::net::SocketAddr;

use tpgate_core::net::{Network, Origin};
use tpgate_core::rules::{Behavior, FlowMeta, Format, RuleSet};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let behavior = [Behavior::Domain, Behavior::IpCidr, Behavior::Classical][usize::from(sel % 3)];
    let format = [Format::Yaml, Format::Text, Format::Mrs][usize::from((sel >> 2) % 3)];
    if let Ok((set, _)) = RuleSet::parse_bytes(behavior, format, rest) {
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
