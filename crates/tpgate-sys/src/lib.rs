//! The one place of tpgate for `unsafe` code and raw socket options: the libnftables
//! context that owns tpgate's table, transparent sockets (`IP_TRANSPARENT`, `SO_MARK`,
//! non-local bind) and reading a UDP datagram's original destination. Every `unsafe` block
//! says why it is sound; splice(2) goes through nix's safe wrapper. Policy lives elsewhere: these functions only do what they are told.

mod batch;
mod nft;
mod pktinfo;
mod sockets;
mod splice;
mod udp;

pub use batch::{send_batch, RecvBatch};
pub use nft::{Nft, NftError};
pub use pktinfo::{enable_pktinfo, recv_with_local, send_from};
pub use sockets::{outbound_socket, transparent_tcp_listener, transparent_udp_socket, UdpRole};
pub use splice::{Pipe, PipePool};
pub use udp::{recv_with_orig_dst, Datagram};
