//! XTLS Vision (VLESS `flow: xtls-rprx-vision`), the client's codec: the padded frames the
//! first packets travel in each way, the inner-TLS filter that decides when padding ends
//! and whether the tunnel may go direct, and the unpadder for what the server sends.
//! The frames and decisions of Xray's `proxy/proxy.go` (`XtlsPadding`, `XtlsUnpadding`,
//! `XtlsFilterTls`, `VisionWriter`) and sing-box's `vless/vision.go`, since the server runs
//! the same heuristics on its side; one addition: while padding lasts, writes are cut where
//! the inner client's TLS records end, so the switch to direct does not depend on how the
//! client's bytes happened to be read.
//!
//! A frame: `uuid (16, first frame only) | command | content length (u16 BE) | padding
//! length (u16 BE) | content | padding`. Command 0 continues padding, 1 ends it (plain
//! bytes follow inside the outer TLS), 2 ends it and the sender goes direct: its next bytes
//! are written to the TCP connection beneath the outer TLS. Randomness for padding lengths
//! is the caller's; the outer TLS and the switch itself are the caller's too.

use thiserror::Error;

use super::vless::Uuid;

/// The flow name written in the request's addons.
pub const FLOW: &str = "xtls-rprx-vision";
/// A frame (uuid and header included) fits one of Xray's 8 KiB buffers.
pub const FRAME_MAX: usize = 8192;
/// The most content one frame carries: the rest of a buffer after the uuid and header.
pub const CONTENT_MAX: usize = FRAME_MAX - 21;
/// Packets each way (counted together) the filter inspects before it stops looking.
const PACKETS_TO_FILTER: u8 = 8;

const TLS_APPLICATION_DATA: [u8; 3] = [0x17, 0x03, 0x03];
const TLS_SERVER_HANDSHAKE: [u8; 3] = [0x16, 0x03, 0x03];
const TLS_CLIENT_HANDSHAKE: [u8; 2] = [0x16, 0x03];
const TLS13_SUPPORTED_VERSIONS: [u8; 6] = [0x00, 0x2b, 0x00, 0x02, 0x03, 0x04];
const TLS_AES_128_CCM_8_SHA256: u16 = 0x1305;

/// What a frame tells the receiver about the frames after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// More padded frames follow.
    Continue,
    /// Padding ends: plain bytes follow, still inside the outer TLS.
    End,
    /// Padding ends and the sender goes direct, beneath the outer TLS.
    Direct,
}

impl Command {
    const fn code(self) -> u8 {
        match self {
            Self::Continue => 0,
            Self::End => 1,
            Self::Direct => 2,
        }
    }
}

/// How long a frame's padding is: long (900 to 1399 bytes of content and padding
/// together) while the inner traffic may be a TLS handshake, else up to 255 bytes; never
/// past [`FRAME_MAX`]. `random` is any random number.
pub fn padding_len(content: usize, long: bool, random: u32) -> usize {
    let want = if content < 900 && long {
        (random % 500) as usize + 900 - content
    } else {
        (random % 256) as usize
    };
    want.min(CONTENT_MAX.saturating_sub(content))
}

/// Appends one frame: the uuid when given (the first frame), `command`, `content`, and
/// `padding` zero bytes. Content longer than [`CONTENT_MAX`] is the caller's bug; it is cut
/// into several frames by [`Padder`].
pub fn encode_frame(
    uuid: Option<&Uuid>,
    command: Command,
    content: &[u8],
    padding: usize,
    out: &mut Vec<u8>,
) {
    debug_assert!(
        content.len() <= CONTENT_MAX,
        "a frame of {} bytes",
        content.len()
    );
    let content_len = u16::try_from(content.len()).unwrap_or(u16::MAX);
    let padding = u16::try_from(padding).unwrap_or(u16::MAX);
    if let Some(id) = uuid {
        out.extend_from_slice(&id.0);
    }
    out.push(command.code());
    out.extend_from_slice(&content_len.to_be_bytes());
    out.extend_from_slice(&padding.to_be_bytes());
    out.extend_from_slice(&content[..usize::from(content_len)]);
    out.resize(out.len() + usize::from(padding), 0);
}

