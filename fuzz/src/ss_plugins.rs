//! What a Shadowsocks plugin's server sends back: simple-obfs TLS mode's fake handshake and
//! records, ShadowTLS v2's application-data records, ShadowTLS v3's handshake (the
//! ServerHello, signed records unwrapped) and signed data records, v2ray-plugin's Mux.Cool
//! frames. Each
//! is walked step by step as the daemon does: no panic, no step claiming more bytes than
//! given where it must have them whole, and the stream's bytes (a data header may announce
//! more than has arrived: those come later) never more than the input. The first byte
//! chooses the parser.

use tpgate_core::proto::mux_cool::{next_frame, Frame};
use tpgate_core::proto::obfs::{Step, TlsObfsReader, RECORD_HEADER};
use tpgate_core::proto::shadow_tls::data_record;
use tpgate_core::proto::shadow_tls::v3;

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut at = 0;
    let mut carried = 0;
    match which % 4 {
        0 => {
            let mut r = TlsObfsReader::default();
            while let Ok(Some(step)) = r.next(&rest[at..]) {
                match step {
                    Step::Skip(n) => {
                        assert!(n <= rest.len() - at, "a skipped record is whole");
                        at += n;
                    }
                    Step::Data(n) => {
                        at += RECORD_HEADER;
                        carried += n.min(rest.len().saturating_sub(at));
                        at += n;
                    }
                }
                if at >= rest.len() {
                    break;
                }
            }
        }
        1 => {
            while let Ok(Some(n)) = data_record(&rest[at..]) {
                at += RECORD_HEADER;
                carried += n.min(rest.len().saturating_sub(at));
                at += n;
                if at >= rest.len() {
                    break;
                }
            }
        }
        3 => {
            // The records as the handshake then the data phase read them.
            let random = v3::server_random(rest).unwrap_or([which; 32]);
            let mut hs = v3::Handshake::new("pw", random);
            if let Ok(unwrapped) = hs.unwrap(rest) {
                assert_eq!(unwrapped.len() + v3::HMAC_LEN, rest.len());
            }
            let (_, mut reader) = hs.into_data("pw");
            while let Ok(Some(next)) = reader.next(&rest[at..]) {
                match next {
                    v3::Next::Skip(n) | v3::Next::End { header: n } => {
                        assert!(n > 0 && n <= rest.len() - at, "a record is whole");
                        at += n;
                    }
                    v3::Next::Data { header, len } => {
                        assert!(header + len <= rest.len() - at, "a data record is whole");
                        at += header;
                        carried += len;
                        at += len;
                    }
                }
                if at >= rest.len() {
                    break;
                }
            }
        }
        _ => {
            while let Ok(Some(frame)) = next_frame(&rest[at..]) {
                match frame {
                    Frame::Skip(n) => {
                        assert!(n > 0 && n <= rest.len() - at, "a skipped frame is whole");
                        at += n;
                    }
                    Frame::Data { header, len } => {
                        assert!(header <= rest.len() - at, "the header has arrived");
                        at += header;
                        carried += len.min(rest.len() - at);
                        at += len;
                    }
                    Frame::End { header } => {
                        assert!(header <= rest.len() - at);
                        break;
                    }
                }
                if at >= rest.len() {
                    break;
                }
            }
        }
    }
    assert!(carried <= rest.len(), "more stream bytes than input");
}
