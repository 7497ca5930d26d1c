//! Sans-IO codecs for the client side of the upstream proxy protocols the outbounds speak:
//! SOCKS5 (RFC 1928/1929), HTTP CONNECT, Trojan, VLESS (with Vision's padding and XUDP),
//! VMess (AEAD), Hysteria 2 and TUIC v5, plus the SOCKS-style address they share, the V2Ray
//! transports' own bytes (the WebSocket and HTTP-upgrade request, gRPC gun messages) and the
//! Shadowsocks plugins' (simple-obfs, ShadowTLS v2, v2ray-plugin's Mux.Cool).
//!
//! Every function here turns bytes into values or values into bytes and nothing else: no
//! sockets, no timeouts, no retries, no TLS (Trojan runs inside a TLS stream the caller owns).
//! Parsers take what has arrived so far and answer `Ok(None)` while it is not yet a whole
//! message, `Ok(Some((value, consumed)))` once it is, and `Err` only when no more bytes could
//! make it valid; bytes past `consumed` belong to whatever follows (usually the tunnel).
//! Writers append to a `Vec<u8>` and leave it untouched when they fail.
//! Server sides are deliberately absent: tpgate only ever dials these proxies.

pub mod addr;
pub mod fragments;
pub mod gun;
pub mod http;
pub mod http_header;
pub mod hysteria2;
pub mod mux_cool;
pub mod obfs;
pub mod reality;
pub mod shadow_tls;
pub mod socks5;
pub mod trojan;
pub mod tuic;
pub mod vision;
pub mod vless;
pub mod vmess;
pub mod ws;
pub mod xudp;

#[cfg(test)]
mod arb;
