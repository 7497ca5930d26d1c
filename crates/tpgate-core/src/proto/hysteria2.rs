//! Hysteria 2 client framing (apernet/hysteria `PROTOCOL.md`): the TCPRequest that opens
//! each QUIC stream and the TCPResponse the server answers with, the UDPMessage carried in
//! QUIC datagrams (with fragmentation and the reassembly of fragments), the meaning of the
//! authentication response's headers, and the "Salamander" packet obfuscation.
//!
//! QUIC, TLS and the HTTP/3 request that authenticates a connection are the caller's; so is
//! randomness (padding and salts are passed in).

use std::fmt;

use blake2::{Blake2b, Digest as _};
use thiserror::Error;

use crate::net::Destination;

/// The varint that opens a TCPRequest.
pub const TCP_REQUEST_ID: u64 = 0x401;
/// The status a server answers a successful `/auth` request with.
pub const AUTH_OK_STATUS: u16 = 233;
/// Salamander's salt, in front of every obfuscated packet.
pub const SALT_LEN: usize = 8;
/// Longest message or padding tpgate accepts in a TCPResponse: the server's are a few
/// dozen bytes; anything near this is not a Hysteria server.
const MAX_FIELD: u64 = 64 * 1024;
/// Longest address string in a UDPMessage (a host name of 255 bytes, a port, brackets).
const MAX_ADDR: u64 = 2048;

/// Appends `v` as a QUIC variable-length integer (RFC 9000 §16). Values of 2^62 and more
/// do not exist in QUIC; they are clamped (nothing tpgate sends comes near).
pub fn put_varint(v: u64, out: &mut Vec<u8>) {
    match v {
        0..=0x3f => out.push(v as u8),
        0x40..=0x3fff => out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes()),
        0x4000..=0x3fff_ffff => out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v.min((1 << 62) - 1) | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// Bytes [`put_varint`] writes for `v`.
pub const fn varint_len(v: u64) -> usize {
    match v {
        0..=0x3f => 1,
        0x40..=0x3fff => 2,
        0x4000..=0x3fff_ffff => 4,
        _ => 8,
    }
}

/// A varint at the front of `buf`: `None` until all its bytes are there.
pub fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let v = bytes[1..]
        .iter()
        .fold(u64::from(first & 0x3f), |acc, b| (acc << 8) | u64::from(*b));
    Some((v, len))
}

/// The TCPRequest for `dst` (`host:port`, an IPv6 literal in brackets), with `padding`.
pub fn encode_tcp_request(dst: &Destination, padding: &[u8], out: &mut Vec<u8>) {
    let addr = dst.to_string();
    put_varint(TCP_REQUEST_ID, out);
    put_varint(addr.len() as u64, out);
    out.extend_from_slice(addr.as_bytes());
    put_varint(padding.len() as u64, out);
    out.extend_from_slice(padding);
}

/// The server's answer to a TCPRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpResponse {
    /// Status 0: the server connected to the destination and relays from now on.
    pub ok: bool,
    /// The server's reason, when it failed (lossy UTF-8).
    pub message: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TcpResponseError {
    #[error("unknown status {0} in the server's TCPResponse")]
    Status(u8),
    #[error("the server's TCPResponse has a field of {0} bytes")]
    TooLong(u64),
}

/// A TCPResponse at the front of `buf`: `Ok(None)` while incomplete; bytes past the
/// consumed count are the destination's.
pub fn parse_tcp_response(buf: &[u8]) -> Result<Option<(TcpResponse, usize)>, TcpResponseError> {
    let Some(&status) = buf.first() else {
        return Ok(None);
    };
    if status > 1 {
        return Err(TcpResponseError::Status(status));
    }
    let mut at = 1;
    let mut message = String::new();
    for field in 0..2 {
        let Some((len, n)) = varint(&buf[at..]) else {
            return Ok(None);
        };
        if len > MAX_FIELD {
            return Err(TcpResponseError::TooLong(len));
        }
        at += n;
        let Some(bytes) = buf.get(at..at + len as usize) else {
            return Ok(None);
        };
        if field == 0 {
            message = String::from_utf8_lossy(bytes).into_owned();
        }
        at += len as usize;
    }
    Ok(Some((
        TcpResponse {
            ok: status == 0,
            message,
        },
        at,
    )))
}

