//! Trojan upstream: TLS (and a WebSocket or gRPC carrier inside it), then the password hash and the request, then the stream itself;
//! UDP packets are framed over the same kind of stream.

use std::io;

use tokio::io::AsyncWriteExt;
use tpgate_core::net::Destination;
use tpgate_core::proto::trojan::{self, Command, PasswordHash};

use super::error::HandshakeError;
use super::transport::Transport;
use super::udp::{UdpRecv, UdpSend};
use super::BoxIo;

pub(crate) struct Trojan {
    hash: PasswordHash,
    /// TLS, and the WebSocket or gRPC carrier inside it when configured.
    transport: Transport,
}

impl std::fmt::Debug for Trojan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trojan")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Trojan {
    pub(crate) fn new(password: &str, transport: Transport) -> Self {
        Self {
            hash: PasswordHash::new(password),
            transport,
        }
    }

    async fn open(&self, io: BoxIo, cmd: Command, dst: &Destination) -> io::Result<BoxIo> {
        let mut io = self.transport.open(io).await?;
        let mut out = Vec::with_capacity(128);
        trojan::encode_request(&self.hash, cmd, dst, &mut out).map_err(HandshakeError::request)?;
        io.write_all(&out).await?;
        io.flush().await?;
        Ok(io)
    }

    pub(crate) async fn connect(&self, io: BoxIo, dst: &Destination) -> io::Result<BoxIo> {
        self.open(io, Command::Connect, dst).await
    }

    pub(crate) async fn udp(&self, io: BoxIo, dst: &Destination) -> io::Result<(UdpSend, UdpRecv)> {
        let io = self.open(io, Command::UdpAssociate, dst).await?;
        let (rd, wr) = tokio::io::split(io);
        Ok((
            UdpSend::Trojan {
                wr,
                buf: Vec::with_capacity(2048),
            },
            UdpRecv::Trojan {
                rd,
                acc: Vec::with_capacity(4096),
            },
        ))
    }
}
