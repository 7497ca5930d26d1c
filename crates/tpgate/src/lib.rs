//! tpgate: a Linux transparent-proxy gateway, the daemon and its command line. The pure
//! logic (config, rules, ruleset rendering, codecs) is in `tpgate-core` and the raw system
//! calls in `tpgate-sys`; this crate does the I/O: `daemon` (run), `install` (kernel state),
//! `relay` (data plane), `outbound`, `dns`, `controller`, `doctor`. It is a library so tests
//! can drive the daemon in-process; the binary is `src/main.rs`.

#![forbid(unsafe_code)]

pub mod cli;
mod controller;
mod daemon;
mod dashboard;
mod dns;
mod doctor;
mod geoip;
mod install;
mod local_addrs;
mod logs;
mod outbound;
mod owner;
mod providers;
mod relay;
mod shutdown;
mod sockdiag;
