//! The framings against scripted server bytes, fed one byte at a time: what goes out, what
//! comes back, and how a refusal or a silent server ends the stream.

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

fn pair(framing: Framing) -> (Framed, DuplexStream) {
    let (client, server) = duplex(64 * 1024);
    (Framed::new(Box::new(client), framing), server)
}

/// Sends `bytes` one at a time, so every parser sees every split.
async fn dribble(server: &mut DuplexStream, bytes: &[u8]) {
    for b in bytes {
        server.write_all(&[*b]).await.unwrap();
    }
}

async fn read_n(r: &mut Framed, n: usize) -> Vec<u8> {
    let mut got = vec![0; n];
    r.read_exact(&mut got).await.unwrap();
    got
}

#[tokio::test]
async fn obfs_http_request_then_raw() {
    let framing = Framing::ObfsHttp {
        host: "h.test".into(),
        port: 8388,
    };
    let (mut c, mut s) = pair(framing);
    c.write_all(b"hello").await.unwrap();
    c.flush().await.unwrap();
    let mut req = vec![0; 4096];
    let n = s.read(&mut req).await.unwrap();
    let req = String::from_utf8_lossy(&req[..n]).into_owned();
    assert!(
        req.starts_with("GET / HTTP/1.1\r\nHost: h.test:8388\r\n"),
        "{req}"
    );
    assert!(req.ends_with("Content-Length: 5\r\n\r\nhello"), "{req}");
    let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\n\r\nworld";
    dribble(&mut s, answer).await;
    assert_eq!(read_n(&mut c, 5).await, b"world");
    c.write_all(b"raw").await.unwrap();
    c.flush().await.unwrap();
    let mut raw = [0; 3];
    s.read_exact(&mut raw).await.unwrap();
    assert_eq!(&raw, b"raw");
}

#[tokio::test]
async fn obfs_http_refusal_and_silence_are_errors() {
    let (mut c, mut s) = pair(Framing::ObfsHttp {
        host: "h".into(),
        port: 80,
    });
    c.write_all(b"x").await.unwrap();
    s.write_all(b"HTTP/1.1 404 Not Found\r\n\r\n")
        .await
        .unwrap();
    let e = c.read(&mut [0; 8]).await.unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
    let (mut c, s) = pair(Framing::ObfsTls { host: "h".into() });
    drop(s);
    let e = c.read(&mut [0; 8]).await.unwrap_err();
    assert!(e.to_string().contains("without a reply"), "{e}");
}

#[tokio::test]
async fn obfs_tls_hello_records_and_answer() {
    let (mut c, mut s) = pair(Framing::ObfsTls {
        host: "h.test".into(),
    });
    c.write_all(b"first").await.unwrap();
    c.write_all(b"second").await.unwrap();
    c.flush().await.unwrap();
    let mut hello = vec![0; 5];
    s.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello[..3], &[0x16, 3, 1]);
    let mut body = vec![0; usize::from(u16::from_be_bytes([hello[3], hello[4]]))];
    s.read_exact(&mut body).await.unwrap();
    assert!(body.windows(5).any(|w| w == b"first"));
    let mut rec = [0; 11];
    s.read_exact(&mut rec).await.unwrap();
    assert_eq!(rec, *b"\x17\x03\x03\x00\x06second");
    let mut answer = vec![0x16, 3, 1, 0, 91, 2];
    answer.extend_from_slice(&[0; 90]);
    answer.extend_from_slice(&[0x14, 3, 3, 0, 1, 1, 0x16, 3, 3, 0, 2, b'o', b'k']);
    answer.extend_from_slice(&[0x17, 3, 3, 0, 3, b'y', b'e', b's']);
    dribble(&mut s, &answer).await;
    drop(s);
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"okyes");
}

#[tokio::test]
async fn shadow_tls_first_record_carries_the_mac() {
    let (mut c, mut s) = pair(Framing::ShadowTls { mac: Some([9; 8]) });
    c.write_all(b"ab").await.unwrap();
    c.write_all(b"cd").await.unwrap();
    c.flush().await.unwrap();
    let mut out = [0; 22];
    s.read_exact(&mut out).await.unwrap();
    assert_eq!(
        &out[..15],
        b"\x17\x03\x03\x00\x0a\x09\x09\x09\x09\x09\x09\x09\x09ab"
    );
    assert_eq!(&out[15..], b"\x17\x03\x03\x00\x02cd");
    dribble(
        &mut s,
        b"\x17\x03\x03\x00\x02hi\x15\x03\x03\x00\x02\x02\x28",
    )
    .await;
    assert_eq!(read_n(&mut c, 2).await, b"hi");
    let e = c.read(&mut [0; 8]).await.unwrap_err();
    assert!(e.to_string().contains("alert"), "{e}");
}

#[tokio::test]
async fn mux_cool_session() {
    let (mut c, mut s) = pair(Framing::MuxCool);
    c.write_all(b"up").await.unwrap();
    c.shutdown().await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert_eq!(
        out,
        [
            &[0, 12, 0, 0, 1, 0, 1, 0, 0, 1, 127, 0, 0, 1][..],
            &[0, 4, 0, 0, 2, 1, 0, 2, b'u', b'p'],
            &[0, 4, 0, 0, 3, 0],
        ]
        .concat()
    );
    // Data, a keep-alive, data for another session, data, the end.
    let answer = [
        &[0, 4, 0, 0, 2, 1, 0, 3, b'o', b'n', b'e'][..],
        &[0, 4, 0, 0, 4, 0],
        &[0, 4, 0, 7, 2, 1, 0, 1, b'x'],
        &[0, 4, 0, 0, 2, 1, 0, 3, b't', b'w', b'o'],
        &[0, 4, 0, 0, 3, 0],
    ]
    .concat();
    dribble(&mut s, &answer).await;
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"onetwo");
    // The session ended before any data: the server refused.
    let (mut c, mut s) = pair(Framing::MuxCool);
    s.write_all(&[0, 4, 0, 0, 3, 0]).await.unwrap();
    let e = c.read(&mut [0; 8]).await.unwrap_err();
    assert!(e.to_string().contains("without a reply"), "{e}");
}
