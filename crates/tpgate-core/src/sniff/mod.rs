//! Sniffers: the first bytes a client sends in, the name it asked for out. TLS ClientHello
//! SNI ([`tls`]), HTTP/1.x Host ([`http`]) and the SNI inside QUIC Initial packets ([`quic`]).
//!
//! Every sniffer is a pure function of the bytes seen so far: it answers [`Sniffed::NeedMore`]
//! while those bytes are a plausible beginning of its protocol, and a final [`Sniffed::Name`] or
//! [`Sniffed::NotThis`] once they are enough to decide. Deliberately absent: timeouts (the
//! daemon decides how long to wait), destination overrides and any resolution of the name.
//! Memory is bounded by caps on every length a peer declares, so a hostile client cannot make
//! a sniffer buffer more than a few tens of KiB.

mod client_hello;
pub mod http;
mod name;
pub mod quic;
pub mod tls;

#[cfg(test)]
mod fixtures;

/// What a sniffer concluded from the bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// The name the client asked for (lower-cased, trailing dot removed, validated as a
    /// hostname; IP literals are NOT names).
    Name(String),
    /// This looks like the protocol but the bytes so far are not enough: feed more.
    NeedMore,
    /// Not this protocol, or this protocol without a usable name: stop sniffing.
    NotThis,
}
