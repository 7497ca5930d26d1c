//! Blocking socket reads that go on when the test process is stopped and resumed.
//!
//! Linux ends a `recv` on a socket with a read time-out (`SO_RCVTIMEO`) with `EINTR` when
//! the process is stopped and continued (SIGSTOP/SIGCONT, a cgroup freeze), even where no
//! signal handler is installed (signal(7)); CI machines that pause their jobs do that.
//! Nothing was lost: these read again. Each read after an interruption waits the whole
//! time-out anew, so a test waits at most a little longer, never less.

use std::io::{self, ErrorKind, Read};
use std::net::{SocketAddr, UdpSocket};

/// `recv_from` that reads again when interrupted.
pub(crate) trait PatientRecv {
    fn recv_from_patiently(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

impl PatientRecv for UdpSocket {
    fn recv_from_patiently(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            match self.recv_from(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

/// `read` that reads again when interrupted (`read_exact`, `read_to_end` and `BufRead`'s
/// line reads already do).
pub(crate) trait PatientRead: Read {
    fn read_patiently(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.read(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl<R: Read + ?Sized> PatientRead for R {}
