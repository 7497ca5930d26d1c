//! The Host of an HTTP/1.x request (RFC 9112 §3.2): the request head is read up to its blank
//! line, within [`MAX_HEAD_LEN`]. HTTP/2 prior knowledge and anything else that is not an
//! HTTP/1.x request line is refused as soon as its first line shows it.

use super::name::hostname;
use super::Sniffed;

/// Longest request head waited for; longer heads are left unsniffed rather than buffered.
pub const MAX_HEAD_LEN: usize = 8 * 1024;
/// Headers parsed per request; a head with more is refused rather than half-read.
const MAX_HEADERS: usize = 128;

/// The Host header of the HTTP/1.x request at the start of `buf` (port stripped), once the
/// head is complete.
pub fn sniff_host(buf: &[u8]) -> Sniffed {
    let head = &buf[..buf.len().min(MAX_HEAD_LEN)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Err(_) => Sniffed::NotThis,
        // httparse validates each byte as it arrives (method token, version "HTTP/1.x"), so
        // a partial head is still a plausible request.
        Ok(httparse::Status::Partial) if head.len() < MAX_HEAD_LEN => Sniffed::NeedMore,
        Ok(httparse::Status::Partial) => Sniffed::NotThis,
        Ok(httparse::Status::Complete(_)) => {
            let mut hosts = request
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("host"));
            match (hosts.next(), hosts.next()) {
                // RFC 9112 §3.2: a request with several Host fields is invalid.
                (Some(host), None) => host_name(host.value),
                _ => Sniffed::NotThis,
            }
        }
    }
}

/// The name part of a Host value: `name[:port]`; bracketed IPv6 literals are IPs, not names.
fn host_name(value: &[u8]) -> Sniffed {
    let value = value.trim_ascii();
    if value.first() == Some(&b'[') {
        return Sniffed::NotThis;
    }
    let name = match value.iter().rposition(|&b| b == b':') {
        Some(colon) if value[colon + 1..].iter().all(u8::is_ascii_digit) => &value[..colon],
        Some(_) => return Sniffed::NotThis,
        None => value,
    };
    hostname(name)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sniff::fixtures;

    fn name(s: &str) -> Sniffed {
        Sniffed::Name(s.to_owned())
    }

    #[test]
    fn real_curl_request_yields_its_host() {
        let request = fixtures::file("curl-http.bin");
        assert_eq!(sniff_host(request), name("http.example.com"));
        for cut in 0..request.len() {
            assert_eq!(
                sniff_host(&request[..cut]),
                Sniffed::NeedMore,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn host_forms() {
        let req = |host: &str| format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(
            sniff_host(req("Example.COM").as_bytes()),
            name("example.com")
        );
        assert_eq!(
            sniff_host(req("example.com:8080").as_bytes()),
            name("example.com")
        );
        assert_eq!(
            sniff_host(req("example.com.:").as_bytes()),
            name("example.com")
        );
        assert_eq!(
            sniff_host(req("[2001:db8::1]:80").as_bytes()),
            Sniffed::NotThis
        );
        assert_eq!(
            sniff_host(req("[2001:db8::1]").as_bytes()),
            Sniffed::NotThis
        );
        assert_eq!(sniff_host(req("192.0.2.1:80").as_bytes()), Sniffed::NotThis);
        assert_eq!(
            sniff_host(req("example.com:http").as_bytes()),
            Sniffed::NotThis
        );
        assert_eq!(sniff_host(req("").as_bytes()), Sniffed::NotThis);
        let two = b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n";
        assert_eq!(sniff_host(two), Sniffed::NotThis);
        let none = b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n";
        assert_eq!(sniff_host(none), Sniffed::NotThis);
        let lower = b"POST /x HTTP/1.0\r\nhost:\texample.org \r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(sniff_host(lower), name("example.org"));
    }

    #[test]
    fn other_protocols_are_refused_by_their_first_line() {
        for other in [
            &b"\x16\x03\x01\x02\x00\x01"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"EHLO mail.example.com\r\n",
            b"GET / SPDY/3\r\n",
        ] {
            assert_eq!(sniff_host(other), Sniffed::NotThis, "{other:?}");
        }
        assert_eq!(sniff_host(b""), Sniffed::NeedMore);
        assert_eq!(sniff_host(b"GE"), Sniffed::NeedMore);
    }

    #[test]
    fn heads_longer_than_the_cap_are_given_up() {
        let mut long = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
        long.resize(MAX_HEAD_LEN + 10, b'a');
        assert_eq!(sniff_host(&long[..MAX_HEAD_LEN - 1]), Sniffed::NeedMore);
        assert_eq!(sniff_host(&long), Sniffed::NotThis);
        long.extend(b"\r\nHost: example.com\r\n\r\n");
        assert_eq!(sniff_host(&long), Sniffed::NotThis);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = sniff_host(&bytes);
        }

        #[test]
        fn any_prefix_of_a_request_needs_more(
            host in "[a-z][a-z0-9-]{0,20}(\\.[a-z0-9]{1,10}){0,3}",
            port in proptest::option::of(any::<u16>()),
            cut in any::<prop::sample::Index>(),
        ) {
            let authority = match port {
                Some(port) => format!("{host}:{port}"),
                None => host.clone(),
            };
            let request = format!("GET /p HTTP/1.1\r\nUser-Agent: t\r\nHost: {authority}\r\n\r\n");
            let expected = if host.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
                Sniffed::NotThis
            } else {
                name(&host)
            };
            prop_assert_eq!(sniff_host(request.as_bytes()), expected);
            let cut = cut.index(request.len());
            prop_assert_eq!(sniff_host(&request.as_bytes()[..cut]), Sniffed::NeedMore);
        }
    }
}