/// What the filter has learnt of the inner traffic (Xray's `TrafficState`), from the
/// packets the client writes and the ones the server sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFilter {
    packets_left: u8,
    /// A ClientHello or ServerHello was seen.
    is_tls: bool,
    /// A ServerHello was seen: TLS 1.2 or 1.3, whose application data ends padding.
    tls12_or_above: bool,
    /// TLS 1.3 with a cipher other than CCM_8: the tunnel may go direct.
    direct_ok: bool,
    cipher: u16,
    /// Bytes of the ServerHello record not yet looked through for `supported_versions`.
    server_hello_left: i64,
}

impl Default for TlsFilter {
    fn default() -> Self {
        Self {
            packets_left: PACKETS_TO_FILTER,
            is_tls: false,
            tls12_or_above: false,
            direct_ok: false,
            cipher: 0,
            server_hello_left: -1,
        }
    }
}

impl TlsFilter {
    /// Still looking at packets.
    pub const fn filtering(&self) -> bool {
        self.packets_left > 0
    }

    /// The inner connection is TLS 1.3 (not CCM_8): its application data may go direct.
    pub const fn direct_ok(&self) -> bool {
        self.direct_ok
    }

    /// Looks at one packet (one write of the client, or one piece of server content) while
    /// [`Self::filtering`].
    pub fn observe(&mut self, packet: &[u8]) {
        if !self.filtering() {
            return;
        }
        self.packets_left -= 1;
        if let Some(start) = packet.get(..6) {
            if start[..3] == TLS_SERVER_HANDSHAKE && start[5] == 0x02 {
                self.server_hello_left = i64::from(u16::from_be_bytes([start[3], start[4]])) + 5;
                self.tls12_or_above = true;
                self.is_tls = true;
                if packet.len() >= 79 && self.server_hello_left >= 79 {
                    let session_id = usize::from(packet[43]);
                    if let Some(&[hi, lo]) = packet.get(44 + session_id..46 + session_id) {
                        self.cipher = u16::from_be_bytes([hi, lo]);
                    }
                }
            } else if start[..2] == TLS_CLIENT_HANDSHAKE && start[5] == 0x01 {
                self.is_tls = true;
            }
        }
        if self.server_hello_left > 0 {
            let end = usize::try_from(self.server_hello_left)
                .unwrap_or(usize::MAX)
                .min(packet.len());
            self.server_hello_left -= i64::try_from(packet.len()).unwrap_or(i64::MAX);
            let tls13 = packet[..end]
                .windows(TLS13_SUPPORTED_VERSIONS.len())
                .any(|w| w == TLS13_SUPPORTED_VERSIONS);
            if tls13 {
                self.direct_ok = (0x1301..=0x1305).contains(&self.cipher)
                    && self.cipher != TLS_AES_128_CCM_8_SHA256;
                self.packets_left = 0;
            } else if self.server_hello_left <= 0 {
                self.packets_left = 0;
            }
        }
    }
}

/// Frames what the client writes while padding lasts (Xray's `VisionWriter`).
#[derive(Debug, Clone)]
pub struct Padder {
    /// Sent in front of the first frame, then `None`.
    uuid: Option<Uuid>,
    padding: bool,
    records: Records,
}

/// Where the inner client's TLS records begin in what it writes. Xray decides to go
/// direct on a write that starts with an application-data record, which only happens
/// when writes fall on record boundaries; a client that writes faster than the proxy
/// reads fills the socket and the reads lose that alignment. Cutting writes at record
/// ends while padding lasts keeps it.
#[derive(Debug, Clone, Default)]
struct Records {
    /// Bytes of the current record still to come; 0 at a record's start.
    left: usize,
    /// The start of a record header that a write cut short.
    header: Vec<u8>,
    /// The stream is not (or no longer looks like) TLS records.
    lost: bool,
}

