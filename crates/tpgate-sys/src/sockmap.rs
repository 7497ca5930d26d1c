//! Joining two TCP sockets in the kernel: an eBPF sockmap with a stream verdict program
//! (`bpf/sockmap.c`, loaded with aya) sends what arrives on one socket out through the
//! other, so a decided flow's bytes no longer wake tpgate. This module only loads the
//! program and adds and removes sockets; the relay (`tpgate::relay::sockmap`) decides when,
//! and keeps watching the sockets for their end.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Mutex;

use aya::maps::{HashMap, MapData, SockHash};
use aya::programs::SkSkb;
use aya::Ebpf;

/// Why the sockmap path is not available.
#[derive(Debug, thiserror::Error)]
pub enum SockmapError {
    #[error("tpgate was built without its BPF program (no clang at build time)")]
    NotBuilt,
    #[error("loading the BPF program: {0}")]
    Load(String),
}

/// The loaded program and its maps. One per daemon.
pub struct Sockmap {
    maps: Mutex<Maps>,
    // Owns the program (and its attachment to `peers`): dropping it detaches everything.
    _ebpf: Ebpf,
}

struct Maps {
    peers: SockHash<MapData, u64>,
    joined: SockHash<MapData, u64>,
    bytes: HashMap<MapData, u64, u64>,
}

impl std::fmt::Debug for Sockmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sockmap")
    }
}

/// Two sockets joined by [`Sockmap::join`]; give it back with [`Sockmap::leave`].
#[derive(Debug)]
pub struct Joined {
    a: u64,
    b: u64,
}

#[cfg(tpgate_bpf)]
// Aligned: the ELF parser reads its headers in place.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockmap.o"));

impl Sockmap {
    /// Loads and attaches the verdict program. Fails without `CAP_BPF`/`CAP_NET_ADMIN`, on
    /// kernels without sockmap, or when this build has no program.
    pub fn load() -> Result<Self, SockmapError> {
        #[cfg(tpgate_bpf)]
        {
            let load = |e: &dyn std::fmt::Display| SockmapError::Load(e.to_string());
            let mut ebpf = Ebpf::load(PROGRAM).map_err(|e| load(&e))?;
            let peers = ebpf
                .take_map("peers")
                .ok_or_else(|| load(&"no map `peers`"))?;
            let peers: SockHash<MapData, u64> = SockHash::try_from(peers).map_err(|e| load(&e))?;
            let joined = ebpf
                .take_map("joined")
                .ok_or_else(|| load(&"no map `joined`"))?;
            let joined: SockHash<MapData, u64> =
                SockHash::try_from(joined).map_err(|e| load(&e))?;
            let bytes = ebpf
                .take_map("bytes")
                .ok_or_else(|| load(&"no map `bytes`"))?;
            let bytes = HashMap::try_from(bytes).map_err(|e| load(&e))?;
            let prog: &mut SkSkb = ebpf
                .program_mut("verdict")
                .ok_or_else(|| load(&"no program `verdict`"))?
                .try_into()
                .map_err(|e| load(&e))?;
            prog.load().map_err(|e| load(&e))?;
            prog.attach(joined.fd()).map_err(|e| load(&e))?;
            Ok(Self {
                maps: Mutex::new(Maps {
                    peers,
                    joined,
                    bytes,
                }),
                _ebpf: ebpf,
            })
        }
        #[cfg(not(tpgate_bpf))]
        Err(SockmapError::NotBuilt)
    }

