//! DIRECT between two plain sockets, joined in the kernel: an eBPF sockmap
//! ([`tpgate_sys::Sockmap`]) sends what arrives on one socket out through the other, so the
//! flow's bytes never wake tpgate. tpgate only waits for each side's end of file or error,
//! passes a FIN on once everything that came before it has been queued on the other
//! socket, and reads the program's byte counters for the registry and the idle limit.
//!
//! Ordering: the sniffed bytes are written to the server before the join; whatever reached
//! either socket before the join is handed to the program, in order, by [`tpgate_sys::kick`]
//! right after it, and everything later is taken by the program as it arrives.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tpgate_sys::{Joined, Sockmap};
use tracing::{debug, warn};

use super::registry::Counters;
use super::Broken;

/// The daemon's sockmap, loaded at the first DIRECT flow; `None` (with one warning) when
/// this build, the kernel or tpgate's privileges do not allow it.
pub(super) fn get() -> Option<&'static Sockmap> {
    static MAP: OnceLock<Option<Sockmap>> = OnceLock::new();
    MAP.get_or_init(|| match Sockmap::load() {
        Ok(m) => {
            debug!("sockmap relay loaded");
            Some(m)
        }
        Err(e) => {
            warn!("sockmap relay unavailable, DIRECT flows use splice: {e}");
            None
        }
    })
    .as_ref()
}

/// How long a FIN waits for the bytes before it to be queued on the other socket.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// The byte counters are read this often while bytes move; the interval doubles, up to
/// [`SLOWEST_LOOK`], while they do not (an idle flow costs almost no wake-ups).
const FIRST_LOOK: Duration = Duration::from_secs(1);
const SLOWEST_LOOK: Duration = Duration::from_secs(64);

/// Leaves the sockmap when the relay ends, however it ends (a registry close drops it).
struct Membership<'m> {
    map: &'m Sockmap,
    joined: Option<Joined>,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        if let Some(j) = self.joined.take() {
            self.map.leave(j);
        }
    }
}

