//! Bidirectional relay for streams that are not two plain sockets (a proxied connection: a
//! TLS, Shadowsocks or SOCKS stream on one side), with half-close and an idle timeout. A
//! direction holds a buffer only while bytes are in flight: it takes one from a shared pool
//! when its source has data and gives it back as soon as the source has nothing more, so an
//! idle connection holds no buffer at all. Two plain sockets use [`super::splice`] instead.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::registry::Counters;
use super::{Broken, Failed};

/// Large enough that a bulk transfer moves in few system calls (and whole 2022-cipher
/// chunks), small enough to be cheap while a burst lasts.
const BUF: usize = 64 * 1024;

/// The buffers of every copying relay.
static POOL: BufPool = BufPool::new(BUF, 64);

/// After one direction has ended, how long the other may sit with bytes it cannot write
/// before the flow ends: its peer closed its side and stopped reading (a proxy server
/// that passed a destination's reset on as a plain end of stream, and never stops the
/// upload). A flow whose other direction still moves, or waits for bytes to read, is not
/// affected.
const HALF_CLOSED_STALL: Duration = Duration::from_secs(5);

/// Reusable buffers, bounded; counts the ones handed out.
pub(super) struct BufPool {
    free: Mutex<Vec<Box<[u8]>>>,
    size: usize,
    keep: usize,
    /// Buffers taken and not given back: what relays hold right now.
    out: AtomicUsize,
}

impl BufPool {
    pub(super) const fn new(size: usize, keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            size,
            keep,
            out: AtomicUsize::new(0),
        }
    }

    fn take(&self) -> Box<[u8]> {
        self.out.fetch_add(1, Ordering::Relaxed);
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        reused.unwrap_or_else(|| vec![0; self.size].into_boxed_slice())
    }

    fn give_back(&self, buf: Box<[u8]>) {
        self.out.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut f) = self.free.lock() {
            if f.len() < self.keep {
                f.push(buf);
            }
        }
    }

    /// How many buffers relays hold now.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.out.load(Ordering::Relaxed)
    }
}

/// Copies both ways between the client `a` and the server side `b` until both sides
/// finished (EOF is passed on as a write shutdown, so a half-closed connection keeps flowing
/// the other way), nothing moved for `idle`, or one way ended and the other could not write
/// for [`HALF_CLOSED_STALL`]. Returns bytes (a->b, b->a), or what ended it.
/// `counters` (up: a->b) follow the bytes while it runs.
pub(super) async fn relay<A, B>(
    a: A,
    b: B,
    idle: Duration,
    counters: &Counters,
) -> Result<(u64, u64), Broken>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    relay_with(&POOL, a, b, idle, counters).await
}

pub(super) async fn relay_with<A, B>(
    pool: &BufPool,
    a: A,
    b: B,
    idle: Duration,
    counters: &Counters,
) -> Result<(u64, u64), Broken>
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
    let (up_state, down_state) = (DirState::new(), DirState::new());
    let (mut ab, mut ba) = (
        OneWay::new(pool, &counters.up, &up_state, start),
        OneWay::new(pool, &counters.down, &down_state, start),
    );
    // `Ok(None)` once, when the first way ends: the timer then starts watching the other.
    let mut told = false;
    let copy = poll_fn(|cx| {
        let up = ab.poll(cx, &mut a, &mut b).map_err(|f| f.broken(true))?;
        let down = ba.poll(cx, &mut b, &mut a).map_err(|f| f.broken(false))?;
        match (up, down) {
            (Poll::Ready(up), Poll::Ready(down)) => Poll::Ready(Ok(Some((up, down)))),
            (Poll::Ready(_), Poll::Pending) | (Poll::Pending, Poll::Ready(_)) if !told => {
                told = true;
                Poll::Ready(Ok(None))
            }
            _ => Poll::Pending,
        }
    });
    tokio::pin!(copy);
    let mut deadline = start + idle;
    loop {
        // While one way has ended, look at the other every second.
        let half_closed = up_state.done() || down_state.done();
        let wake = if half_closed {
            deadline.min(Instant::now() + Duration::from_secs(1))
        } else {
            deadline
        };
        tokio::select! {
            r = &mut copy => match r {
                Ok(Some(moved)) => return Ok(moved),
                Ok(None) => {}
                Err(e) => return Err(e),
            },
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if down_state.done() && up_state.stalled(start, now) {
                    return Err(Broken::Server(stalled("the server")));
                }
                if up_state.done() && down_state.stalled(start, now) {
                    return Err(Broken::Client(stalled("the client")));
                }
                let seen = start + Duration::from_millis(last.load(Ordering::Relaxed));
                if seen + idle <= now {
                    return Err(Broken::Idle);
                }
                deadline = seen + idle;
            }
        }
    }
}

