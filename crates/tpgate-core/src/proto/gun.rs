//! The gRPC "gun" transport's messages (V2Ray/Xray `transport/internet/grpc`): the tunnel's
//! bytes travel in the body of one HTTP/2 POST to `/<service>/Tun`, each piece a gRPC
//! message (a 5-byte prefix: flag 0, big-endian length) holding a protobuf `Hunk` whose
//! field 1 (`bytes data`) is the piece. Xray's `MultiHunk` repeats field 1, so every field 1
//! of a message is read, in order, and other fields are skipped. HTTP/2 itself is not here.

use thiserror::Error;

/// Largest gRPC message accepted. Servers send pieces of at most tens of KiB; this bounds
/// what one message may make the reader buffer.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Why a message cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GunError {
    /// The compressed flag is set: gun never compresses.
    #[error("compressed gRPC message (flag {0})")]
    Compressed(u8),
    /// A message longer than [`MAX_MESSAGE`].
    #[error("gRPC message of {0} bytes is too long")]
    TooLong(u32),
    /// The protobuf inside is malformed (a varint or length running past the message, or a
    /// wire type that cannot be skipped).
    #[error("malformed protobuf in a gRPC message")]
    Protobuf,
}

/// Appends one message carrying `data` to `out`.
pub fn encode_message(data: &[u8], out: &mut Vec<u8>) {
    let mut varint = [0u8; 10];
    let n = put_varint(data.len() as u64, &mut varint);
    let body = 1 + n + data.len();
    out.reserve(5 + body);
    out.push(0);
    // Callers write pieces far below 4 GiB (a relay buffer); saturate rather than wrap.
    out.extend_from_slice(&u32::try_from(body).unwrap_or(u32::MAX).to_be_bytes());
    out.push(0x0a);
    out.extend_from_slice(&varint[..n]);
    out.extend_from_slice(data);
}

fn put_varint(mut v: u64, out: &mut [u8; 10]) -> usize {
    let mut i = 0;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[i] = b;
            return i + 1;
        }
        out[i] = b | 0x80;
        i += 1;
    }
}

/// A varint at the start of `buf`: the value and its length.
fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// A whole message's protobuf: its field-1 pieces, in order ([`Message::pieces`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    body: &'a [u8],
}

/// Reads one message at the start of `buf`: `Ok(None)` while it is incomplete, else the
/// message and the bytes it took. The protobuf is checked whole here, so iterating its
/// pieces cannot fail.
pub fn parse_message(buf: &[u8]) -> Result<Option<(Message<'_>, usize)>, GunError> {
    let Some(prefix) = buf.get(..5) else {
        return Ok(None);
    };
    if prefix[0] != 0 {
        return Err(GunError::Compressed(prefix[0]));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    if len as usize > MAX_MESSAGE {
        return Err(GunError::TooLong(len));
    }
    let Some(body) = buf.get(5..5 + len as usize) else {
        return Ok(None);
    };
    let m = Message { body };
    let mut fields = Fields { rest: body };
    for f in &mut fields {
        f?;
    }
    Ok(Some((m, 5 + len as usize)))
}

impl<'a> Message<'a> {
    /// The field-1 pieces (the tunnel's bytes), in order.
    pub fn pieces(&self) -> impl Iterator<Item = &'a [u8]> {
        Fields { rest: self.body }.filter_map(|f| match f {
            Ok((1, Some(data))) => Some(data),
            _ => None,
        })
    }
}

/// Walks protobuf fields: `(field number, length-delimited payload if wire type 2)`.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Option<&'a [u8]>), GunError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.field();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u64, Option<&'a [u8]>), GunError> {
        let (tag, n) = varint(self.rest).ok_or(GunError::Protobuf)?;
        let rest = &self.rest[n..];
        let (skip, payload) = match tag & 7 {
            0 => (varint(rest).ok_or(GunError::Protobuf)?.1, None),
            1 => (8, None),
            2 => {
                let (len, n) = varint(rest).ok_or(GunError::Protobuf)?;
                let len = usize::try_from(len).map_err(|_| GunError::Protobuf)?;
                let end = n.checked_add(len).ok_or(GunError::Protobuf)?;
                (end, Some(rest.get(n..end).ok_or(GunError::Protobuf)?))
            }
            5 => (4, None),
            _ => return Err(GunError::Protobuf),
        };
        self.rest = rest.get(skip..).ok_or(GunError::Protobuf)?;
        Ok((tag >> 3, payload))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn bytes_on_the_wire() {
        let mut out = Vec::new();
        encode_message(b"hi", &mut out);
        assert_eq!(out, b"\x00\x00\x00\x00\x04\x0a\x02hi");
        let mut big = Vec::new();
        encode_message(&[7u8; 300], &mut big);
        assert_eq!(&big[..8], b"\x00\x00\x00\x01\x2f\x0a\xac\x02");
    }

    #[test]
    fn pieces_of_a_multi_hunk_in_order_other_fields_skipped() {
        // field 1 "ab", field 2 varint 5, field 1 "c", field 3 fixed32.
        let body = b"\x0a\x02ab\x10\x05\x0a\x01c\x1d\x01\x02\x03\x04";
        let mut msg = vec![0, 0, 0, 0, body.len() as u8];
        msg.extend_from_slice(body);
        msg.extend_from_slice(b"next");
        let (m, used) = parse_message(&msg).unwrap().unwrap();
        assert_eq!(used, msg.len() - 4);
        assert_eq!(m.pieces().collect::<Vec<_>>(), [&b"ab"[..], b"c"]);
    }

    #[test]
    fn incomplete_and_malformed() {
        assert_eq!(parse_message(b"\x00\x00\x00"), Ok(None));
        assert_eq!(parse_message(b"\x00\x00\x00\x00\x04\x0a\x02h"), Ok(None));
        assert_eq!(
            parse_message(b"\x01\x00\x00\x00\x00"),
            Err(GunError::Compressed(1))
        );
        assert_eq!(
            parse_message(b"\x00\xff\x00\x00\x00"),
            Err(GunError::TooLong(0xff00_0000))
        );
        // length 5 claimed inside a 3-byte body
        assert_eq!(
            parse_message(b"\x00\x00\x00\x00\x03\x0a\x05h"),
            Err(GunError::Protobuf)
        );
        // wire type 3 (group start) cannot be skipped
        assert_eq!(
            parse_message(b"\x00\x00\x00\x00\x01\x0b"),
            Err(GunError::Protobuf)
        );
        // an empty message carries nothing and is fine
        let (m, used) = parse_message(b"\x00\x00\x00\x00\x00").unwrap().unwrap();
        assert_eq!((m.pieces().count(), used), (0, 5));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut out = Vec::new();
            encode_message(&data, &mut out);
            let (m, used) = parse_message(&out).unwrap().unwrap();
            prop_assert_eq!(used, out.len());
            prop_assert_eq!(m.pieces().collect::<Vec<_>>().concat(), data);
        }

        #[test]
        fn never_panics_nor_overclaims(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((m, used))) = parse_message(&data) {
                prop_assert!(used <= data.len() && used >= 5);
                let total: usize = m.pieces().map(<[u8]>::len).sum();
                prop_assert!(total <= used);
            }
        }
    }
}