    /// From now on what arrives on `a` leaves through `b` and the reverse. What is already
    /// waiting in either receive queue stays there until more arrives on that socket (then
    /// the program takes all of it, in order); see [`unread`].
    pub fn join(&self, a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<Joined> {
        let j = Joined {
            a: cookie(a)?,
            b: cookie(b)?,
        };
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let io = |e: aya::maps::MapError| io::Error::other(e.to_string());
        // Peers first, then the program: see bpf/sockmap.c.
        let steps = [
            (Step::Bytes, j.a, None),
            (Step::Bytes, j.b, None),
            (Step::Peers, j.a, Some(b)),
            (Step::Peers, j.b, Some(a)),
            (Step::Joined, j.a, Some(a)),
            (Step::Joined, j.b, Some(b)),
        ];
        for (i, (step, key, fd)) in steps.iter().enumerate() {
            let fd = fd.map(|f| f.as_raw_fd());
            let done = match (step, fd) {
                (Step::Bytes, _) => m.bytes.insert(*key, 0, 0),
                (Step::Peers, Some(fd)) => m.peers.insert(*key, fd, 0),
                (Step::Joined, Some(fd)) => m.joined.insert(*key, fd, 0),
                _ => Ok(()),
            };
            if let Err(e) = done {
                for (step, key, _) in steps[..i].iter().rev() {
                    m.remove(*step, *key);
                }
                return Err(io(e));
            }
        }
        Ok(j)
    }

    /// Bytes the program sent on so far: (arrived on `a`, arrived on `b`).
    pub fn moved(&self, j: &Joined) -> (u64, u64) {
        let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let get = |k: u64| m.bytes.get(&k, 0).unwrap_or(0);
        (get(j.a), get(j.b))
    }

    /// Separates the two sockets again. Anything the program queued on a socket but the
    /// kernel has not sent yet is dropped with the socket's sockmap state, so the relay
    /// leaves only once both directions are done or the flow failed.
    pub fn leave(&self, j: Joined) {
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        for step in [Step::Joined, Step::Peers, Step::Bytes] {
            for k in [j.a, j.b] {
                m.remove(step, k);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Bytes,
    Peers,
    Joined,
}

impl Maps {
    fn remove(&mut self, step: Step, key: u64) {
        let _ = match step {
            Step::Bytes => self.bytes.remove(&key),
            Step::Peers => self.peers.remove(&key),
            Step::Joined => self.joined.remove(&key),
        };
    }
}

/// The socket's cookie (`SO_COOKIE`): the key the verdict program sees for it.
fn cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut v: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `fd` is a live descriptor for the call; `v` and `len` are valid for writes of
    // the sizes given, and the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes the kernel look at what already waits in the socket's receive queue: setting
/// `SO_RCVLOWAT` (to 1, the default) runs the socket's data-ready callback, which for a
/// joined socket is the verdict program. Bytes that arrived before [`Sockmap::join`] would
/// otherwise wait for the next packet.
pub fn kick(fd: impl AsFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is valid for reads of the length given; `fd` is live for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes waiting in the socket's receive queue (`SIOCINQ`).
pub fn unread(fd: impl AsFd) -> io::Result<usize> {
    queue(fd.as_fd(), libc::FIONREAD)
}

/// Bytes the socket has queued and not yet seen acknowledged (`SIOCOUTQ`).
pub fn unacked(fd: impl AsFd) -> io::Result<usize> {
    queue(fd.as_fd(), libc::TIOCOUTQ)
}

fn queue(fd: BorrowedFd<'_>, req: libc::Ioctl) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: both requests write one `int` through the pointer, which is valid for it;
    // `fd` is live for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, &raw mut n) };
    if rc == 0 {
        Ok(usize::try_from(n).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Data bytes the peer has acknowledged on this TCP socket (`tcpi_bytes_acked`). With
/// [`unacked`] it gives every byte ever queued on the socket.
pub fn bytes_acked(fd: impl AsFd) -> io::Result<u64> {
    // `struct tcp_info` up to `tcpi_bytes_acked` (Linux 4.1+), which sits at byte 120.
    const OFFSET: usize = 120;
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf`, valid for them; `fd` is
    // live for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < OFFSET + 8 {
        return Err(io::Error::other("tcp_info without tcpi_bytes_acked"));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&buf[OFFSET..OFFSET + 8]);
    Ok(u64::from_ne_bytes(v))
}
