//! Proptest strategies for the codec tests: destinations as an upstream could be asked for.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use crate::net::Destination;

/// Host-name bytes that are also safe in an HTTP request target, so every codec accepts them.
const HOST_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";

/// A domain of 1..=255 bytes.
pub(super) fn domain() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(HOST_CHARS), 1..=255)
        .prop_map(|bytes| bytes.into_iter().map(char::from).collect())
}

/// An IPv4, IPv6 (no flow label or scope, which no codec carries) or domain destination.
pub(super) fn destination() -> impl Strategy<Value = Destination> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| Destination::Addr(SocketAddr::from((Ipv4Addr::from(ip), port)))),
        (any::<u128>(), any::<u16>())
            .prop_map(|(ip, port)| Destination::Addr(SocketAddr::from((Ipv6Addr::from(ip), port)))),
        (domain(), any::<u16>()).prop_map(|(name, port)| Destination::Domain(name, port)),
    ]
}
