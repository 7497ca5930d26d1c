//! One flow's UDP association through an upstream, split into a sending and a receiving half
//! so the flow task can wait for replies while it sends. Each half is used by one task only.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::UdpSocket;
use tpgate_core::net::Destination;
use tpgate_core::proto::{socks5, trojan, vless};

use super::ss::SsUdp;
use super::BoxIo;

pub(crate) enum UdpSend {
    Socks5 {
        sock: Arc<UdpSocket>,
        /// Reused for every datagram's header + payload.
        buf: Vec<u8>,
    },
    Shadowsocks(Arc<SsUdp>),
    Trojan {
        wr: WriteHalf<BoxIo>,
        buf: Vec<u8>,
    },
    /// The destination was fixed by the request; packets carry only a length.
    Vless {
        wr: WriteHalf<BoxIo>,
        buf: Vec<u8>,
    },
    /// One write is one sealed chunk is one datagram.
    Vmess {
        wr: WriteHalf<BoxIo>,
    },
}

pub(crate) enum UdpRecv {
    Socks5 {
        sock: Arc<UdpSocket>,
        /// The TCP connection the association lives on; its end ends the association.
        ctrl: BoxIo,
        buf: Vec<u8>,
    },
    Shadowsocks(Arc<SsUdp>),
    Trojan {
        rd: ReadHalf<BoxIo>,
        acc: Vec<u8>,
    },
    Vless {
        rd: ReadHalf<BoxIo>,
        acc: Vec<u8>,
    },
    /// One read of at most one chunk is one datagram.
    Vmess {
        rd: ReadHalf<BoxIo>,
    },
}

pub(crate) fn from_ss(s: SsUdp) -> (UdpSend, UdpRecv) {
    let s = Arc::new(s);
    (UdpSend::Shadowsocks(s.clone()), UdpRecv::Shadowsocks(s))
}

impl UdpSend {
    pub(crate) async fn send(&mut self, dst: &Destination, data: &[u8]) -> io::Result<()> {
        match self {
            Self::Socks5 { sock, buf } => {
                buf.clear();
                socks5::encode_udp_datagram(dst, data, buf).map_err(invalid)?;
                sock.send(buf).await?;
            }
            Self::Shadowsocks(s) => s.send(dst, data).await?,
            Self::Trojan { wr, buf } => {
                buf.clear();
                trojan::encode_udp_packet(dst, data, buf).map_err(invalid)?;
                wr.write_all(buf).await?;
                wr.flush().await?;
            }
            Self::Vless { wr, buf } => {
                buf.clear();
                vless::encode_udp_packet(data, buf).map_err(invalid)?;
                wr.write_all(buf).await?;
                wr.flush().await?;
            }
            Self::Vmess { wr } => {
                if data.len() > super::vmess::MAX_DATAGRAM {
                    return Err(invalid(format!("datagram of {} bytes", data.len())));
                }
                wr.write_all(data).await?;
                wr.flush().await?;
            }
        }
        Ok(())
    }
}

impl UdpRecv {
    /// The next reply's payload, copied to the start of `out`; returns its length.
    pub(crate) async fn recv(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Socks5 { sock, ctrl, buf } => loop {
                let mut probe = [0u8; 1];
                let n = tokio::select! {
                    r = sock.recv(buf) => r?,
                    r = ctrl.read(&mut probe) => {
                        r?;
                        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "SOCKS5 association closed by the server"));
                    }
                };
                let Ok((_, off)) = socks5::parse_udp_datagram(&buf[..n]) else {
                    continue; // malformed or fragmented: dropped, the flow goes on
                };
                let payload = &buf[off..n];
                let len = payload.len().min(out.len());
                out[..len].copy_from_slice(&payload[..len]);
                return Ok(len);
            },
            Self::Shadowsocks(s) => s.recv(out).await,
            Self::Trojan { rd, acc } => loop {
                match trojan::parse_udp_packet(acc) {
                    Ok(Some((pkt, used))) => {
                        let len = pkt.payload.len().min(out.len());
                        out[..len].copy_from_slice(&pkt.payload[..len]);
                        acc.drain(..used);
                        return Ok(len);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(invalid(e)),
                }
                if rd.read_buf(acc).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "trojan UDP stream closed",
                    ));
                }
            },
            Self::Vmess { rd } => match rd.read(out).await? {
                0 => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "VMess UDP stream closed",
                )),
                n => Ok(n),
            },
            Self::Vless { rd, acc } => loop {
                if let Some((payload, used)) = vless::parse_udp_packet(acc) {
                    let len = payload.len().min(out.len());
                    out[..len].copy_from_slice(&payload[..len]);
                    acc.drain(..used);
                    return Ok(len);
                }
                if rd.read_buf(acc).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "VLESS UDP stream closed",
                    ));
                }
            },
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
