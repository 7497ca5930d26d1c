//! A v2ray `geosite.dat` (downloaded by users from anywhere) must decode or fail cleanly,
//! whatever the bytes, and the lists built from it must match without panicking. The first
//! byte picks which list names (with or without an `@attribute`) the rules ask for.

use std::net::SocketAddr;

use tpgate_core::net::{Network, Origin};
use tpgate_core::rules::{geosite_sets, FlowMeta};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let Some((&sel, file)) = data.split_first() else {
        return;
    };
    let all = ["cn", "ads@cn", "GOOGLE", "private", "x@"];
    let names: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| sel & (1 << i) != 0)
        .map(|(_, n)| (*n).to_owned())
        .collect();
    let Ok(sets) = geosite_sets(file, &names) else {
        return;
    };
    assert_eq!(sets.len(), names.len(), "one set per name asked");
    let flow = FlowMeta {
        network: Network::Tcp,
        src: SocketAddr::from(([198, 51, 100, 2], 40000)),
        dst: SocketAddr::from(([203, 0, 113, 2], 443)),
        origin: Origin::Forwarded,
        host: Some("www.example.cn"),
        process: None,
        geo: None,
    };
    for set in sets.values() {
        let _ = set.matches(&flow);
    }
}
