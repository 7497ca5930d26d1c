//! Turning the bytes a client sent as a server name into a name the rules can match, or
//! refusing them. Shared by every sniffer so that "example.COM." means the same everywhere.

use super::Sniffed;

/// Longest name DNS can carry in text form (RFC 1035: 255 octets on the wire).
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// `raw` as a rule-matchable hostname: ASCII letters, digits, `-` and `_` (seen in real
/// names although not strictly hostname syntax), labels of 1..=63 bytes, lower-cased, one
/// trailing dot removed. IP literals are refused: the daemon already has the IP, and a rule
/// written for names must not match "1.2.3.4" by accident; a last label of digits only is
/// how an IPv4 literal (or a non-name) shows, and ':' or '[' never pass the charset.
pub(super) fn hostname(raw: &[u8]) -> Sniffed {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    if raw.is_empty() || raw.len() > MAX_NAME_LEN {
        return Sniffed::NotThis;
    }
    let mut last_label_numeric = false;
    for label in raw.split(|&b| b == b'.') {
        let ok_chars = label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > MAX_LABEL_LEN || !ok_chars {
            return Sniffed::NotThis;
        }
        last_label_numeric = label.iter().all(u8::is_ascii_digit);
    }
    if last_label_numeric {
        return Sniffed::NotThis;
    }
    // All bytes are ASCII (checked above), so this never fails; no unwrap on peer bytes.
    match std::str::from_utf8(raw) {
        Ok(text) => Sniffed::Name(text.to_ascii_lowercase()),
        Err(_) => Sniffed::NotThis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Sniffed {
        Sniffed::Name(s.to_owned())
    }

    #[test]
    fn normalises_case_and_trailing_dot() {
        assert_eq!(hostname(b"Example.COM."), name("example.com"));
        assert_eq!(hostname(b"_dmarc.x-y.example"), name("_dmarc.x-y.example"));
        assert_eq!(hostname(b"localhost"), name("localhost"));
    }

    #[test]
    fn refuses_ip_literals_and_junk() {
        for bad in [
            &b"192.0.2.1"[..],
            b"2001:db8::1",
            b"[2001:db8::1]",
            b"",
            b".",
            b"a..b",
            b".example.com",
            b"example.com..",
            b"exa mple.com",
            b"ex\xc3\xa4mple.com",
            b"a.b/c",
            b"1234",
        ] {
            assert_eq!(
                hostname(bad),
                Sniffed::NotThis,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(hostname(&[b'a'; 64]), Sniffed::NotThis);
        let long = [
            &[b'a'; 63][..],
            b".",
            &[b'b'; 63],
            b".",
            &[b'c'; 63],
            b".",
            &[b'd'; 62],
        ]
        .concat();
        assert_eq!(long.len(), 254);
        assert_eq!(hostname(&long), Sniffed::NotThis);
        assert!(matches!(hostname(&long[..253]), Sniffed::Name(_)));
    }
}