impl Records {
    /// How many of `data`'s first bytes end where the current record does, at most `max`
    /// (all `max` when that is not known).
    fn cut(&self, data: &[u8], max: usize) -> usize {
        let to_end = if self.lost {
            max
        } else if self.left > 0 {
            self.left
        } else {
            let mut header = self.header.clone();
            let need = 5 - header.len();
            header.extend_from_slice(&data[..need.min(data.len())]);
            match record_len(&header) {
                Some(len) => need + len,
                None => max,
            }
        };
        to_end.clamp(1, max.max(1))
    }

    /// Moves past `data`.
    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.header.len() == 5 {
                match record_len(&self.header) {
                    Some(len) => self.left = len,
                    None => self.lost = true,
                }
                self.header.clear();
            }
        }
    }
}

/// The body length a whole TLS record header announces (content type 20 to 23, major
/// version 3); `None` when `header` is not one (or not yet five bytes).
fn record_len(header: &[u8]) -> Option<usize> {
    match header {
        &[20..=23, 3, _, hi, lo] => Some(usize::from(u16::from_be_bytes([hi, lo]))),
        _ => None,
    }
}

/// What the writer does with its bytes after a [`Padder::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Later writes are framed too.
    Padded,
    /// Padding ended: later bytes go plain, inside the outer TLS.
    Plain,
    /// Padding ended with the direct command: once these bytes are through the outer TLS,
    /// later bytes go beneath it.
    Direct,
}

impl Padder {
    pub fn new(uuid: Uuid) -> Self {
        Self {
            uuid: Some(uuid),
            padding: true,
            records: Records::default(),
        }
    }

    /// How much of `data` the next [`Self::write`] should take while padding lasts: one
    /// frame's worth, ending where the inner client's TLS record does when it writes TLS,
    /// so that the write carrying its first application data starts with it.
    pub fn next_len(&self, data: &[u8]) -> usize {
        self.records.cut(data, CONTENT_MAX - 1).min(data.len())
    }

    /// An empty frame with long padding: sent with the request when the client has nothing
    /// to say yet, so the request's length is hidden too.
    pub fn empty(&mut self, random: u32, out: &mut Vec<u8>) {
        let uuid = self.uuid.take();
        encode_frame(
            uuid.as_ref(),
            Command::Continue,
            &[],
            padding_len(0, true, random),
            out,
        );
    }

    /// Frames one write of the inner client (`data`, which `filter` has already seen) into
    /// `out`, asking `random` for padding lengths. Once padding has ended, `data` is
    /// appended as it is.
    pub fn write(
        &mut self,
        filter: &TlsFilter,
        data: &[u8],
        mut random: impl FnMut() -> u32,
        out: &mut Vec<u8>,
    ) -> WriteMode {
        if !self.padding {
            out.extend_from_slice(data);
            return WriteMode::Plain;
        }
        self.records.advance(data);
        let pieces = pieces(data);
        let mut long = filter.is_tls;
        let last = pieces.len().saturating_sub(1);
        let ended = if filter.direct_ok {
            Command::Direct
        } else {
            Command::End
        };
        for (i, piece) in pieces.iter().enumerate() {
            let uuid = self.uuid.take();
            if filter.is_tls && piece.len() >= 6 && piece[..3] == TLS_APPLICATION_DATA {
                let command = if i == last { ended } else { Command::Continue };
                encode_frame(
                    uuid.as_ref(),
                    command,
                    piece,
                    padding_len(piece.len(), true, random()),
                    out,
                );
                self.padding = false;
                long = false;
                continue;
            } else if !filter.tls12_or_above && filter.packets_left <= 1 {
                self.padding = false;
                encode_frame(
                    uuid.as_ref(),
                    Command::End,
                    piece,
                    padding_len(piece.len(), long, random()),
                    out,
                );
                for rest in &pieces[i + 1..] {
                    out.extend_from_slice(rest);
                }
                return WriteMode::Plain;
            }
            let command = if i == last && !self.padding {
                ended
            } else {
                Command::Continue
            };
            encode_frame(
                uuid.as_ref(),
                command,
                piece,
                padding_len(piece.len(), long, random()),
                out,
            );
        }
        match (self.padding, ended) {
            (true, _) => WriteMode::Padded,
            (false, Command::Direct) => WriteMode::Direct,
            (false, _) => WriteMode::Plain,
        }
    }
}

