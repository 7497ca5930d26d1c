//! SOCKS5 upstream (RFC 1928, RFC 1929 auth): CONNECT for TCP, UDP ASSOCIATE for UDP, each
//! UDP flow on its own association.

use std::io;
use std::net::SocketAddr;

use socket2::Type;
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tpgate_core::config::Credentials;
use tpgate_core::net::Destination;
use tpgate_core::proto::socks5::{self, Command, Method};

use super::error::HandshakeError;
use super::framing::{read_msg, with_prefix};
use super::tls::TlsClient;
use super::udp::{UdpRecv, UdpSend};
use super::BoxIo;

#[derive(Debug)]
pub(crate) struct Socks5 {
    auth: Option<Credentials>,
    tls: Option<TlsClient>,
}

impl Socks5 {
    pub(crate) fn new(auth: Option<Credentials>, tls: Option<TlsClient>) -> Self {
        Self { auth, tls }
    }

    /// Greeting, optional auth, then `cmd` for `dst`; returns the reply's bound address and
    /// the stream with anything read past the reply.
    async fn request(
        &self,
        io: BoxIo,
        cmd: Command,
        dst: &Destination,
    ) -> io::Result<(BoxIo, Destination, Vec<u8>)> {
        let mut io = match &self.tls {
            Some(t) => t.wrap(io).await?,
            None => io,
        };
        let mut out = Vec::with_capacity(64);
        let offer = self.auth.is_some();
        socks5::encode_greeting(offer, &mut out);
        io.write_all(&out).await?;
        let mut buf = Vec::with_capacity(64);
        let method = read_msg(&mut io, &mut buf, |b| {
            socks5::parse_method_selection(b, offer)
        })
        .await?;
        if method == Method::UsernamePassword {
            let Some(c) = &self.auth else {
                return Err(HandshakeError::PasswordNotConfigured.into());
            };
            out.clear();
            socks5::encode_auth_request(&c.username, &c.password, &mut out)
                .map_err(HandshakeError::request)?;
            io.write_all(&out).await?;
            read_msg(&mut io, &mut buf, |b| {
                socks5::parse_auth_reply(b).map(|o| o.map(|n| ((), n)))
            })
            .await?;
        }
        out.clear();
        socks5::encode_request(cmd, dst, &mut out).map_err(HandshakeError::request)?;
        io.write_all(&out).await?;
        let bound = read_msg(&mut io, &mut buf, socks5::parse_reply).await?;
        Ok((io, bound, buf))
    }

    pub(crate) async fn connect(&self, io: BoxIo, dst: &Destination) -> io::Result<BoxIo> {
        let (io, _, rest) = self.request(io, Command::Connect, dst).await?;
        Ok(with_prefix(io, rest))
    }

    /// UDP ASSOCIATE over `io` (connected to the server at `server`): datagrams go to the
    /// relay address the server names (its own address when it names an unspecified one).
    /// UDP ASSOCIATE over `io`, a stream that reaches the server through a relay chain's
    /// earlier hops: the control stream, and where to send the datagrams (an unspecified
    /// address means the server's host, `server`).
    pub(crate) async fn associate_over(
        &self,
        io: BoxIo,
        server: &Destination,
    ) -> io::Result<(BoxIo, Destination)> {
        let any = Destination::Addr(SocketAddr::from(([0u8; 4], 0)));
        let (ctrl, bound, _) = self.request(io, Command::UdpAssociate, &any).await?;
        let relay = match bound {
            Destination::Addr(a) if a.ip().is_unspecified() => match server {
                Destination::Addr(s) => Destination::Addr(SocketAddr::new(s.ip(), a.port())),
                Destination::Domain(host, _) => Destination::Domain(host.clone(), a.port()),
            },
            other => other,
        };
        Ok((ctrl, relay))
    }

    pub(crate) async fn udp(
        &self,
        io: BoxIo,
        server: SocketAddr,
        mark: u32,
    ) -> io::Result<(UdpSend, UdpRecv)> {
        let any = if server.is_ipv6() {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0u8; 4], 0))
        };
        let (ctrl, bound, _) = self
            .request(io, Command::UdpAssociate, &Destination::Addr(any))
            .await?;
        let relay = match bound {
            Destination::Addr(a) if a.ip().is_unspecified() => {
                SocketAddr::new(server.ip(), a.port())
            }
            Destination::Addr(a) => a,
            Destination::Domain(..) => SocketAddr::new(server.ip(), bound.port()),
        };
        let s = tpgate_sys::outbound_socket(relay.is_ipv6(), Type::DGRAM, mark)?;
        s.connect(&relay.into())?;
        Ok(super::udp::from_socks5(
            UdpSocket::from_std(s.into())?,
            ctrl,
        ))
    }
}
