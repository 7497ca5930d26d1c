//! Proxy provider contents (Clash YAML, plain or base64 share links) and single share
//! links: never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tpgate_core::config::subscription::{parse_uri, SubscriptionInfo};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_uri(&text);
    let _ = SubscriptionInfo::parse(&text);
    let config = format!(
        "proxy-providers:\n  p:\n    type: inline\n    payload: []\nproxy-groups:\n  - {{name: G, type: select, use: [p]}}\n"
    );
    if let Ok(l) = tpgate_core::config::load(&config) {
        if let Some(p) = l.config.proxy_providers.first() {
            let _ = p.read(data);
        }
    }
});
