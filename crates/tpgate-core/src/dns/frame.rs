//! DNS over a stream (TCP, TLS): each message preceded by its two-byte length (RFC 1035
//! 4.2.2, RFC 7766). Bytes in, whole messages out, whatever chunks the stream delivers.

/// Splits a stream's bytes into messages. Holds at most one partial message once the
/// caller has taken the whole ones out.
#[derive(Debug, Default)]
pub struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if the bytes so far hold one (a zero length is an empty
    /// message, which is then malformed to whoever parses it).
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        let [a, b, ..] = self.buf[..] else {
            return None;
        };
        let end = 2 + usize::from(u16::from_be_bytes([a, b]));
        if self.buf.len() < end {
            return None;
        }
        let msg = self.buf[2..end].to_vec();
        self.buf.drain(..end);
        Some(msg)
    }

    /// Whether part of a message has been read (an idle close then cut it short).
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// `msg` with its length in front; `None` when it is longer than a frame can say.
pub fn frame(msg: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(msg.len()).ok()?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn too_long_is_refused() {
        assert_eq!(frame(&[0; 65535]).map(|f| f.len()), Some(65537));
        assert!(frame(&[0; 65536]).is_none());
        assert_eq!(frame(b"").as_deref(), Some(&[0u8, 0][..]));
    }

    proptest! {
        /// Messages framed and cut anywhere come out whole and in order.
        #[test]
        fn any_chunking_gives_back_the_messages(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
            cuts in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let stream: Vec<u8> = msgs.iter().flat_map(|m| frame(m).unwrap()).collect();
            let mut frames = Frames::default();
            let (mut out, mut at, mut cut) = (Vec::new(), 0, cuts.iter().cycle());
            while at < stream.len() {
                let end = (at + cut.next().copied().unwrap_or(1)).min(stream.len());
                frames.push(&stream[at..end]);
                at = end;
                while let Some(m) = frames.next_message() {
                    out.push(m);
                }
            }
            prop_assert_eq!(out, msgs);
            prop_assert!(!frames.is_partial());
        }
    }
}
