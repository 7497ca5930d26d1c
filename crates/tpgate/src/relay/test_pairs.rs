//! Test helpers for the relays: connected pairs of real loopback TCP sockets, and a
//! two-way exchange that checks every byte.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected pair of real loopback TCP sockets.
pub(crate) async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap());
    let (a, b) = tokio::join!(a, l.accept());
    (a.unwrap(), b.unwrap().0)
}

/// A pattern that differs at every offset and between directions.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + i / 251) as u8) ^ salt)
        .collect()
}

/// Through a relay between `client` and `server`: the client sends 3 MB and half-closes
/// while the server sends 2 MB at the same time; then the server, having seen the client's
/// end of file, sends 1 MB more on the half-open connection and closes. Both sides check
/// every byte. Returns the bytes each way (up, down).
pub(crate) async fn exchange_both_ways(client: TcpStream, server: TcpStream) -> (u64, u64) {
    let (up, down, tail) = (
        pattern(3_000_000, 0x5a),
        pattern(2_000_000, 0xa5),
        pattern(1_000_000, 0x3c),
    );
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let client_send = async {
        cw.write_all(&up).await.unwrap();
        cw.shutdown().await.unwrap();
        cw
    };
    let client_recv = async {
        let mut got = Vec::new();
        cr.read_to_end(&mut got).await.unwrap();
        got
    };
    let server = async {
        let write = async {
            sw.write_all(&down).await.unwrap();
        };
        let read = async {
            let mut got = Vec::new();
            sr.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(write, read);
        sw.write_all(&tail).await.unwrap();
        sw.shutdown().await.unwrap();
        got
    };
    let (_cw, back, at_server) = tokio::join!(client_send, client_recv, server);
    assert!(at_server == up, "client -> server bytes differ");
    let mut want = down.clone();
    want.extend_from_slice(&tail);
    assert!(back == want, "server -> client bytes differ");
    (up.len() as u64, want.len() as u64)
}
