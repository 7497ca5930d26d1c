//! An HTTP file server in the lab's server namespace (`GET /NAME`), whose answers can change
//! while it runs, including the faults a subscription or geodata server shows in the wild:
//! an answer that never comes, a body that stops halfway, a body far bigger than anyone
//! wants (streamed, never held in memory). Every request is recorded with its peer, so a
//! test tells which address a download came from. Also: a MaxMind-format country database.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Netns;

/// How long the server, and each connection it holds open, may live at most.
const LIFETIME: Duration = Duration::from_secs(300);

/// What a path answers.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// `200 OK` with this body.
    Body(Vec<u8>),
    /// Reads the request and never answers (the connection stays open).
    Silent,
    /// Announces this many bytes, sends the first half, then stalls.
    StallMidBody(Vec<u8>),
    /// Announces and streams this many bytes, as long as the client reads.
    Huge(u64),
}

/// One request: the path and who asked.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) path: String,
    pub(crate) peer: SocketAddr,
}

/// The server; stopped on drop (held connections end within a second).
pub(crate) struct FileServer {
    files: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    pub(crate) fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let listener = ns
            .enter(|| std::net::TcpListener::bind(addr))
            .expect("bind the file server");
        listener.set_nonblocking(true).expect("nonblocking");
        let me = Self {
            files: Arc::default(),
            hits: Arc::default(),
            stop: Arc::default(),
        };
        let (files, hits, stop) = (me.files.clone(), me.hits.clone(), me.stop.clone());
        std::thread::spawn(move || {
            let until = Instant::now() + LIFETIME;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let Ok((s, peer)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let (files, hits, stop) = (files.clone(), hits.clone(), stop.clone());
                std::thread::spawn(move || serve(&s, peer, &files, &hits, &stop));
            }
        });
        me
    }

    /// What `path` answers from now on.
    pub(crate) fn put(&self, path: &str, reply: Reply) {
        self.files.lock().unwrap().insert(path.to_owned(), reply);
    }

    /// Requests for `path` so far.
    pub(crate) fn hits(&self, path: &str) -> usize {
        self.hits_of(path).len()
    }

    /// Requests for `path` so far, with their peers.
    pub(crate) fn hits_of(&self, path: &str) -> Vec<Hit> {
        let all = self.hits.lock().unwrap();
        all.iter().filter(|h| h.path == path).cloned().collect()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    s: &TcpStream,
    peer: SocketAddr,
    files: &Mutex<HashMap<String, Reply>>,
    hits: &Mutex<Vec<Hit>>,
    stop: &AtomicBool,
) {
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut reader = std::io::BufReader::new(s);
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    // The rest of the request head.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
    hits.lock().unwrap().push(Hit {
        path: path.clone(),
        peer,
    });
    let reply = files.lock().unwrap().get(&path).cloned();
    let head =
        |len: u64| format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n");
    let mut w = s;
    let hold = || {
        let until = Instant::now() + LIFETIME;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    match reply {
        Some(Reply::Body(b)) => {
            let _ = w
                .write_all(head(b.len() as u64).as_bytes())
                .and_then(|()| w.write_all(&b));
        }
        Some(Reply::Silent) => hold(),
        Some(Reply::StallMidBody(b)) => {
            let _ = w
                .write_all(head(b.len() as u64).as_bytes())
                .and_then(|()| w.write_all(&b[..b.len() / 2]));
            hold();
        }
        Some(Reply::Huge(len)) => {
            let chunk = vec![b'#'; 64 << 10];
            let mut sent = 0u64;
            let mut ok = w.write_all(head(len).as_bytes()).is_ok();
            while ok && sent < len && !stop.load(Ordering::Relaxed) {
                let n = chunk
                    .len()
                    .min(usize::try_from(len - sent).unwrap_or(usize::MAX));
                ok = w.write_all(&chunk[..n]).is_ok();
                sent += n as u64;
            }
        }
        None => {
            let _ = w.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    }
}

/// A GeoLite2-Country-shaped database: `{country: {iso_code}}` per network.
pub(crate) fn country_db(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut w = mmdb_writer::Writer::new("GeoLite2-Country");
    for (net, code) in entries {
        let record: BTreeMap<&str, BTreeMap<&str, &str>> =
            [("country", [("iso_code", *code)].into())].into();
        w.insert(net.parse::<ipnet::IpNet>().expect("net"), &record)
            .expect("insert");
    }
    w.to_bytes().expect("serialise")
}
