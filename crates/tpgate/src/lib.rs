//! tpgate: a Linux transparent-proxy gateway, the daemon and its command line. The pure
//! logic (config, rules, the flow decider, ruleset rendering, codecs) is in `tpgate-core`
//! and the raw system calls in `tpgate-sys`; this crate does the I/O: `daemon` (run),
//! `install` (kernel state), `relay` (data plane), `outbound`, `dns`, `controller`,
//! `doctor`. It is a library so tests can drive the daemon in-process; the binary is
//! `src/main.rs`.
//!
//! The life of one flow:
//!
//! ```text
//! listener  relay::tcp / relay::udp        the original destination from the kernel
//!  -> decider  tpgate_core::flow::Decider  pure; asks for the process, first bytes, real address
//!  -> route    outbound::Outbounds::route  Verdict -> Route through groups -> Exit
//!  -> relay    splice / copy / UDP pumps   moves and counts bytes
//!  -> registry relay::registry::Registry   listed, counted, closable (/connections)
//! ```

#![forbid(unsafe_code)]

mod check;
pub mod cli;
mod controller;
mod daemon;
mod dashboard;
mod dns;
mod doctor;
mod geodata;
mod geoip;
mod install;
mod instance;
mod listen;
mod local_addrs;
mod logs;
mod outbound;
mod owner;
mod persist;
mod privileges;
mod providers;
mod relay;
mod reload;
mod shutdown;
mod sockdiag;