/// One UDPMessage (one datagram, or one fragment of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpMessage<'a> {
    pub session: u32,
    pub packet: u16,
    pub fragment: u8,
    pub fragments: u8,
    /// `host:port`.
    pub addr: &'a str,
    pub payload: &'a [u8],
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UdpError {
    #[error("a UDPMessage shorter than its header")]
    Truncated,
    #[error("a UDPMessage with fragment {fragment} of {fragments}")]
    Fragment { fragment: u8, fragments: u8 },
    #[error("a UDPMessage address of {0} bytes")]
    AddrLength(u64),
    #[error("a UDPMessage address that is not text")]
    AddrText,
    #[error("a datagram of {len} bytes needs more than 255 fragments of {room}")]
    TooLong { len: usize, room: usize },
    #[error("a UDPMessage may be {max} bytes, its header alone is {header}")]
    NoRoom { max: usize, header: usize },
}

/// Parses one QUIC datagram as a UDPMessage.
pub fn parse_udp_message(buf: &[u8]) -> Result<UdpMessage<'_>, UdpError> {
    let head = buf.get(..8).ok_or(UdpError::Truncated)?;
    let session = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let packet = u16::from_be_bytes([head[4], head[5]]);
    let (fragment, fragments) = (head[6], head[7]);
    if fragments == 0 || fragment >= fragments {
        return Err(UdpError::Fragment {
            fragment,
            fragments,
        });
    }
    let (len, n) = varint(&buf[8..]).ok_or(UdpError::Truncated)?;
    if len > MAX_ADDR {
        return Err(UdpError::AddrLength(len));
    }
    let start = 8 + n;
    let addr = buf
        .get(start..start + len as usize)
        .ok_or(UdpError::Truncated)?;
    let addr = std::str::from_utf8(addr).map_err(|_| UdpError::AddrText)?;
    Ok(UdpMessage {
        session,
        packet,
        fragment,
        fragments,
        addr,
        payload: &buf[start + len as usize..],
    })
}

/// Frames `payload` to `addr` as UDPMessages of at most `max` bytes each (QUIC's datagram
/// room), one per fragment, each handed to `emit`. Nothing is emitted on error.
pub fn encode_udp_message(
    session: u32,
    packet: u16,
    addr: &str,
    payload: &[u8],
    max: usize,
    mut emit: impl FnMut(Vec<u8>),
) -> Result<(), UdpError> {
    let header = 8 + varint_len(addr.len() as u64) + addr.len();
    let room = max.saturating_sub(header);
    if room == 0 {
        return Err(UdpError::NoRoom { max, header });
    }
    let count = payload.len().div_ceil(room).max(1);
    let fragments = u8::try_from(count).map_err(|_| UdpError::TooLong {
        len: payload.len(),
        room,
    })?;
    let mut pieces = payload.chunks(room);
    for fragment in 0..fragments {
        let piece = pieces.next().unwrap_or_default();
        let mut m = Vec::with_capacity(header + piece.len());
        m.extend_from_slice(&session.to_be_bytes());
        m.extend_from_slice(&packet.to_be_bytes());
        m.extend_from_slice(&[fragment, fragments]);
        put_varint(addr.len() as u64, &mut m);
        m.extend_from_slice(addr.as_bytes());
        m.extend_from_slice(piece);
        emit(m);
    }
    Ok(())
}

/// Reassembles one session's fragmented datagrams (see [`super::fragments`]).
pub use super::fragments::Defragger;

impl<'a> From<&UdpMessage<'a>> for super::fragments::Piece<'a> {
    fn from(m: &UdpMessage<'a>) -> Self {
        Self {
            packet: m.packet,
            fragment: m.fragment,
            fragments: m.fragments,
            payload: m.payload,
        }
    }
}

