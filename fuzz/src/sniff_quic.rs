//! Any sequence of UDP datagrams must leave the QUIC sniffer without panicking, and once it
//! gives a final verdict it must keep giving it. The input is a series of datagrams, each
//! prefixed by its length as a big-endian u16 (the format of the captured fixtures).

use tpgate_core::sniff::{quic::QuicSniffer, Sniffed};

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let mut sniffer = QuicSniffer::new();
    let mut last = Sniffed::NeedMore;
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let datagram = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[2 + datagram.len()..];
        let verdict = sniffer.push(datagram);
        if last != Sniffed::NeedMore {
            assert_eq!(verdict, last);
        }
        last = verdict;
    }
}
