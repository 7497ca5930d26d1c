//! Listening sockets and their `IP_TRANSPARENT` flag, straight from sock_diag: `ss` does
//! not print the flag, the kernel (5.10+) reports it in the `INET_DIAG_SOCKOPT` attribute.

use anyhow::{bail, Context as _, Result};
use netlink_sys::{constants::NETLINK_SOCK_DIAG, Socket};
use tpgate_core::doctor::Listener;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
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
            dump(family as u8, proto as u8, states, |port, transparent| {
                out.push(Listener {
                    tcp,
                    v6,
                    port,
                    transparent,
                });
            })?;
        }
    }
    Ok(out)
}

fn dump(family: u8, proto: u8, states: u32, mut each: impl FnMut(u16, Option<bool>)) -> Result<()> {
    let mut sock = Socket::new(NETLINK_SOCK_DIAG).context("opening sock_diag netlink socket")?;
    sock.bind_auto()?;
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                                // inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid.
    req.extend_from_slice(&[family, proto, 0, 0]);
    req.extend_from_slice(&states.to_ne_bytes());
    req.resize(72, 0);
    sock.send(&req, 0).context("sending sock_diag request")?;
    // Bounded: a dump ends with NLMSG_DONE; give up after many datagrams rather than spin.
    for _ in 0..10_000 {
        let mut buf = Vec::with_capacity(1 << 16);
        let n = sock.recv(&mut buf, 0).context("reading sock_diag")?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into()?) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into()?);
            if len < 16 || off + len > n {
                bail!("malformed sock_diag message");
            }
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => bail!("sock_diag refused the request"),
                _ => {}
            }
            let msg = &buf[off + 16..off + len];
            if msg.len() >= MSG_LEN {
                let port = u16::from_be_bytes([msg[4], msg[5]]);
                each(port, transparent(&msg[MSG_LEN..]));
            }
            off += (len + 3) & !3;
        }
    }
    bail!("sock_diag dump did not end")
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