/// What a successful authentication response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthOk {
    /// `Hysteria-UDP: true`: the server relays UDP.
    pub udp: bool,
    /// `Hysteria-CC-RX`: the server's receive rate in bytes per second; `None` for `auto`
    /// (the client must run its own congestion control); `Some(0)`: unlimited.
    pub rx: Option<u64>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    /// Anything but 233: a wrong password, or not a Hysteria server (which answers as a web
    /// server would).
    #[error("the server answered the authentication with HTTP status {0}, not 233 (wrong password, or not a Hysteria 2 server)")]
    Status(u16),
}

/// Reads the authentication response from its status and two headers.
pub fn auth_response(
    status: u16,
    udp: Option<&str>,
    cc_rx: Option<&str>,
) -> Result<AuthOk, AuthError> {
    if status != AUTH_OK_STATUS {
        return Err(AuthError::Status(status));
    }
    let udp = udp.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let rx = match cc_rx.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("auto") => None,
        Some(v) => Some(v.parse().unwrap_or(0)),
        None => Some(0),
    };
    Ok(AuthOk { udp, rx })
}

/// The rate the client sends at: the server's receive rate capped by the client's `up`;
/// `None` means "use a congestion controller" (the server said `auto`, or the client gave
/// no `up`).
pub const fn send_rate(auth: AuthOk, up: u64) -> Option<u64> {
    match auth.rx {
        None => None,
        Some(_) if up == 0 => None,
        Some(0) => Some(up),
        Some(rx) if rx < up => Some(rx),
        Some(_) => Some(up),
    }
}

/// Brutal's window: one round trip's worth of `rate` (bytes per second), grown by the
/// share of bytes lost (`ack_rate` is the share acknowledged, at least 0.8), never under
/// ten packets. Before the first round trip is measured, 100 ms is assumed.
pub fn brutal_window(rate: u64, srtt_ms: u64, ack_rate: f64, mtu: u16) -> u64 {
    let rtt = if srtt_ms == 0 { 100 } else { srtt_ms };
    let bdp = rate.saturating_mul(rtt) / 1000;
    let window = (bdp as f64 / ack_rate.clamp(MIN_ACK_RATE, 1.0)) as u64;
    window.max(10 * u64::from(mtu))
}

/// Brutal never assumes more than a fifth of what it sends is lost.
const MIN_ACK_RATE: f64 = 0.8;
/// Seconds of history the acknowledged share is measured over.
const ACK_SLOTS: usize = 5;
/// Below this many bytes of history the share is taken as 1 (too few samples).
const ACK_MIN_BYTES: u64 = 50 * 1200;

/// The share of bytes acknowledged (rather than lost) over the last [`ACK_SLOTS`] seconds,
/// one slot per second.
#[derive(Debug, Clone, Default)]
pub struct AckRate {
    start: Option<std::time::Instant>,
    /// (second since start, bytes acked, bytes lost).
    slots: [(u64, u64, u64); ACK_SLOTS],
}

impl AckRate {
    fn second(&mut self, now: std::time::Instant) -> &mut (u64, u64, u64) {
        let start = *self.start.get_or_insert(now);
        let sec = now.saturating_duration_since(start).as_secs() + 1;
        let slot = &mut self.slots[(sec % ACK_SLOTS as u64) as usize];
        if slot.0 != sec {
            *slot = (sec, 0, 0);
        }
        slot
    }

    pub fn ack(&mut self, now: std::time::Instant, bytes: u64) {
        self.second(now).1 += bytes;
    }

    pub fn loss(&mut self, now: std::time::Instant, bytes: u64) {
        self.second(now).2 += bytes;
    }

