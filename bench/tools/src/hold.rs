//! Idle TCP connections: a client that opens many and holds them without sending a byte, and
//! a server that accepts them and holds each until its peer closes. Both run on a
//! single-threaded tokio runtime; the bench measures the proxy between them, not these.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// How long one connect may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

pub(crate) fn hold(to: SocketAddr, count: usize, concurrency: usize) -> io::Result<()> {
    runtime()?.block_on(async move {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut held = Vec::with_capacity(count);
        let mut failed = 0usize;
        let mut connecting = JoinSet::new();
        let mut started = 0usize;
        while held.len() + failed < count {
            while started < count && connecting.len() < concurrency.max(1) {
                connecting
                    .spawn(async move { timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await });
                started += 1;
            }
            match connecting.join_next().await {
                Some(Ok(Ok(Ok(stream)))) => held.push(stream),
                Some(Ok(Ok(Err(e)))) => {
                    if failed == 0 {
                        eprintln!("connect {to}: {e}");
                    }
                    failed += 1;
                }
                Some(Ok(Err(_))) => failed += 1,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => break,
            }
        }
        println!("held={} failed={failed}", held.len());
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let n = held.len();
        drop(held);
        println!("closed={n}");
        Ok(())
    })
}

pub(crate) fn sink(bind: SocketAddr) -> io::Result<()> {
    runtime()?.block_on(async move {
        // A deep accept queue: a burst of connections through a fast proxy must not
        // overflow it (the default 1024 would make the proxy's connects retry for seconds).
        let socket = if bind.is_ipv6() {
            tokio::net::TcpSocket::new_v6()?
        } else {
            tokio::net::TcpSocket::new_v4()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(bind)?;
        let listener = socket.listen(16_384)?;
        eprintln!("tcp sink listening on {bind}");
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        tokio::spawn(report(Arc::clone(&open), Arc::clone(&accepted)));
        loop {
            let (mut stream, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, say: report it and go on with the others.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            accepted.fetch_add(1, Ordering::Relaxed);
            open.fetch_add(1, Ordering::Relaxed);
            let open = Arc::clone(&open);
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    })
}

/// Prints the counters whenever they changed, at most every 200 ms.
async fn report(open: Arc<AtomicUsize>, accepted: Arc<AtomicUsize>) {
    let mut last = (usize::MAX, usize::MAX);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let now = (
            open.load(Ordering::Relaxed),
            accepted.load(Ordering::Relaxed),
        );
        if now != last {
            println!("open={} accepted={}", now.0, now.1);
            last = now;
        }
    }
}
