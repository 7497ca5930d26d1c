//! Moving bytes from one socket to another through a pipe with splice(2), so they never
//! enter user space. A [`Pipe`] is only held while data is in flight: callers take one from
//! a [`PipePool`] when a socket turns readable and give it back once it is empty, so idle
//! connections cost no pipe. Only safe `nix` wrappers are used; no `unsafe` here.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

use nix::fcntl::{fcntl, FcntlArg, OFlag, SpliceFFlags};

/// A non-blocking pipe and how many bytes it holds.
#[derive(Debug)]
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    /// A new pipe of about `size` bytes (the kernel rounds it; a smaller default is kept if
    /// the size is refused, e.g. above `/proc/sys/fs/pipe-max-size`).
    pub fn new(size: usize) -> io::Result<Self> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        if let Ok(size) = i32::try_from(size) {
            let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(size));
        }
        Ok(Self { r, w })
    }

    /// Moves up to `len` bytes from `src` (a socket) into the pipe. `Ok(0)` is end of file;
    /// `WouldBlock` when the socket has nothing now.
    pub fn fill(&self, src: impl AsFd, len: usize) -> io::Result<usize> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        Ok(nix::fcntl::splice(src, None, &self.w, None, len, flags)?)
    }

    /// Moves up to `len` bytes from the pipe to `dst` (a socket); `WouldBlock` when the
    /// socket's send buffer is full.
    pub fn drain(&self, dst: impl AsFd, len: usize) -> io::Result<usize> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        Ok(nix::fcntl::splice(&self.r, None, dst, None, len, flags)?)
    }
}

/// Empty pipes to reuse, bounded.
#[derive(Debug)]
pub struct PipePool {
    free: Mutex<Vec<Pipe>>,
    size: usize,
    keep: usize,
}

impl PipePool {
    /// Pipes of `size` bytes; at most `keep` idle ones are kept open.
    pub const fn new(size: usize, keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            size,
            keep,
        }
    }

    pub fn take(&self) -> io::Result<Pipe> {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        match reused {
            Some(p) => Ok(p),
            None => Pipe::new(self.size),
        }
    }

    /// Returns an EMPTY pipe (one with bytes left in it must be dropped instead).
    pub fn give_back(&self, pipe: Pipe) {
        if let Ok(mut f) = self.free.lock() {
            if f.len() < self.keep {
                f.push(pipe);
            }
        }
    }
}