fn stalled(who: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{who} ended its side and took no more data for {} s",
            HALF_CLOSED_STALL.as_secs()
        ),
    )
}

/// What the relay's timer sees of one direction.
struct DirState {
    /// The direction has ended (its write side shut down).
    done: std::sync::atomic::AtomicBool,
    /// Milliseconds since the relay's start when a write with bytes waiting first found
    /// the sink full; `u64::MAX` while writes are moving (or nothing waits).
    blocked_since: AtomicU64,
}

impl DirState {
    fn new() -> Self {
        Self {
            done: std::sync::atomic::AtomicBool::new(false),
            blocked_since: AtomicU64::new(u64::MAX),
        }
    }

    fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    fn stalled(&self, start: Instant, now: Instant) -> bool {
        let since = self.blocked_since.load(Ordering::Relaxed);
        since != u64::MAX && start + Duration::from_millis(since) + HALF_CLOSED_STALL <= now
    }
}

/// One direction of the copy.
struct OneWay<'p> {
    pool: &'p BufPool,
    /// The registry's counter of this direction.
    counter: &'p AtomicU64,
    /// Bytes read and not yet written (`buf[pos..cap]`); `None` while idle.
    buf: Option<Box<[u8]>>,
    pos: usize,
    cap: usize,
    /// The source reached end of file.
    eof: bool,
    /// Set once the write side is shut down: this direction is over.
    done: bool,
    /// Written since the last flush (TLS and cipher streams buffer).
    unflushed: bool,
    moved: u64,
    state: &'p DirState,
    start: Instant,
}

impl<'p> OneWay<'p> {
    fn new(pool: &'p BufPool, counter: &'p AtomicU64, state: &'p DirState, start: Instant) -> Self {
        Self {
            pool,
            counter,
            buf: None,
            pos: 0,
            cap: 0,
            eof: false,
            done: false,
            unflushed: false,
            moved: 0,
            state,
            start,
        }
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<Result<u64, Failed>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(self.moved));
        }
        let res = self.poll_copy(cx, r, w);
        if let Poll::Ready(Ok(_)) = res {
            self.done = true;
            self.state.done.store(true, Ordering::Relaxed);
        }
        if res.is_ready() {
            if let Some(b) = self.buf.take() {
                self.pool.give_back(b);
            }
        }
        res
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<Result<u64, Failed>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if let Some(buf) = &self.buf {
                while self.pos < self.cap {
                    let written = Pin::new(&mut *w).poll_write(cx, &buf[self.pos..self.cap]);
                    let blocked = &self.state.blocked_since;
                    if written.is_pending() {
                        if blocked.load(Ordering::Relaxed) == u64::MAX {
                            let ms = u64::try_from(self.start.elapsed().as_millis())
                                .unwrap_or(u64::MAX - 1);
                            blocked.store(ms, Ordering::Relaxed);
                        }
                        return Poll::Pending;
                    }
                    if blocked.load(Ordering::Relaxed) != u64::MAX {
                        blocked.store(u64::MAX, Ordering::Relaxed);
                    }
                    let n = ready!(written).map_err(Failed::Write)?;
                    if n == 0 {
                        return Poll::Ready(Err(Failed::Write(io::ErrorKind::WriteZero.into())));
                    }
                    self.pos += n;
                    self.moved += n as u64;
                    self.counter.fetch_add(n as u64, Ordering::Relaxed);
                    self.unflushed = true;
                }
            }
            if self.eof {
                // Shutting down flushes first.
                ready!(Pin::new(&mut *w).poll_shutdown(cx)).map_err(Failed::Write)?;
                return Poll::Ready(Ok(self.moved));
            }
            let mut buf = self.buf.take().unwrap_or_else(|| self.pool.take());
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    // Nothing to move now: the buffer goes back, and what was written is
                    // flushed before waiting.
                    self.pool.give_back(buf);
                    if self.unflushed {
                        ready!(Pin::new(&mut *w).poll_flush(cx)).map_err(Failed::Write)?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    self.pool.give_back(buf);
                    return Poll::Ready(Err(Failed::Read(e)));
                }
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    (self.pos, self.cap) = (0, n);
                    if n == 0 {
                        self.eof = true;
                        self.pool.give_back(buf);
                    } else {
                        self.buf = Some(buf);
                    }
                }
            }
        }
    }
}

