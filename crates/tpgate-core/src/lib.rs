//! Pure logic of tpgate: the config model and its YAML loader, the rule engine, and the
//! interception plan with its renderers. Nothing here opens a socket, spawns a process or
//! reads a file: every function is a function of its inputs, so it is unit-tested and fuzzed
//! cheaply. I/O lives in the `tpgate` crate; raw syscalls in `tpgate-sys`.
#![forbid(unsafe_code)]

pub mod config;
pub mod dns;
pub mod doctor;
pub mod flow;
pub mod net;
pub mod plan;
pub mod proto;
pub mod rules;
pub mod sniff;
