//! The fuzz targets' bodies, one module per parser, so that libFuzzer
//! (`fuzz_targets/NAME.rs`: `cargo +nightly fuzz run NAME`) and the regression test
//! (`tests/regressions.rs`: stable `cargo test`, every file of `corpus/NAME/` and
//! `regressions/NAME/`) run the same code on the same bytes. Each module's `run` takes one
//! input and panics only when an invariant the module names is broken.
#![forbid(unsafe_code)]

pub mod config;
pub mod dns_fakeip;
pub mod dns_reply;
pub mod dns_request;
pub mod geoip_dat;
pub mod geosite;
pub mod gun;
pub mod http_connect;
pub mod hysteria2;
pub mod reality;
pub mod rule;
pub mod ruleset;
pub mod sniff_http;
pub mod sniff_quic;
pub mod sniff_tls;
pub mod socks5;
pub mod ss_plugins;
pub mod trojan;
pub mod tuic;
pub mod vision;
pub mod ws_upgrade;
pub mod xudp;

/// One target's body: takes one input, panics when an invariant is broken.
pub type Target = fn(&[u8]);

/// Every target by the name of its binary (and of its corpus directory).
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config::run),
    ("dns_fakeip", dns_fakeip::run),
    ("dns_reply", dns_reply::run),
    ("dns_request", dns_request::run),
    ("geoip_dat", geoip_dat::run),
    ("geosite", geosite::run),
    ("gun", gun::run),
    ("http_connect", http_connect::run),
    ("hysteria2", hysteria2::run),
    ("reality", reality::run),
    ("rule", rule::run),
    ("ruleset", ruleset::run),
    ("sniff_http", sniff_http::run),
    ("sniff_quic", sniff_quic::run),
    ("sniff_tls", sniff_tls::run),
    ("socks5", socks5::run),
    ("trojan", trojan::run),
    ("tuic", tuic::run),
    ("vision", vision::run),
    ("ws_upgrade", ws_upgrade::run),
    ("xudp", xudp::run),
    ("ss_plugins", ss_plugins::run),
];
