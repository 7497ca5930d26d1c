//! Mux.Cool, V2Ray's multiplexing, as far as v2ray-plugin's client needs it (mihomo's
//! `transport/v2ray-plugin/mux.go`): one stream, session 0, opened toward `127.0.0.1:0`
//! (v2ray-plugin's server forwards every session to its Shadowsocks server whatever the
//! address), then the stream's bytes in `Keep` frames; the server answers in frames of the
//! same shape. A frame is a 2-byte metadata length, the metadata (session id, status,
//! option, and for `New` the network and address), then, when the option says so, a
//! 2-byte data length and the data.

use thiserror::Error;

/// Frame status (V2Ray's `SessionStatus`).
const NEW: u8 = 0x01;
const KEEP: u8 = 0x02;
const END: u8 = 0x03;
const KEEP_ALIVE: u8 = 0x04;
/// Option bits.
const OPTION_DATA: u8 = 0x01;
/// The one session's id.
const SESSION: [u8; 2] = [0, 0];
/// Longest metadata V2Ray accepts.
const MAX_META: usize = 512;
/// Most data one frame carries (V2Ray's own writer splits at 8 KiB).
pub const MAX_FRAME_DATA: usize = 8 * 1024;

/// Appends the `New` frame opening session 0 for TCP toward `127.0.0.1:0`.
pub fn encode_new(out: &mut Vec<u8>) {
    // Session id, status, option, network (TCP), port 0, IPv4 127.0.0.1.
    out.extend_from_slice(&[
        0, 12, SESSION[0], SESSION[1], NEW, 0, 0x01, 0, 0, 0x01, 127, 0, 0, 1,
    ]);
}

/// Appends a `Keep` frame carrying `data` (at most [`MAX_FRAME_DATA`]); `None` if larger.
pub fn encode_keep(data: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let len = u16::try_from(data.len())
        .ok()
        .filter(|_| data.len() <= MAX_FRAME_DATA)?;
    out.extend_from_slice(&[0, 4, SESSION[0], SESSION[1], KEEP, OPTION_DATA]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Some(())
}

/// Appends the `End` frame closing the session.
pub fn encode_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 4, SESSION[0], SESSION[1], END, 0]);
}

/// What the next frame from the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Drop this many bytes: a whole frame carrying nothing for the stream (keep-alive,
    /// another session).
    Skip(usize),
    /// Drop `header` bytes, then `len` bytes of the stream follow.
    Data { header: usize, len: usize },
    /// The server ended the session (drop `header` bytes): the stream's end.
    End { header: usize },
}

/// Why the server's bytes are not Mux.Cool.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MuxError {
    /// Metadata shorter than id, status and option, or longer than V2Ray allows.
    #[error("invalid mux metadata length {0}")]
    MetaLength(usize),
    /// A status V2Ray does not send.
    #[error("unknown mux frame status {0:#04x}")]
    Status(u8),
}

/// The frame at the start of `buf`: `Ok(None)` until its header (and, for a frame to
/// skip, its data) has arrived.
pub fn next_frame(buf: &[u8]) -> Result<Option<Frame>, MuxError> {
    let Some(meta_len) = buf
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return Ok(None);
    };
    if !(4..=MAX_META).contains(&meta_len) {
        return Err(MuxError::MetaLength(meta_len));
    }
    let Some(meta) = buf.get(2..2 + meta_len) else {
        return Ok(None);
    };
    let (id, status, option) = ([meta[0], meta[1]], meta[2], meta[3]);
    if !matches!(status, NEW | KEEP | END | KEEP_ALIVE) {
        return Err(MuxError::Status(status));
    }
    let mut header = 2 + meta_len;
    let mut len = 0;
    if option & OPTION_DATA != 0 {
        let Some(l) = buf.get(header..header + 2) else {
            return Ok(None);
        };
        len = usize::from(u16::from_be_bytes([l[0], l[1]]));
        header += 2;
    }
    Ok(Some(match status {
        END if id == SESSION => {
            // Data riding on the End frame still belongs to the stream.
            if len > 0 {
                Frame::Data { header, len }
            } else {
                Frame::End { header }
            }
        }
        KEEP | NEW if id == SESSION && len > 0 => Frame::Data { header, len },
        _ => {
            if buf.len() < header + len {
                return Ok(None);
            }
            Frame::Skip(header + len)
        }
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn frames_as_mihomo_writes_them() {
        let mut out = Vec::new();
        encode_new(&mut out);
        assert_eq!(
            out,
            [0, 12, 0, 0, 1, 0, 1, 0, 0, 1, 127, 0, 0, 1],
            "New, TCP, 127.0.0.1:0"
        );
        out.clear();
        encode_keep(b"hi", &mut out).unwrap();
        assert_eq!(out, [0, 4, 0, 0, 2, 1, 0, 2, b'h', b'i']);
        assert_eq!(
            next_frame(&out),
            Ok(Some(Frame::Data { header: 8, len: 2 }))
        );
        out.clear();
        encode_end(&mut out);
        assert_eq!(next_frame(&out), Ok(Some(Frame::End { header: 6 })));
        assert!(encode_keep(&[0; MAX_FRAME_DATA + 1], &mut out).is_none());
    }

    #[test]
    fn skips_and_refusals() {
        // A keep-alive, and data for another session: skipped whole.
        assert_eq!(next_frame(&[0, 4, 0, 0, 4, 0]), Ok(Some(Frame::Skip(6))));
        assert_eq!(next_frame(&[0, 4, 0, 9, 2, 1, 0, 1]), Ok(None));
        assert_eq!(
            next_frame(&[0, 4, 0, 9, 2, 1, 0, 1, 7]),
            Ok(Some(Frame::Skip(9)))
        );
        assert_eq!(next_frame(&[0, 2, 0, 0]), Err(MuxError::MetaLength(2)));
        assert_eq!(next_frame(&[0x7b, 0xf7]), Err(MuxError::MetaLength(31735)));
        assert_eq!(next_frame(&[0, 4, 0, 0, 9, 0]), Err(MuxError::Status(9)));
        assert_eq!(next_frame(&[0, 4, 0]), Ok(None));
    }

    proptest! {
        #[test]
        fn keep_frames_round_trip(data in proptest::collection::vec(any::<u8>(), 1..MAX_FRAME_DATA)) {
            let mut out = Vec::new();
            encode_keep(&data, &mut out).unwrap();
            let Some(Frame::Data { header, len }) = next_frame(&out).unwrap() else {
                panic!("not data");
            };
            prop_assert_eq!(&out[header..header + len], &data[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            match next_frame(&bytes) {
                Ok(Some(Frame::Skip(n))) => prop_assert!(n <= bytes.len()),
                Ok(Some(Frame::Data { header, .. } | Frame::End { header })) => {
                    prop_assert!(header <= bytes.len());
                }
                _ => {}
            }
        }
    }
}
