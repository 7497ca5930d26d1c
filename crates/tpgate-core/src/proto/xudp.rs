//! XUDP, the client side: UDP packets as Mux.Cool frames of session 0 on a VLESS `Mux`
//! request, which is how Xray and sing-box carry UDP through a Vision flow (both servers
//! refuse a plain `Udp` request from a Vision user). Written as sing-box's `XUDPConn`
//! writes it; no global id (it is optional), no other sessions, no TCP over Mux.
//!
//! A frame: `metadata length (u16 BE) | session id (u16) | status | option | [network |
//! port | address type | address] | [data length (u16 BE) | data]`. Status 1 opens the
//! session, 2 keeps it (a packet), 3 ends it, 4 is a keep-alive; option bit 1 says data
//! follows, bit 2 that the session failed. The address uses VLESS's form.

use thiserror::Error;

use super::vless::{check_domain, encode_addr_port, VlessError};
use crate::net::Destination;

const STATUS_NEW: u8 = 1;
const STATUS_KEEP: u8 = 2;
const STATUS_END: u8 = 3;
const STATUS_KEEP_ALIVE: u8 = 4;
const OPTION_DATA: u8 = 1;
const OPTION_ERROR: u8 = 2;
const NETWORK_UDP: u8 = 2;

/// Appends one packet to `dst`: the session's opening frame when `first`, else a keep
/// frame. The buffer is untouched on error.
pub fn encode_packet(
    first: bool,
    dst: &Destination,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), VlessError> {
    check_domain(dst)?;
    let len =
        u16::try_from(payload.len()).map_err(|_| VlessError::PayloadTooLong(payload.len()))?;
    let start = out.len();
    out.extend_from_slice(&[0, 0]); // metadata length, filled below
    out.extend_from_slice(&[0, 0]); // session 0
    out.push(if first { STATUS_NEW } else { STATUS_KEEP });
    out.push(OPTION_DATA);
    out.push(NETWORK_UDP);
    encode_addr_port(dst, out);
    let meta = u16::try_from(out.len() - start - 2).unwrap_or(u16::MAX);
    out[start..start + 2].copy_from_slice(&meta.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// One frame from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A packet's payload (from whichever address the metadata names).
    Packet(&'a [u8]),
    /// A keep-alive, or a frame without data.
    Nothing,
    /// The server ended the session (or reported it failed).
    End,
}

/// Why the server's frames cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XudpError {
    /// Metadata shorter than session id, status and option.
    #[error("Mux frame metadata of {0} bytes")]
    ShortMetadata(u16),
    /// A status Mux.Cool does not have.
    #[error("unknown Mux frame status {0}")]
    Status(u8),
}

/// Reads one frame from the start of `buf`: `Ok(None)` until all of it has arrived, then
/// the frame and how many bytes it took.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, XudpError> {
    let &[m0, m1, ..] = buf else {
        return Ok(None);
    };
    let meta_len = u16::from_be_bytes([m0, m1]);
    if meta_len < 4 {
        return Err(XudpError::ShortMetadata(meta_len));
    }
    let meta_end = 2 + usize::from(meta_len);
    let Some(meta) = buf.get(2..meta_end) else {
        return Ok(None);
    };
    let (status, option) = (meta[2], meta[3]);
    if !(STATUS_NEW..=STATUS_KEEP_ALIVE).contains(&status) {
        return Err(XudpError::Status(status));
    }
    let (data, used) = if option & OPTION_DATA != 0 {
        let Some(&[d0, d1]) = buf.get(meta_end..meta_end + 2) else {
            return Ok(None);
        };
        let end = meta_end + 2 + usize::from(u16::from_be_bytes([d0, d1]));
        match buf.get(meta_end + 2..end) {
            Some(data) => (Some(data), end),
            None => return Ok(None),
        }
    } else {
        (None, meta_end)
    };
    let frame = if status == STATUS_END || option & OPTION_ERROR != 0 {
        Frame::End
    } else {
        match (status, data) {
            (STATUS_NEW | STATUS_KEEP, Some(d)) => Frame::Packet(d),
            _ => Frame::Nothing,
        }
    };
    Ok(Some((frame, used)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::arb;

    #[test]
    fn frames_as_sing_box_writes_them() {
        let dst = Destination::Addr("192.0.2.1:53".parse().unwrap());
        let mut out = Vec::new();
        encode_packet(true, &dst, b"hi", &mut out).unwrap();
        assert_eq!(
            out,
            b"\x00\x0c\x00\x00\x01\x01\x02\x00\x35\x01\xc0\x00\x02\x01\x00\x02hi"
        );
        out.clear();
        encode_packet(false, &dst, b"", &mut out).unwrap();
        assert_eq!(out[4], STATUS_KEEP);
        let (frame, used) = parse_frame(&out).unwrap().unwrap();
        assert_eq!((frame, used), (Frame::Packet(b""), out.len()));

        let big = vec![0; 65536];
        assert_eq!(
            encode_packet(false, &dst, &big, &mut out),
            Err(VlessError::PayloadTooLong(65536))
        );
        let empty = Destination::Domain(String::new(), 1);
        assert_eq!(
            encode_packet(false, &empty, b"", &mut out),
            Err(VlessError::EmptyDomain)
        );
        assert_eq!(out.len(), 16);
    }

    #[test]
    fn server_frames() {
        // A keep frame without an address, one with data and an IPv6 address, a
        // keep-alive, an end.
        assert_eq!(
            parse_frame(b"\x00\x04\x00\x00\x02\x01\x00\x03abcX"),
            Ok(Some((Frame::Packet(b"abc"), 11)))
        );
        let mut v6 = b"\x00\x18\x00\x00\x02\x01\x02\x01\xbb\x03".to_vec();
        v6.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v6.extend_from_slice(b"\x00\x01z");
        assert_eq!(parse_frame(&v6), Ok(Some((Frame::Packet(b"z"), 29))));
        assert_eq!(
            parse_frame(b"\x00\x04\x00\x00\x04\x00"),
            Ok(Some((Frame::Nothing, 6)))
        );
        assert_eq!(
            parse_frame(b"\x00\x04\x00\x00\x03\x00"),
            Ok(Some((Frame::End, 6)))
        );
        assert_eq!(
            parse_frame(b"\x00\x04\x00\x00\x02\x02"),
            Ok(Some((Frame::End, 6)))
        );
        assert_eq!(
            parse_frame(b"\x00\x03\x00\x00\x02"),
            Err(XudpError::ShortMetadata(3))
        );
        assert_eq!(
            parse_frame(b"\x00\x04\x00\x00\x09\x00"),
            Err(XudpError::Status(9))
        );
    }

    proptest! {
        #[test]
        fn packets_round_trip_and_prefixes_need_more(
            dst in arb::destination(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            first in any::<bool>(),
        ) {
            let mut out = Vec::new();
            encode_packet(first, &dst, &payload, &mut out).unwrap();
            for cut in 0..out.len() {
                prop_assert_eq!(parse_frame(&out[..cut]), Ok(None));
            }
            out.extend_from_slice(b"next");
            let (frame, used) = parse_frame(&out).unwrap().unwrap();
            prop_assert_eq!(frame, Frame::Packet(&payload[..]));
            prop_assert_eq!(used, out.len() - 4);
        }
    }
}
