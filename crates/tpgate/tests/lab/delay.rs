//! Added latency for one lab upstream, in user space: a TCP forwarder on the host's public
//! port that holds every chunk for a settable time in each direction before passing it to
//! the real server on the host's loopback. It also records who connected, which shows the
//! first hop of a relay chain. The lab's kernel may lack `sch_netem` (so
//! `tc qdisc ... netem delay` is not an option), and this also works unchanged in CI.
//! Chunks are queued with their due time, so the delay adds latency without cutting
//! throughput; EOF is passed on in order (half-close preserved).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Netns, PatientRead};

/// A delaying forwarder in a namespace; stops accepting on drop (open connections end when
/// either side closes).
pub(crate) struct DelayFront {
    /// Milliseconds added in each direction; may be changed while running.
    delay_ms: Arc<AtomicU64>,
    /// Peers of the accepted connections: who connected to this upstream.
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DelayFront {
    /// Listens on `listen` in `ns` and forwards each connection to `target` (also in `ns`).
    pub(crate) fn start(
        ns: &Netns,
        listen: SocketAddr,
        target: SocketAddr,
        delay: Duration,
    ) -> Self {
        let listener = ns
            .enter(|| TcpListener::bind(listen))
            .unwrap_or_else(|e| panic!("bind delay front {listen} in {}: {e}", ns.name));
        listener.set_nonblocking(true).expect("nonblocking");
        let delay_ms = Arc::new(AtomicU64::new(millis(delay)));
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (delay_ms, stop) = (Arc::clone(&delay_ms), Arc::clone(&stop));
            let peers = Arc::clone(&peers);
            // Connections to `target` must be made from inside the namespace.
            ns.spawn_thread(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, peer)) => {
                            peers.lock().expect("peers lock").push(peer);
                            let delay_ms = Arc::clone(&delay_ms);
                            std::thread::spawn(move || forward(client, target, &delay_ms));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => eprintln!("delay front {listen}: accept: {e}"),
                    }
                }
            })
        };
        Self {
            delay_ms,
            peers,
            stop,
            thread: Some(thread),
        }
    }

    /// Peers of the connections accepted so far.
    pub(crate) fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().expect("peers lock").clone()
    }

    /// Changes the delay for chunks read from now on.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(millis(delay), Ordering::Relaxed);
    }
}

impl Drop for DelayFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn forward(client: TcpStream, target: SocketAddr, delay_ms: &Arc<AtomicU64>) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        return;
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let d1 = Arc::clone(delay_ms);
    let up = std::thread::spawn(move || pipe(client, server, &d1));
    pipe(s2, c2, delay_ms);
    let _ = up.join();
}

/// Copies `from` to `to`, each chunk `delay` late; on EOF half-closes `to`.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay_ms: &AtomicU64) {
    let (tx, rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    let writer = std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).is_err() {
                        let _ = to.shutdown(Shutdown::Both);
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = from.read_patiently(&mut buf);
        let due = Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Relaxed));
        let chunk = match read {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(buf[..n].to_vec()),
        };
        let eof = chunk.is_none();
        if tx.send((due, chunk)).is_err() || eof {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}
