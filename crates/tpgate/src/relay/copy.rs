//! Bidirectional TCP relay with half-close and an idle timeout. Buffers are allocated once
//! per connection (inside `copy_bidirectional_with_sizes`), never per read.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

const BUF: usize = 64 * 1024;

/// Copies both ways until both sides finished (EOF is passed on as a write shutdown, so a
/// half-closed connection keeps flowing the other way) or nothing moved for `idle`.
/// Returns bytes (client->server, server->client), or the error that ended it.
pub(super) async fn relay<A, B>(a: A, b: B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Tracked {
        inner: a,
        last: last.clone(),
        start,
    };
    let mut b = Tracked {
        inner: b,
        last: last.clone(),
        start,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUF, BUF);
    tokio::pin!(copy);
    let mut deadline = start + idle;
    loop {
        tokio::select! {
            r = &mut copy => return r,
            () = tokio::time::sleep_until(deadline) => {
                let seen = start + Duration::from_millis(last.load(Ordering::Relaxed));
                if seen + idle <= Instant::now() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                }
                deadline = seen + idle;
            }
        }
    }
}

/// A stream that records when it last moved data.
struct Tracked<S> {
    inner: S,
    /// Milliseconds since `start` of the last read or write that moved bytes.
    last: Arc<AtomicU64>,
    start: Instant,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair of real loopback TCP sockets.
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap());
        let (a, b) = tokio::join!(a, l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_flowing() {
        let (client, proxy_a) = pair().await;
        let (proxy_b, server) = pair().await;
        let relay = tokio::spawn(relay(proxy_a, proxy_b, Duration::from_secs(5)));
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            cw.write_all(&sent).await.unwrap();
            cw.shutdown().await.unwrap();
            cw
        });
        // The server reads to the client's EOF, then answers on the half-open connection.
        let mut got = Vec::new();
        sr.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        sw.write_all(&got).await.unwrap();
        sw.shutdown().await.unwrap();
        let mut back = Vec::new();
        cr.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, data);
        let _cw = writer.await.unwrap();
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!((up, down), (data.len() as u64, data.len() as u64));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_time_out_and_active_ones_do_not() {
        let (mut client, proxy_a) = tokio::io::duplex(64);
        let (proxy_b, mut server) = tokio::io::duplex(64);
        let relay = tokio::spawn(relay(proxy_a, proxy_b, Duration::from_secs(10)));
        // Activity every 6 s keeps it alive past the 10 s idle limit.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            server.read_exact(&mut b).await.unwrap();
        }
        assert!(!relay.is_finished());
        tokio::time::sleep(Duration::from_secs(11)).await;
        let err = relay.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