    /// The share acknowledged, between [`MIN_ACK_RATE`] and 1.
    pub fn rate(&self, now: std::time::Instant) -> f64 {
        let Some(start) = self.start else {
            return 1.0;
        };
        let sec = now.saturating_duration_since(start).as_secs() + 1;
        let (acked, lost) = self
            .slots
            .iter()
            .filter(|s| s.0 != 0 && s.0 + ACK_SLOTS as u64 > sec)
            .fold((0u64, 0u64), |(a, l), s| (a + s.1, l + s.2));
        if acked + lost < ACK_MIN_BYTES {
            return 1.0;
        }
        (acked as f64 / (acked + lost) as f64).max(MIN_ACK_RATE)
    }
}

/// "Salamander": every QUIC packet becomes `salt ‖ packet XOR BLAKE2b-256(key ‖ salt)`
/// (the 32-byte hash repeated).
#[derive(Clone)]
pub struct Salamander {
    key: Vec<u8>,
}

impl fmt::Debug for Salamander {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Salamander(..)")
    }
}

impl Salamander {
    pub fn new(password: &str) -> Self {
        Self {
            key: password.as_bytes().to_vec(),
        }
    }

    fn mask(&self, salt: &[u8], data: &mut [u8]) {
        let mut h = Blake2b::<blake2::digest::consts::U32>::new();
        h.update(&self.key);
        h.update(salt);
        let hash = h.finalize();
        for (b, k) in data.iter_mut().zip(hash.iter().cycle()) {
            *b ^= k;
        }
    }

    /// Obfuscates `packet` in place: `packet` holds [`SALT_LEN`] bytes of room in front
    /// (which become the salt) and then the QUIC packet.
    pub fn seal(&self, salt: [u8; SALT_LEN], packet: &mut [u8]) {
        if packet.len() < SALT_LEN {
            return;
        }
        let (head, body) = packet.split_at_mut(SALT_LEN);
        head.copy_from_slice(&salt);
        self.mask(&salt, body);
    }

