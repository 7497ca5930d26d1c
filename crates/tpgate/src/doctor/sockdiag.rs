//! Listening sockets and their `IP_TRANSPARENT` flag, straight from sock_diag: `ss` does
//! not print the flag, the kernel (5.10+) reports it in the `INET_DIAG_SOCKOPT` attribute.

use anyhow::Result;
use tpgate_core::doctor::Listener;

const INET_DIAG_SOCKOPT: u16 = 22;
/// Bit of `inet_diag_sockopt`'s first byte: recverr, is_icsk, freebind, hdrincl, mc_loop,
/// transparent...
const SOCKOPT_TRANSPARENT: u8 = 1 << 5;
const TCP_LISTEN: u32 = 10;
/// UDP sockets report TCP_CLOSE ("UNCONN") when not connected.
const TCP_CLOSE: u8 = 7;
/// `struct inet_diag_msg`.
const MSG_LEN: usize = 72;

/// Every listening TCP socket and unconnected UDP socket of this network namespace.
pub(super) fn listeners() -> Result<Vec<Listener>> {
    let mut out = Vec::new();
    for (family, v6) in [(nix::libc::AF_INET, false), (nix::libc::AF_INET6, true)] {
        for (proto, tcp) in [
            (nix::libc::IPPROTO_TCP, true),
            (nix::libc::IPPROTO_UDP, false),
        ] {
            let states = if tcp { 1 << TCP_LISTEN } else { 1 << TCP_CLOSE };
            crate::sockdiag::dump(family as u8, proto as u8, states, |msg| {
                if msg.len() >= MSG_LEN {
                    out.push(Listener {
                        tcp,
                        v6,
                        port: u16::from_be_bytes([msg[4], msg[5]]),
                        transparent: transparent(&msg[MSG_LEN..]),
                    });
                }
            })?;
        }
    }
    Ok(out)
}

/// The transparent bit from the attributes, `None` when the kernel sent no SOCKOPT.
fn transparent(mut attrs: &[u8]) -> Option<bool> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == INET_DIAG_SOCKOPT && len > 4 {
            return Some(attrs[4] & SOCKOPT_TRANSPARENT != 0);
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attribute: length, type, payload, padded to 4 bytes.
    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + payload.len()).unwrap();
        let mut a = [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        a.extend_from_slice(payload);
        a.resize((a.len() + 3) & !3, 0);
        a
    }

    #[test]
    fn transparent_bit_of_sockopt() {
        // Values a 6.x kernel sent for a transparent and a plain TCP listener.
        let shutdown = attr(8, &[0]);
        let t = [shutdown.clone(), attr(INET_DIAG_SOCKOPT, &[0x32, 0x00])].concat();
        assert_eq!(transparent(&t), Some(true));
        let p = [shutdown.clone(), attr(INET_DIAG_SOCKOPT, &[0x52, 0x00])].concat();
        assert_eq!(transparent(&p), Some(false));
        assert_eq!(transparent(&shutdown), None);
        assert_eq!(transparent(&[9, 0, 22, 0]), None, "truncated");
    }
}
