//! The one place of tpgate for `unsafe` code and raw socket options: the libnftables
//! context that owns tpgate's table, transparent sockets (`IP_TRANSPARENT`, `SO_MARK`,
//! non-local bind), the sockmap that joins two sockets in the kernel, reading a UDP datagram's original destination, batched UDP I/O and
//! giving freed memory back. Every `unsafe` block says why it is sound; splice(2) and
//! recvmmsg/sendmmsg go through nix's safe wrappers. Policy lives elsewhere: these
//! functions only do what they are told.

mod batch;
mod memory;
mod nft;
mod pktinfo;
mod sockets;
mod sockmap;
mod splice;
mod udp;

pub use batch::{send_batch, send_segmented, RecvBatch, MAX_SEGMENTS};
pub use memory::release_free_memory;
pub use nft::{Nft, NftError};
pub use pktinfo::{enable_pktinfo, recv_with_arrival, recv_with_local, send_from, Arrival};
pub use sockets::{outbound_socket, transparent_tcp_listener, transparent_udp_socket, UdpRole};
pub use sockmap::{bytes_acked, kick, unacked, unread, Joined, Sockmap, SockmapError};
pub use splice::{Pipe, PipePool};
pub use udp::Datagram;