/// Relays between the client `a` and the server `b` in the kernel until both directions
/// ended or nothing moved for `idle`; returns the bytes (a->b, b->a) that `counters` show
/// (they follow the program's counts). `Err(None)` when the sockets could not be joined (the client already
/// sent its end of file, or the kernel refused): the caller relays the rest another way.
pub(super) async fn relay(
    map: &Sockmap,
    a: &TcpStream,
    b: &TcpStream,
    idle: Duration,
    counters: &Counters,
) -> Result<(u64, u64), Option<Broken>> {
    // The kernel hands a joined socket's queued packets to the program whole, also one that
    // sniffing read the start of (its bytes would reach the server twice): what waits on the
    // client's socket goes on from here first, and the join waits for an empty queue.
    match forward_waiting(a, b, counters).await {
        Ok(true) => {}
        Ok(false) => return Err(None),
        Err(e) => return Err(Some(e)),
    }
    let (base_up, base_down) = counters.get();
    // Every byte written to `b` so far: the base of its drain check. Nothing else writes to
    // either socket before the join.
    let queued_b = queued(b).map_err(|e| Some(Broken::Server(e)))?;
    let queued_a = queued(a).map_err(|e| Some(Broken::Client(e)))?;
    let joined = match map.join(sock_fd(a), sock_fd(b)) {
        Ok(j) => j,
        Err(e) => {
            debug!("sockmap join failed, splicing: {e}");
            return Err(None);
        }
    };
    super::RelayPath::Sockmap.taken();
    let m = Membership {
        map,
        joined: Some(joined),
    };
    let j = m.joined.as_ref().expect("set above");
    for s in [a, b] {
        tpgate_sys::kick(s).map_err(|e| Some(Broken::Local(e)))?;
    }
    let (mut a_done, mut b_done) = (false, false);
    let (mut seen, mut quiet_since) = ((0, 0), Instant::now());
    let mut look = FIRST_LOOK;
    loop {
        let moved = map.moved(j);
        counters.up.store(base_up + moved.0, Ordering::Relaxed);
        counters.down.store(base_down + moved.1, Ordering::Relaxed);
        if a_done && b_done {
            return Ok(counters.get());
        }
        if moved == seen {
            look = (look * 2).min(SLOWEST_LOOK);
        } else {
            seen = moved;
            quiet_since = Instant::now();
            look = FIRST_LOOK;
        }
        if quiet_since.elapsed() >= idle {
            return Err(Some(Broken::Idle));
        }
        let wake = (Instant::now() + look).min(quiet_since + idle);
        tokio::select! {
            r = ended(a), if !a_done => {
                r.map_err(|e| Some(Broken::Client(e)))?;
                // After the kick every byte before the FIN went through the program.
                tpgate_sys::kick(a).map_err(|e| Some(Broken::Local(e)))?;
                let target = queued_b + map.moved(j).0;
                drained(b, target).await.map_err(|e| Some(Broken::Server(e)))?;
                let _ = SockRef::from(b).shutdown(Shutdown::Write);
                a_done = true;
            }
            r = ended(b), if !b_done => {
                r.map_err(|e| Some(Broken::Server(e)))?;
                tpgate_sys::kick(b).map_err(|e| Some(Broken::Local(e)))?;
                let target = queued_a + map.moved(j).1;
                drained(a, target).await.map_err(|e| Some(Broken::Client(e)))?;
                let _ = SockRef::from(a).shutdown(Shutdown::Write);
                b_done = true;
            }
            // A side that sent its FIN can still be reset while the other direction runs.
            e = failed(a), if a_done => return Err(Some(Broken::Client(e))),
            e = failed(b), if b_done => return Err(Some(Broken::Server(e))),
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Reads what waits on `a` and writes it to `b` until `a`'s queue is empty (true). False
/// when that does not happen within a few reads (the client keeps it full: a bulk upload
/// goes on spliced) or `a` ended (nothing to join for).
async fn forward_waiting(
    a: &TcpStream,
    b: &TcpStream,
    counters: &Counters,
) -> Result<bool, Broken> {
    const READS: usize = 8;
    let mut buf = vec![0u8; 256 << 10];
    for _ in 0..READS {
        let n = match a.try_read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(Broken::Client(e)),
        };
        let mut sent = 0;
        while sent < n {
            match b.try_write(&buf[sent..n]) {
                Ok(m) => sent += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    b.writable().await.map_err(Broken::Server)?;
                }
                Err(e) => return Err(Broken::Server(e)),
            }
        }
        counters.up.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(false)
}

fn sock_fd(s: &TcpStream) -> std::os::fd::BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(s)
}

/// Every byte ever queued for sending on `s`: acknowledged plus still queued.
fn queued(s: &TcpStream) -> io::Result<u64> {
    Ok(tpgate_sys::bytes_acked(s)? + tpgate_sys::unacked(s)? as u64)
}

/// Waits for `s`'s end of file (`Ok`) or error. A joined socket's data never reaches tpgate,
/// so plain readability is only a wake-up to look again.
async fn ended(s: &TcpStream) -> io::Result<()> {
    loop {
        let ready = s.ready(Interest::READABLE).await?;
        if ready.is_read_closed() || ready.is_error() {
            return match s.take_error()? {
                Some(e) => Err(e),
                None if ready.is_write_closed() => {
                    Err(io::Error::from(io::ErrorKind::ConnectionReset))
                }
                None => Ok(()),
            };
        }
        clear(s, Interest::READABLE);
    }
}

/// Waits for an error on `s` (after its end of file, when readability says nothing more).
async fn failed(s: &TcpStream) -> io::Error {
    loop {
        match s.ready(Interest::ERROR).await {
            Err(e) => return e,
            Ok(_) => match s.take_error() {
                Ok(Some(e)) | Err(e) => return e,
                Ok(None) => clear(s, Interest::ERROR),
            },
        }
    }
}

/// Forgets a readiness that turned out to mean nothing (tokio clears it on `WouldBlock`).
fn clear(s: &TcpStream, interest: Interest) {
    let _ = s.try_io(interest, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
}

/// Waits until `target` bytes in all have been queued on `s` (the program hands them over
/// through a kernel worker, so a FIN passed on earlier would cut them off).
async fn drained(s: &TcpStream, target: u64) -> io::Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
        if queued(s)? >= target {
            return Ok(());
        }
        if start.elapsed() > DRAIN_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "bytes handed over in the kernel were not sent on",
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::relay::test_pairs::{exchange_both_ways, pair};

    /// The sockmap. These tests need root (`CAP_BPF` and `CAP_NET_ADMIN`; CI runs as root)
    /// and a build with the BPF program (clang; `.ci/run` installs it): a build without
    /// it skips them, saying so, and any other failure to load fails them.
    fn map() -> Option<&'static Sockmap> {
        static MAP: OnceLock<Option<Sockmap>> = OnceLock::new();
        MAP.get_or_init(|| match Sockmap::load() {
            Ok(m) => Some(m),
            Err(tpgate_sys::SockmapError::NotBuilt) => {
                eprintln!("skipped: tpgate was built without clang, so without its BPF program");
                None
            }
            Err(e) => panic!("the sockmap loads (as root): {e}"),
        })
        .as_ref()
    }

    async fn relayed(
        a: &TcpStream,
        b: &TcpStream,
        counters: &Counters,
    ) -> Result<(u64, u64), Option<Broken>> {
        let map = map().expect("each test checks first");
        relay(map, a, b, Duration::from_secs(10), counters).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_both_ways_with_half_close_is_byte_exact_and_counted() {
        if map().is_none() {
            return;
        }
        let (client, proxy_a) = pair().await;
        let (proxy_b, server) = pair().await;
        let counters = Counters::default();
        // The exchange starts once the relay has joined the (then empty) sockets; a client
        // that keeps the queue full before that is spliced instead (tested below).
        let exchange = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            exchange_both_ways(client, server).await
        };
        let ((up, down), moved) = tokio::join!(exchange, relayed(&proxy_a, &proxy_b, &counters));
        assert_eq!(moved.unwrap(), (up, down), "the program counted every byte");
        assert_eq!(counters.get(), (up, down));
    }

    /// Small messages back and forth, one at a time (each answered before the next is
    /// sent), and bytes that were already waiting on both sockets when they were joined.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_messages_and_bytes_waiting_before_the_join_arrive_in_order() {
        if map().is_none() {
            return;
        }
        let (mut client, proxy_a) = pair().await;
        let (proxy_b, mut server) = pair().await;
        client.write_all(b"early-up ").await.unwrap();
        server.write_all(b"early-down ").await.unwrap();
        // Both have arrived (unread) before the join.
        while tpgate_sys::unread(&proxy_a).unwrap() < 9
            || tpgate_sys::unread(&proxy_b).unwrap() < 11
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let counters = Counters::default();
        let talk = async {
            let mut got = vec![0u8; 11];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"early-down ");
            let mut got = vec![0u8; 9];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"early-up ");
            for i in 0..200u32 {
                let msg = format!("ping {i}");
                client.write_all(msg.as_bytes()).await.unwrap();
                let mut got = vec![0u8; msg.len()];
                server.read_exact(&mut got).await.unwrap();
                assert_eq!(got, msg.as_bytes());
                let answer = format!("pong {i}!");
                server.write_all(answer.as_bytes()).await.unwrap();
                let mut got = vec![0u8; answer.len()];
                client.read_exact(&mut got).await.unwrap();
                assert_eq!(got, answer.as_bytes());
            }
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "the FIN came after the last message");
            server.shutdown().await.unwrap();
            client.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        };
        let ((), moved) = tokio::join!(talk, relayed(&proxy_a, &proxy_b, &counters));
        let (up, down) = moved.unwrap();
        assert!(up > 1000 && down > 1000, "moved in the kernel: {up} {down}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_reset_ends_the_relay_as_the_servers_failure() {
        if map().is_none() {
            return;
        }
        let (mut client, proxy_a) = pair().await;
        let (proxy_b, mut server) = pair().await;
        let counters = Counters::default();
        let reset = async {
            client.write_all(b"hello").await.unwrap();
            let mut b = [0u8; 5];
            server.read_exact(&mut b).await.unwrap();
            SockRef::from(&server)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(server);
            client
        };
        let (_client, r) = tokio::join!(reset, relayed(&proxy_a, &proxy_b, &counters));
        assert!(
            matches!(r, Err(Some(Broken::Server(_)))),
            "the server broke it: {r:?}"
        );
    }

    /// A client that half-closed can still reset while the server sends: noticed at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reset_after_a_half_close_is_noticed() {
        if map().is_none() {
            return;
        }
        let (mut client, proxy_a) = pair().await;
        let (proxy_b, mut server) = pair().await;
        let counters = Counters::default();
        let reset = async {
            // Through the joined sockets first (a socket that already has the client's FIN
            // cannot join: the relay would hand it back for splicing).
            client.write_all(b"hi").await.unwrap();
            let mut b = [0u8; 2];
            server.read_exact(&mut b).await.unwrap();
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            server.write_all(b"still talking").await.unwrap();
            let mut b = [0u8; 13];
            client.read_exact(&mut b).await.unwrap();
            SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(client);
            server
        };
        let relay = tokio::time::timeout(
            Duration::from_secs(5),
            relayed(&proxy_a, &proxy_b, &counters),
        );
        let (_server, r) = tokio::join!(reset, relay);
        let r = r.expect("ended well before the idle limit");
        assert!(
            matches!(r, Err(Some(Broken::Client(_)))),
            "the client broke it: {r:?}"
        );
    }

    /// Only established sockets can join: one that has its peer's FIN is handed back for
    /// the caller to splice, after what waited on it went on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_socket_that_cannot_join_is_handed_back_untouched() {
        if map().is_none() {
            return;
        }
        let (mut client, proxy_a) = pair().await;
        let (proxy_b, mut server) = pair().await;
        client.write_all(b"data").await.unwrap();
        client.shutdown().await.unwrap();
        while !proxy_a
            .ready(Interest::READABLE)
            .await
            .unwrap()
            .is_read_closed()
        {}
        let counters = Counters::default();
        let r = relayed(&proxy_a, &proxy_b, &counters).await;
        assert!(matches!(r, Err(None)), "handed back: {r:?}");
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"data", "what waited went on first");
        assert_eq!(counters.get(), (4, 0), "and was counted");
        assert_eq!(tpgate_sys::unread(&proxy_a).unwrap(), 0);
    }

    /// Joined sockets leave the map when the relay ends, so a closed flow leaves nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_relay_leaves_the_map_when_dropped() {
        if map().is_none() {
            return;
        }
        let (mut client, proxy_a) = pair().await;
        let (proxy_b, mut server) = pair().await;
        let counters = Counters::default();
        {
            let relay = relayed(&proxy_a, &proxy_b, &counters);
            let _ = tokio::time::timeout(Duration::from_millis(200), relay).await;
        }
        // No longer joined: the bytes wait in tpgate's socket instead of passing through.
        client.write_all(b"after").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(tpgate_sys::unread(&proxy_a).unwrap(), 5);
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(100), server.read(&mut b)).await;
        assert!(r.is_err(), "nothing reached the server");
    }
}
