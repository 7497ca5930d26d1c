//! Zero-copy TCP relay between two plain sockets (DIRECT): each direction splices
//! socket -> pipe -> socket, holding a pooled pipe only while bytes are in flight, so an
//! idle connection costs no pipe and no buffer. Half-close and the idle timeout behave as
//! in the copying relay ([`super::copy`]), which serves every other case.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tpgate_sys::{Pipe, PipePool};

use super::registry::Counters;
use super::{Broken, Failed};

/// Pipes of 1 MiB move bulk transfers in few syscalls; the kernel charges their pages
/// only while they hold data.
const PIPE_SIZE: usize = 1 << 20;
/// Idle pipes kept for reuse across connections.
static POOL: PipePool = PipePool::new(PIPE_SIZE, 64);

/// Relays between the client `a` and the server `b` until both directions ended or nothing
/// moved for `idle`; returns bytes (a->b, b->a), which `counters` (up: a->b) follow while it
/// runs, or what ended it.
pub(super) async fn relay(
    a: &TcpStream,
    b: &TcpStream,
    idle: Duration,
    counters: &Counters,
) -> Result<(u64, u64), Broken> {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let both = async {
        let up = async {
            one_way(a, b, &last, start, &counters.up)
                .await
                .map_err(|f| f.broken(true))
        };
        let down = async {
            one_way(b, a, &last, start, &counters.down)
                .await
                .map_err(|f| f.broken(false))
        };
        tokio::try_join!(up, down)
    };
    tokio::pin!(both);
    let mut deadline = start + idle;
    loop {
        tokio::select! {
            r = &mut both => return r,
            () = tokio::time::sleep_until(deadline) => {
                let seen = start + Duration::from_millis(last.load(Ordering::Relaxed));
                if seen + idle <= Instant::now() {
                    return Err(Broken::Idle);
                }
                deadline = seen + idle;
            }
        }
    }
}

/// `src` -> `dst` until `src`'s end of file, which is passed on as a write shutdown.
async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    last: &AtomicU64,
    start: Instant,
    counter: &AtomicU64,
) -> Result<u64, Failed> {
    let mut total = 0u64;
    loop {
        src.readable().await.map_err(Failed::Read)?;
        let pipe = POOL.take().map_err(Failed::Local)?;
        // Keep the pipe while the source has more right away; give it back when empty.
        loop {
            let n = match src.try_io(Interest::READABLE, || pipe.fill(src, PIPE_SIZE)) {
                Ok(0) => {
                    POOL.give_back(pipe);
                    let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
                    return Ok(total);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    POOL.give_back(pipe);
                    break;
                }
                // The pipe is empty (nothing was moved): reusable.
                Err(e) => {
                    POOL.give_back(pipe);
                    return Err(Failed::Read(e));
                }
            };
            // On an error the pipe may hold bytes: dropped, not returned.
            drain(&pipe, dst, n).await.map_err(Failed::Write)?;
            total += n as u64;
            counter.fetch_add(n as u64, Ordering::Relaxed);
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            last.store(ms, Ordering::Relaxed);
        }
    }
}

async fn drain(pipe: &Pipe, dst: &TcpStream, mut left: usize) -> io::Result<()> {
    while left > 0 {
        match dst.try_io(Interest::WRITABLE, || pipe.drain(dst, left)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => left -= m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::test_pairs::{exchange_both_ways, pair};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_close_and_both_directions_at_once_are_byte_exact() {
        let (client, proxy_a) = pair().await;
        let (proxy_b, server) = pair().await;
        let counters = Counters::default();
        let relay = async { relay(&proxy_a, &proxy_b, Duration::from_secs(5), &counters).await };
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
    }

    #[tokio::test]
    async fn a_peer_reset_ends_the_relay_with_an_error() {
        let (client, proxy_a) = pair().await;
        let (proxy_b, server) = pair().await;
        let counters = Counters::default();
        let relay = async { relay(&proxy_a, &proxy_b, Duration::from_secs(5), &counters).await };
        let reset = async {
            client.writable().await.unwrap();
            client.try_write(b"hello").unwrap();
            let mut b = [0u8; 5];
            loop {
                server.readable().await.unwrap();
                if let Ok(5) = server.try_read(&mut b) {
                    break;
                }
            }
            // Closing with unread data, with linger 0: a RST toward the relay.
            socket2::SockRef::from(&server)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(server);
            client
        };
        let (client, r) = tokio::join!(reset, relay);
        assert!(
            matches!(r, Err(Broken::Server(_))),
            "the server broke it: {r:?}"
        );
        drop(client);
    }
}
