//! Real peers for the lab: TCP and UDP echo servers that record which peer address they saw,
//! and client helpers that check what comes back. Sockets are created inside a namespace
//! with [`Netns::enter`] and then used from ordinary threads.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{poll, Family, Netns, PatientRead, PatientRecv};

/// Read/write timeout of every test socket: a stuck relay fails the test, never hangs it.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often accept/receive loops look at their stop flag.
const TICK: Duration = Duration::from_millis(10);

/// What an echo server saw: one entry per accepted connection or received datagram.
#[derive(Default)]
struct Seen {
    peers: Mutex<Vec<SocketAddr>>,
}

/// A TCP listener with a 4,096-connection accept queue (std's `bind` gives 128). Through
/// tpgate a burst of client connections becomes a burst of dials at once; with SYN cookies
/// on, a dial whose last ACK finds a full accept queue is never accepted, which would be
/// the lab's loss, not tpgate's.
pub(crate) fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?; // as std's bind does
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// A TCP server in a namespace that echoes every connection until EOF, then half-closes.
pub(crate) struct TcpEchoServer {
    pub(crate) addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpEchoServer {
    pub(crate) fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let listener = ns
            .enter(|| tcp_listener(addr))
            .unwrap_or_else(|e| panic!("bind tcp {addr} in {}: {e}", ns.name));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            seen.peers.lock().expect("seen lock").push(peer);
                            std::thread::spawn(move || echo_tcp(stream));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
                        Err(e) => eprintln!("tcp echo server {addr}: accept: {e}"),
                    }
                }
            })
        };
        Self {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Peer addresses of the connections accepted so far.
    pub(crate) fn peers(&self) -> Vec<SocketAddr> {
        self.seen.peers.lock().expect("seen lock").clone()
    }

    /// Waits (bounded) until at least `n` connections were accepted; returns all peers.
    pub(crate) fn wait_peers(&self, n: usize) -> Vec<SocketAddr> {
        poll(IO_TIMEOUT, || Some(self.peers()).filter(|p| p.len() >= n)).unwrap_or_else(|| {
            panic!(
                "tcp server {} saw {:?}, wanted {n} connection(s)",
                self.addr,
                self.peers()
            )
        })
    }
}

impl Drop for TcpEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo_tcp(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read_patiently(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// A UDP server in a namespace that sends every datagram back to its sender.
pub(crate) struct UdpEchoServer {
    pub(crate) addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEchoServer {
    pub(crate) fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let socket = ns
            .enter(|| UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("bind udp {addr} in {}: {e}", ns.name));
        socket.set_read_timeout(Some(TICK)).expect("udp timeout");
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    match socket.recv_from_patiently(&mut buf) {
                        Ok((n, peer)) => {
                            seen.peers.lock().expect("seen lock").push(peer);
                            let _ = socket.send_to(&buf[..n], peer);
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => eprintln!("udp echo server {addr}: {e}"),
                    }
                }
            })
        };
        Self {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Senders of the datagrams received so far (one entry per datagram).
    pub(crate) fn peers(&self) -> Vec<SocketAddr> {
        self.seen.peers.lock().expect("seen lock").clone()
    }
}

impl Drop for UdpEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from inside `ns` to `dst` (5 s limit) with the test I/O timeouts set.
pub(crate) fn tcp_connect(ns: &Netns, dst: SocketAddr) -> io::Result<TcpStream> {
    let stream = ns.enter(|| TcpStream::connect_timeout(&dst, Duration::from_secs(5)))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Sends `data` on `stream` from a second thread, half-closes, and reads until EOF.
/// Returns everything read. The writer runs alongside the reader so a large transfer cannot
/// deadlock on full buffers.
pub(crate) fn tcp_send_all_and_read(stream: &TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut writer = stream.try_clone()?;
    let mut reader = stream.try_clone()?;
    std::thread::scope(|s| {
        let w = s.spawn(move || -> io::Result<()> {
            writer.write_all(data)?;
            writer.shutdown(Shutdown::Write)
        });
        let mut got = Vec::with_capacity(data.len());
        let read = reader.read_to_end(&mut got);
        w.join().expect("writer thread")?;
        read.map(|_| got)
    })
}

/// Result of one TCP echo exchange from a client.
#[derive(Debug)]
pub(crate) struct TcpExchange {
    /// The client socket's own address.
    pub(crate) local: SocketAddr,
    /// What came back.
    pub(crate) echoed: Vec<u8>,
}

/// Connects from `ns` to `dst`, sends `data`, half-closes and reads the echo to EOF.
pub(crate) fn tcp_echo(ns: &Netns, dst: SocketAddr, data: &[u8]) -> io::Result<TcpExchange> {
    let stream = tcp_connect(ns, dst)?;
    let local = stream.local_addr()?;
    let echoed = tcp_send_all_and_read(&stream, data)?;
    Ok(TcpExchange { local, echoed })
}

/// Result of one UDP exchange from a client.
#[derive(Debug)]
pub(crate) struct UdpExchange {
    /// The client socket's own address (its IP is the unspecified one it was bound to).
    pub(crate) local: SocketAddr,
    /// Sender and payload of the reply, or `None` if none came.
    pub(crate) reply: Option<(SocketAddr, Vec<u8>)>,
}

/// Binds an unconnected UDP socket in `ns`, sends `data` to `dst` and waits `wait` for one
/// reply, accepting it from any source (so a wrong source address is seen, not filtered).
pub(crate) fn udp_exchange(
    ns: &Netns,
    family: Family,
    dst: SocketAddr,
    data: &[u8],
    wait: Duration,
) -> io::Result<UdpExchange> {
    let socket = ns.enter(|| UdpSocket::bind(family.any()))?;
    socket.set_read_timeout(Some(wait))?;
    socket.send_to(data, dst)?;
    let local = socket.local_addr()?;
    let mut buf = vec![0u8; 65536];
    let reply = match socket.recv_from_patiently(&mut buf) {
        Ok((n, from)) => Some((from, buf[..n].to_vec())),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => return Err(e),
    };
    Ok(UdpExchange { local, reply })
}

/// `len` bytes of a deterministic pseudo-random pattern (so shifted or dropped bytes show).
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}