/// `data` cut into frame-sized pieces, each cut at the last TLS application-data record
/// start it holds when there is one (as Xray's `ReshapeMultiBuffer`), else in the middle.
fn pieces(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= CONTENT_MAX {
        let window = &rest[..CONTENT_MAX];
        let at = window
            .windows(3)
            .rposition(|w| w == TLS_APPLICATION_DATA)
            .filter(|&i| i >= 21)
            .unwrap_or(FRAME_MAX / 2);
        out.push(&rest[..at]);
        rest = &rest[at..];
    }
    out.push(rest);
    out
}

/// Why the server's padded bytes cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnpadError {
    /// A frame's command is none of continue, end and direct.
    #[error("unknown Vision command {0}")]
    Command(u8),
}

/// Where [`Unpadder`] stands after some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpadded {
    /// Inside padded frames (or not yet sure they are padded).
    Padded,
    /// Padding ended (or never began): bytes are plain, inside the outer TLS.
    Plain,
    /// The frame with the direct command has ended: the server's next bytes arrive beneath
    /// the outer TLS. Bytes given after this point are passed through as plain.
    Direct,
}

/// Takes the padding off what the server sends (Xray's `XtlsUnpadding`), fed in any
/// pieces.
#[derive(Debug, Clone)]
pub struct Unpadder {
    uuid: Uuid,
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Before the first frame: the uuid's bytes seen so far.
    Start(Vec<u8>),
    /// Reading a frame header: its bytes so far.
    Header(Vec<u8>),
    Content {
        command: u8,
        content: usize,
        padding: usize,
    },
    Done(Unpadded),
}

impl Unpadder {
    pub const fn new(uuid: Uuid) -> Self {
        Self {
            uuid,
            state: State::Start(Vec::new()),
        }
    }

    /// Where it stands.
    pub const fn status(&self) -> Unpadded {
        match self.state {
            State::Done(s) => s,
            _ => Unpadded::Padded,
        }
    }

    /// Takes `input` (all of it), appending the content it carries to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<Unpadded, UnpadError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Start(seen) => {
                    let take = (16 - seen.len()).min(input.len());
                    seen.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if seen.len() == 16 {
                        if seen[..] == self.uuid.0 {
                            self.state = State::Header(Vec::with_capacity(5));
                        } else {
                            // Not padded at all (as Xray, which passes such bytes on).
                            out.extend_from_slice(seen);
                            self.state = State::Done(Unpadded::Plain);
                        }
                    }
                }
                State::Header(got) => {
                    let take = (5 - got.len()).min(input.len());
                    got.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if let &[command, c0, c1, p0, p1] = &got[..] {
                        if command > 2 {
                            return Err(UnpadError::Command(command));
                        }
                        self.state = State::Content {
                            command,
                            content: usize::from(u16::from_be_bytes([c0, c1])),
                            padding: usize::from(u16::from_be_bytes([p0, p1])),
                        };
                    }
                }
                State::Content {
                    content, padding, ..
                } => {
                    let take = (*content).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    *content -= take;
                    input = &input[take..];
                    let skip = (*padding).min(input.len());
                    *padding -= skip;
                    input = &input[skip..];
                }
                State::Done(_) => {
                    out.extend_from_slice(input);
                    input = &[];
                }
            }
            // A frame ends when its padding does (at once when it has neither content
            // nor padding); its command says what follows.
            if let State::Content {
                command,
                content: 0,
                padding: 0,
            } = self.state
            {
                self.state = match command {
                    0 => State::Header(Vec::with_capacity(5)),
                    1 => State::Done(Unpadded::Plain),
                    _ => State::Done(Unpadded::Direct),
                };
            }
        }
        Ok(self.status())
    }

    /// Bytes held back while deciding whether the stream is padded at all (fewer than a
    /// uuid's worth, then the end came): they were the server's content.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let State::Start(seen) = &self.state {
            out.extend_from_slice(seen);
            self.state = State::Done(Unpadded::Plain);
        }
    }
}

#[cfg(test)]
mod tests;
