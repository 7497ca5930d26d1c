//! Small newtypes shared by every layer, so a bare `u32` or `SocketAddr` never crosses a
//! module boundary meaning two different things.

use std::fmt;
use std::net::SocketAddr;

/// A packet mark with the bits it owns (`value/mask`, as `ip rule` writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mark {
    pub value: u32,
    pub mask: u32,
}

impl Mark {
    /// A mark that owns all 32 bits.
    pub const fn exact(value: u32) -> Self {
        Self {
            value,
            mask: u32::MAX,
        }
    }

    /// Whether a packet carrying `mark` matches this mark.
    pub const fn matches(self, mark: u32) -> bool {
        mark & self.mask == self.value
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mask == u32::MAX {
            write!(f, "{:#x}", self.value)
        } else {
            write!(f, "{:#x}/{:#x}", self.value, self.mask)
        }
    }
}

/// A policy-routing table number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableId(pub u32);

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The destination a client asked for, as TPROXY preserved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrigDst(pub SocketAddr);

/// The address of the client whose traffic was intercepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    Tcp,
    Udp,
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// Where an intercepted flow came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A process of this machine (caught in OUTPUT, looped back through `lo`).
    Local,
    /// A host on one of the `lan-interfaces` (caught in PREROUTING).
    Forwarded,
}

/// Where an upstream is asked to connect: an address, or a name it resolves itself
/// (remote resolution; names come from sniffing/DNS in a later stage).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Addr(SocketAddr),
    Domain(String, u16),
}

impl Destination {
    pub fn port(&self) -> u16 {
        match self {
            Self::Addr(a) => a.port(),
            Self::Domain(_, p) => *p,
        }
    }
}

impl From<SocketAddr> for Destination {
    fn from(a: SocketAddr) -> Self {
        Self::Addr(a)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Domain(d, p) => write!(f, "{d}:{p}"),
        }
    }
}