impl Drop for OneWay<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.give_back(b);
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
    use crate::relay::test_pairs::{exchange_both_ways, pair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_close_and_both_directions_at_once_are_byte_exact() {
        let pool = BufPool::new(BUF, 4);
        let (client, proxy_a) = pair().await;
        let (proxy_b, server) = pair().await;
        let counters = Counters::default();
        let relay = relay_with(&pool, proxy_a, proxy_b, Duration::from_secs(5), &counters);
        let ((up, down), moved) = tokio::join!(exchange_both_ways(client, server), relay);
        assert_eq!(moved.unwrap(), (up, down));
        let counted = (
            counters.up.load(Ordering::Relaxed),
            counters.down.load(Ordering::Relaxed),
        );
        assert_eq!(
            counted,
            (up, down),
            "the registry's counters saw every byte"
        );
        assert_eq!(pool.held(), 0, "every buffer is back once the relay ended");
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer() {
        let pool = BufPool::new(BUF, 4);
        let (mut client, proxy_a) = pair().await;
        let (proxy_b, mut server) = pair().await;
        let counters = Counters::default();
        let relay = relay_with(&pool, proxy_a, proxy_b, Duration::from_secs(5), &counters);
        let talk = async {
            let mut buf = vec![0u8; 100_000];
            for round in 0..3u8 {
                let msg = vec![round; 100_000];
                client.write_all(&msg).await.unwrap();
                server.read_exact(&mut buf).await.unwrap();
                assert_eq!(buf, msg);
                server.write_all(&msg[..10]).await.unwrap();
                client.read_exact(&mut buf[..10]).await.unwrap();
                // Both sides quiet now: the relay must have given its buffers back.
                tokio::time::sleep(Duration::from_millis(20)).await;
                assert_eq!(pool.held(), 0, "round {round}: buffers held while idle");
            }
            drop((client, server));
        };
        let (_, r) = tokio::join!(talk, relay);
        r.unwrap();
    }

    /// Small reads and writes of random sizes through in-memory pipes with tiny capacity,
    /// so every direction pends on both reads and writes again and again.
    #[tokio::test]
    async fn random_chunking_keeps_bytes_exact() {
        let pool = BufPool::new(1024, 2);
        for seed in 0..8u64 {
            let (mut client, proxy_a) = tokio::io::duplex(97 + seed as usize * 13);
            let (proxy_b, mut server) = tokio::io::duplex(61 + seed as usize * 7);
            let counters = Counters::default();
            let relay = relay_with(&pool, proxy_a, proxy_b, Duration::from_secs(5), &counters);
            let data: Vec<u8> = (0..50_000u64)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) as u8)
                .collect();
            let io = async {
                let (mut cr, mut cw) = tokio::io::split(&mut client);
                let (mut sr, mut sw) = tokio::io::split(&mut server);
                let send = async {
                    let mut rest = data.as_slice();
                    let mut k = seed;
                    while !rest.is_empty() {
                        k = k.wrapping_mul(6364136223846793005).wrapping_add(1);
                        let n = (1 + (k >> 33) as usize % 700).min(rest.len());
                        cw.write_all(&rest[..n]).await.unwrap();
                        rest = &rest[n..];
                    }
                    cw.shutdown().await.unwrap();
                };
                let echo = async {
                    let mut got = Vec::new();
                    sr.read_to_end(&mut got).await.unwrap();
                    sw.write_all(&got).await.unwrap();
                    sw.shutdown().await.unwrap();
                    got
                };
                let back = async {
                    let mut back = Vec::new();
                    cr.read_to_end(&mut back).await.unwrap();
                    back
                };
                let ((), got, back) = tokio::join!(send, echo, back);
                assert_eq!(got, data, "seed {seed}: client -> server");
                assert_eq!(back, data, "seed {seed}: server -> client");
            };
            let ((), r) = tokio::join!(io, relay);
            let n = data.len() as u64;
            assert_eq!(r.unwrap(), (n, n));
        }
        assert_eq!(pool.held(), 0);
    }

    /// A reset from either end is blamed on that end, whichever direction noticed it.
    #[tokio::test]
    async fn a_reset_is_blamed_on_the_side_that_sent_it() {
        for server_resets in [true, false] {
            let (client, proxy_a) = pair().await;
            let (proxy_b, server) = pair().await;
            let counters = Counters::default();
            let relay = relay(proxy_a, proxy_b, Duration::from_secs(5), &counters);
            let reset = async {
                let (mut gone, mut stays) = if server_resets {
                    (server, client)
                } else {
                    (client, server)
                };
                // Bytes toward the side that will reset, then a RST (linger 0, unread data).
                stays.write_all(b"hello").await.unwrap();
                let mut b = [0u8; 5];
                gone.read_exact(&mut b).await.unwrap();
                stays.write_all(b"unread").await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                socket2::SockRef::from(&gone)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(gone);
                stays
            };
            let (_stays, r) = tokio::join!(reset, relay);
            match (server_resets, &r) {
                (true, Err(Broken::Server(_))) | (false, Err(Broken::Client(_))) => {}
                _ => panic!("server_resets={server_resets}: {r:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_time_out_and_active_ones_do_not() {
        let (mut client, proxy_a) = tokio::io::duplex(64);
        let (proxy_b, mut server) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move {
            relay(
                proxy_a,
                proxy_b,
                Duration::from_secs(10),
                &Counters::default(),
            )
            .await
        });
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
        assert!(matches!(err, Broken::Idle), "{err:?}");
    }

    /// The server ends its side and stops reading while the client keeps sending (a proxy
    /// that passed a destination's reset on as a plain end): the relay ends with a server
    /// error once the upload has been stuck for the stall limit, well before the idle one.
    #[tokio::test(start_paused = true)]
    async fn an_upload_stuck_after_the_server_ended_its_side_ends_the_relay() {
        let pool = BufPool::new(1024, 2);
        let (mut client, proxy_a) = tokio::io::duplex(4096);
        let (proxy_b, mut server) = tokio::io::duplex(4096);
        let counters = Counters::default();
        let started = Instant::now();
        let relay = relay_with(&pool, proxy_a, proxy_b, Duration::from_secs(60), &counters);
        let io = async {
            server.shutdown().await.unwrap();
            let chunk = [5u8; 1000];
            // The server reads nothing: the client's writes fill both pipes, then wait.
            while client.write_all(&chunk).await.is_ok() {}
        };
        let r = tokio::select! {
            r = relay => r,
            () = io => panic!("the client could write forever"),
        };
        let took = started.elapsed();
        match r {
            Err(Broken::Server(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
                assert!(e.to_string().contains("took no more data"), "{e}");
            }
            other => panic!("expected a server stall, got {other:?}"),
        }
        assert!(
            took >= HALF_CLOSED_STALL && took < HALF_CLOSED_STALL + Duration::from_secs(3),
            "ended after {took:?}"
        );
        drop(server);
    }

    /// A half-closed flow whose remaining direction waits to read (the client sent its
    /// request and its end; the server thinks for longer than the stall limit, then
    /// answers) is not cut: only a direction that cannot write is.
    #[tokio::test(start_paused = true)]
    async fn a_half_closed_flow_waiting_to_read_is_kept() {
        let pool = BufPool::new(1024, 2);
        let (mut client, proxy_a) = tokio::io::duplex(4096);
        let (proxy_b, mut server) = tokio::io::duplex(4096);
        let counters = Counters::default();
        let relay = relay_with(&pool, proxy_a, proxy_b, Duration::from_secs(60), &counters);
        let io = async {
            client.write_all(b"request").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = [0u8; 7];
            server.read_exact(&mut got).await.unwrap();
            tokio::time::sleep(HALF_CLOSED_STALL * 3).await;
            server.write_all(b"late answer").await.unwrap();
            server.shutdown().await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            answer
        };
        let (answer, r) = tokio::join!(io, relay);
        assert_eq!(answer, b"late answer");
        assert_eq!(r.unwrap(), (7, 11));
    }
}