    /// Undoes [`seal`](Self::seal) in place; the QUIC packet is then `packet[SALT_LEN..]`.
    /// `false` (nothing changed) for a packet too short to carry a salt: drop it.
    pub fn open(&self, packet: &mut [u8]) -> bool {
        if packet.len() <= SALT_LEN {
            return false;
        }
        let (salt, body) = packet.split_at_mut(SALT_LEN);
        self.mask(salt, body);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dst(s: &str) -> Destination {
        Destination::Addr(s.parse().unwrap())
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for v in [
            0,
            63,
            64,
            16383,
            16384,
            (1 << 30) - 1,
            1 << 30,
            (1 << 62) - 1,
        ] {
            let mut b = Vec::new();
            put_varint(v, &mut b);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(varint(&b), Some((v, b.len())));
            assert_eq!(varint(&b[..b.len() - 1]), None);
        }
        // RFC 9000 §A.1's examples.
        assert_eq!(varint(&[0x40, 0x25]), Some((37, 2)));
        assert_eq!(varint(&[0x9d, 0x7f, 0x3e, 0x7d]), Some((494_878_333, 4)));
    }

    #[test]
    fn a_tcp_request_names_host_and_port() {
        let mut b = Vec::new();
        encode_tcp_request(&dst("[2001:db8::1]:443"), b"pad", &mut b);
        assert_eq!(&b[..2], &[0x44, 0x01]);
        assert_eq!(b[2] as usize, "[2001:db8::1]:443".len());
        assert_eq!(&b[3..20], b"[2001:db8::1]:443");
        assert_eq!(&b[20..], b"\x03pad");
        let mut d = Vec::new();
        encode_tcp_request(&Destination::Domain("example.org".into(), 80), &[], &mut d);
        assert_eq!(&d[3..17], b"example.org:80");
        assert_eq!(d[17], 0);
    }

    #[test]
    fn tcp_responses_wait_for_all_their_bytes() {
        let whole = b"\x00\x02ok\x03xyzDATA";
        for cut in 0..whole.len() - 4 {
            assert_eq!(parse_tcp_response(&whole[..cut]), Ok(None), "cut {cut}");
        }
        let (r, n) = parse_tcp_response(whole).unwrap().unwrap();
        assert!(r.ok);
        assert_eq!(r.message, "ok");
        assert_eq!(&whole[n..], b"DATA");
        let (r, _) = parse_tcp_response(b"\x01\x07refused\x00").unwrap().unwrap();
        assert!(!r.ok);
        assert_eq!(r.message, "refused");
        assert_eq!(
            parse_tcp_response(b"\x48"),
            Err(TcpResponseError::Status(0x48))
        );
        assert_eq!(
            parse_tcp_response(b"\x00\xbf\xff\xff\xff"),
            Err(TcpResponseError::TooLong(0x3fff_ffff))
        );
    }

    #[test]
    fn a_datagram_that_fits_is_one_message() {
        let mut out = Vec::new();
        encode_udp_message(7, 9, "198.51.100.1:53", b"query", 1200, |m| out.push(m)).unwrap();
        assert_eq!(out.len(), 1);
        let m = parse_udp_message(&out[0]).unwrap();
        assert_eq!(
            (m.session, m.fragment, m.fragments, m.addr, m.payload),
            (7, 0, 1, "198.51.100.1:53", &b"query"[..])
        );
    }

    #[test]
    fn long_datagrams_are_fragmented_and_reassembled_in_any_order() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        encode_udp_message(1, 5, "[2001:db8:2::2]:9000", &payload, 1197, |m| {
            out.push(m)
        })
        .unwrap();
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|m| m.len() <= 1197));
        let mut d = Defragger::default();
        assert_eq!(d.push(&parse_udp_message(&out[2]).unwrap()), None);
        assert_eq!(d.push(&parse_udp_message(&out[0]).unwrap()), None);
        assert_eq!(d.push(&parse_udp_message(&out[0]).unwrap()), None);
        assert_eq!(d.push(&parse_udp_message(&out[1]).unwrap()), Some(payload));
    }

    #[test]
    fn a_newer_packet_drops_an_unfinished_one() {
        let mut a = Vec::new();
        encode_udp_message(1, 1, "h:1", &[1; 100], 60, |m| a.push(m)).unwrap();
        let mut b = Vec::new();
        encode_udp_message(1, 2, "h:1", &[2; 100], 60, |m| b.push(m)).unwrap();
        let mut d = Defragger::default();
        d.push(&parse_udp_message(&a[0]).unwrap());
        for m in &b[..b.len() - 1] {
            assert_eq!(d.push(&parse_udp_message(m).unwrap()), None);
        }
        // a's other pieces now belong to nothing.
        assert_eq!(d.push(&parse_udp_message(&a[1]).unwrap()), None);
        let last = parse_udp_message(b.last().unwrap()).unwrap();
        assert_eq!(d.push(&last), None, "a[1] restarted the reassembly");
    }

    #[test]
    fn framing_limits_are_errors() {
        let mut n = 0;
        assert!(matches!(
            encode_udp_message(1, 1, "host:1", b"x", 10, |_| n += 1),
            Err(UdpError::NoRoom { .. })
        ));
        assert!(matches!(
            encode_udp_message(1, 1, "h:1", &[0; 10_000], 20, |_| n += 1),
            Err(UdpError::TooLong { .. })
        ));
        assert_eq!(n, 0);
        assert_eq!(parse_udp_message(&[0; 7]), Err(UdpError::Truncated));
        assert!(matches!(
            parse_udp_message(&[0, 0, 0, 1, 0, 1, 2, 2, 0]),
            Err(UdpError::Fragment { .. })
        ));
        assert_eq!(
            parse_udp_message(&[0, 0, 0, 1, 0, 1, 0, 1, 2, 0xff, 0xfe]),
            Err(UdpError::AddrText)
        );
    }

    #[test]
    fn auth_responses() {
        let ok = auth_response(233, Some("true"), Some("auto")).unwrap();
        assert_eq!(
            ok,
            AuthOk {
                udp: true,
                rx: None
            }
        );
        let ok = auth_response(233, None, Some("1250000")).unwrap();
        assert_eq!(
            ok,
            AuthOk {
                udp: false,
                rx: Some(1_250_000)
            }
        );
        assert_eq!(send_rate(ok, 0), None);
        assert_eq!(send_rate(ok, 10_000_000), Some(1_250_000));
        assert_eq!(send_rate(ok, 1000), Some(1000));
        assert_eq!(
            send_rate(
                AuthOk {
                    udp: true,
                    rx: Some(0)
                },
                5
            ),
            Some(5)
        );
        assert_eq!(auth_response(404, None, None), Err(AuthError::Status(404)));
    }

    #[test]
    fn salamander_matches_its_definition() {
        let s = Salamander::new("secret");
        let quic = b"a QUIC packet of some length, longer than thirty-two bytes".to_vec();
        let mut p = vec![0u8; SALT_LEN];
        p.extend_from_slice(&quic);
        s.seal([1, 2, 3, 4, 5, 6, 7, 8], &mut p);
        assert_eq!(&p[..SALT_LEN], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut h = Blake2b::<blake2::digest::consts::U32>::new();
        h.update(b"secret");
        h.update([1, 2, 3, 4, 5, 6, 7, 8]);
        let hash = h.finalize();
        for (i, b) in p[SALT_LEN..].iter().enumerate() {
            assert_eq!(*b, quic[i] ^ hash[i % 32]);
        }
        assert!(s.open(&mut p));
        assert_eq!(&p[SALT_LEN..], &quic[..]);
        assert!(!s.open(&mut [0; SALT_LEN]));
    }

    #[test]
    fn brutal_sends_the_rate_and_makes_up_for_losses() {
        let mb = 1 << 20;
        assert_eq!(brutal_window(10 * mb, 50, 1.0, 1200), 10 * mb / 20);
        assert_eq!(brutal_window(10 * mb, 50, 0.8, 1200), 10 * mb / 16);
        assert_eq!(
            brutal_window(10 * mb, 50, 0.1, 1200),
            10 * mb / 16,
            "at most 20 % loss"
        );
        assert_eq!(
            brutal_window(1000, 50, 1.0, 1200),
            12_000,
            "ten packets at least"
        );
        assert_eq!(
            brutal_window(10 * mb, 0, 1.0, 1200),
            mb,
            "100 ms before a measurement"
        );
    }

    #[test]
    fn the_ack_rate_covers_the_last_five_seconds() {
        let t0 = std::time::Instant::now();
        let s = std::time::Duration::from_secs;
        let mut a = AckRate::default();
        assert_eq!(a.rate(t0), 1.0);
        a.ack(t0, 1000);
        a.loss(t0, 1000);
        assert_eq!(a.rate(t0), 1.0, "too few samples");
        a.ack(t0 + s(1), 90_000);
        a.loss(t0 + s(1), 10_000);
        let r = a.rate(t0 + s(1));
        assert!((r - 91.0 / 102.0).abs() < 1e-9, "{r}");
        a.ack(t0 + s(2), 200_000);
        a.loss(t0 + s(2), 100_000);
        assert_eq!(a.rate(t0 + s(2)), 0.8, "floored");
        // Six seconds later the old slots have left the window.
        a.ack(t0 + s(8), 100_000);
        assert_eq!(a.rate(t0 + s(8)), 1.0);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_tcp_response(&data);
            let _ = parse_udp_message(&data);
            let _ = varint(&data);
        }

        #[test]
        fn fragments_reassemble(len in 0usize..5000, max in 40usize..1400, session: u32, packet: u16) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            if encode_udp_message(session, packet, "[2001:db8::9]:53", &payload, max, |m| out.push(m)).is_ok() {
                let mut d = Defragger::default();
                let mut whole = None;
                for m in &out {
                    prop_assert!(m.len() <= max);
                    let m = parse_udp_message(m).unwrap();
                    prop_assert_eq!(m.session, session);
                    whole = d.push(&m);
                }
                prop_assert_eq!(whole, Some(payload));
            }
        }
    }
}
