//! One upstream proxy from `proxies:`: its server address and its protocol.

use std::io;

use tpgate_core::config::{Member, ProxyDef, ProxyKind, ProxyNetwork, Tls};
use tpgate_core::net::Destination;

use super::dial::ServerAddr;
use super::error::{DialError, TlsError};
use super::http::Http;
use super::hysteria2::Hysteria2;
use super::plugin::Plugin;
use super::quic::{Via, Way};
use super::socks5::Socks5;
use super::ss::Shadowsocks;
use super::tls::TlsClient;
use super::transport::{Link, Protocol, Transport};
use super::trojan::Trojan;
use super::tuic::Tuic;
use super::udp::{UdpRecv, UdpSend};
use super::vless::Vless;
use super::vmess::Vmess;
use super::{BoxIo, Ctx};

#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) server: ServerAddr,
    /// UDP may be relayed through it (`udp: true`).
    pub(crate) udp: bool,
    /// The protocol's type name, for the API (`Socks5`, `Http`, `Shadowsocks`, `Trojan`,
    /// `Vless`).
    pub(crate) type_name: &'static str,
    /// `dialer-proxy`: the server is reached through this member (a chain of both).
    pub(crate) dialer: Option<Member>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Socks5(Socks5),
    Http(Http),
    Shadowsocks(Shadowsocks),
    Trojan(Trojan),
    Vless(Vless),
    Vmess(Vmess),
    Hysteria2(Hysteria2),
    Tuic(Tuic),
    /// `type: direct`: routes resolve it to a DIRECT exit; it never handshakes.
    Direct,
}

impl Upstream {
    pub(crate) fn new(def: &ProxyDef) -> io::Result<Self> {
        let tls = |t: &Option<Tls>| -> Result<Option<TlsClient>, TlsError> {
            t.as_ref()
                .map(|t| TlsClient::new(t, &def.server))
                .transpose()
        };
        let transport = |p, network: &ProxyNetwork, t: Option<&Tls>| {
            Transport::new(p, network, t, &def.server, def.port)
        };
        let (kind, type_name) = match &def.kind {
            ProxyKind::Socks5 { auth, tls: t } => {
                (Kind::Socks5(Socks5::new(auth.clone(), tls(t)?)), "Socks5")
            }
            ProxyKind::Http { auth, tls: t } => {
                (Kind::Http(Http::new(auth.clone(), tls(t)?)), "Http")
            }
            ProxyKind::Shadowsocks {
                cipher,
                password,
                plugin,
            } => {
                let plugin = plugin
                    .as_ref()
                    .map(|p| Plugin::new(p, &def.server, def.port))
                    .transpose()?;
                (
                    Kind::Shadowsocks(Shadowsocks::new(*cipher, password, plugin)?),
                    "Shadowsocks",
                )
            }
            ProxyKind::Trojan {
                password,
                tls: t,
                network,
            } => (
                Kind::Trojan(Trojan::new(
                    &def.name,
                    password,
                    transport(Protocol::Trojan, network, Some(t))?,
                )),
                "Trojan",
            ),
            ProxyKind::Vless {
                uuid,
                tls: t,
                network,
                flow,
            } => (
                Kind::Vless(Vless::new(
                    &def.name,
                    *uuid,
                    transport(Protocol::Vless, network, t.as_ref())?,
                    *flow,
                )),
                "Vless",
            ),
            ProxyKind::Vmess {
                uuid,
                cipher,
                tls: t,
                network,
            } => (
                Kind::Vmess(Vmess::new(
                    &def.name,
                    *uuid,
                    *cipher,
                    transport(Protocol::Vmess, network, t.as_ref())?,
                )),
                "Vmess",
            ),
            ProxyKind::Hysteria2(opts) => (
                Kind::Hysteria2(Hysteria2::new(&def.name, &def.server, opts)?),
                "Hysteria2",
            ),
            ProxyKind::Tuic(opts) => (Kind::Tuic(Tuic::new(&def.name, &def.server, opts)?), "Tuic"),
            ProxyKind::Direct => (Kind::Direct, "Direct"),
        };
        Ok(Self {
            name: def.name.clone(),
            server: ServerAddr::new(&def.server, def.port),
            udp: def.udp,
            type_name,
            dialer: def.dialer,
            kind,
        })
    }

    /// A `type: direct` proxy: flows through it connect directly.
    pub(crate) fn is_direct(&self) -> bool {
        matches!(self.kind, Kind::Direct)
    }

    /// For a proxy over QUIC (hysteria2, tuic), a stream to `dst` on its connection,
    /// straight to its server or `via` earlier hops; `None` for the proxies that run over a
    /// TCP connection tpgate dials.
    pub(crate) async fn connect_quic(
        &self,
        ctx: &Ctx,
        via: Option<&Via<'_>>,
        dst: &Destination,
    ) -> Option<io::Result<BoxIo>> {
        let way = self.way(ctx, via);
        match &self.kind {
            Kind::Hysteria2(h) => Some(h.connect_tcp(&way, dst).await),
            Kind::Tuic(t) => Some(t.connect_tcp(&way, dst).await),
            _ => None,
        }
    }

    /// For a proxy over QUIC, a UDP flow on its connection through earlier hops (`via`).
    pub(crate) async fn open_quic_udp_via(&self, via: &Via<'_>) -> io::Result<(UdpSend, UdpRecv)> {
        if !self.udp {
            return Err(DialError::UdpDisabled {
                proxy: self.name.clone(),
            }
            .into());
        }
        self.quic_udp(&Way::Via(via)).await
    }

    /// A UDP flow on this QUIC proxy's connection going `way`.
    async fn quic_udp(&self, way: &Way<'_, '_>) -> io::Result<(UdpSend, UdpRecv)> {
        match &self.kind {
            Kind::Hysteria2(h) => h
                .udp(way)
                .await
                .map(|(s, r)| (UdpSend::Hysteria2(s), UdpRecv::Hysteria2(r))),
            Kind::Tuic(t) => t
                .udp(way)
                .await
                .map(|(s, r)| (UdpSend::Tuic(s), UdpRecv::Tuic(r))),
            _ => Err(DialError::UdpNotInStream {
                proxy: self.name.clone(),
            }
            .into()),
        }
    }

    fn way<'a, 'v>(&'a self, ctx: &'a Ctx, via: Option<&'a Via<'v>>) -> Way<'a, 'v> {
        match via {
            Some(v) => Way::Via(v),
            None => Way::Direct {
                server: &self.server,
                ctx,
            },
        }
    }

    /// Whether this proxy runs over a QUIC connection of its own (so in a chain it is not
    /// dialed through the earlier hops' stream, but sends its packets through their UDP).
    pub(crate) fn is_quic(&self) -> bool {
        matches!(self.kind, Kind::Hysteria2(_) | Kind::Tuic(_))
    }

    /// What this proxy, the first hop, speaks over: a stream on its transport's shared
    /// connection (gRPC) when there is a live one with room, else a new marked TCP
    /// connection to its server.
    pub(crate) async fn first_link(&self, ctx: &Ctx) -> io::Result<Link> {
        let transport = match &self.kind {
            Kind::Trojan(t) => Some(t.transport()),
            Kind::Vless(v) => Some(v.transport()),
            Kind::Vmess(v) => Some(v.transport()),
            _ => None,
        };
        if let Some(carried) = transport.and_then(Transport::shared_stream) {
            return carried.map(Link::Carried);
        }
        let tcp = self.server.connect(&ctx.resolver, ctx.mark).await?;
        Ok(Link::Dialed {
            io: Box::new(tcp),
            direct: true,
        })
    }

    /// Speaks this proxy's protocol over `io`, which reaches this proxy's server through
    /// earlier hops, so that the returned stream reaches `dst`.
    pub(crate) async fn handshake(&self, io: BoxIo, dst: &Destination) -> io::Result<BoxIo> {
        self.handshake_on(Link::through(io), dst).await
    }

    /// [`Self::handshake`] over any [`Link`].
    pub(crate) async fn handshake_on(&self, link: Link, dst: &Destination) -> io::Result<BoxIo> {
        match &self.kind {
            Kind::Socks5(s) => s.connect(link.into_io(), dst).await,
            Kind::Http(h) => h.connect(link.into_io(), dst).await,
            Kind::Shadowsocks(s) => s.wrap(link.into_io(), dst).await,
            Kind::Trojan(t) => t.connect(link, dst).await,
            Kind::Vless(v) => v.connect(link, dst).await,
            Kind::Vmess(v) => v.connect(link, dst).await,
            Kind::Hysteria2(_) | Kind::Tuic(_) => Err(DialError::QuicNotFirst {
                proxy: self.name.clone(),
            }
            .into()),
            Kind::Direct => Ok(link.into_io()),
        }
    }

    /// Whether this proxy carries UDP inside its own stream (so that stream may reach its
    /// server through earlier hops of a relay chain).
    /// A Shadowsocks proxy's UDP packets, to send through a relay chain's UDP; `None` for
    /// other proxies (and when its `udp` is off: the error says so).
    pub(crate) fn ss_packets(&self) -> Option<io::Result<super::ss::SsPackets>> {
        match &self.kind {
            Kind::Shadowsocks(s) if self.udp => Some(s.packets()),
            Kind::Shadowsocks(_) => Some(Err(DialError::UdpDisabled {
                proxy: self.name.clone(),
            }
            .into())),
            _ => None,
        }
    }

    /// A SOCKS5 proxy's client, for UDP through a relay chain's earlier hops.
    pub(crate) fn socks5(&self) -> Option<io::Result<&Socks5>> {
        match &self.kind {
            Kind::Socks5(s) if self.udp => Some(Ok(s)),
            Kind::Socks5(_) => Some(Err(DialError::UdpDisabled {
                proxy: self.name.clone(),
            }
            .into())),
            _ => None,
        }
    }

    pub(crate) fn udp_in_stream(&self) -> bool {
        matches!(self.kind, Kind::Trojan(_) | Kind::Vless(_) | Kind::Vmess(_))
    }

    /// A UDP association for one flow to `dst` inside `io`, a stream that reaches this
    /// proxy's server (through earlier hops); only for [`Self::udp_in_stream`] proxies.
    pub(crate) async fn open_udp_over(
        &self,
        io: BoxIo,
        dst: &Destination,
    ) -> io::Result<(UdpSend, UdpRecv)> {
        if !self.udp {
            return Err(DialError::UdpDisabled {
                proxy: self.name.clone(),
            }
            .into());
        }
        match &self.kind {
            Kind::Trojan(t) => t.udp(Link::through(io), dst).await,
            Kind::Vless(v) => v.udp(Link::through(io), dst).await,
            Kind::Vmess(v) => v.udp(Link::through(io), dst).await,
            _ => Err(DialError::UdpNotInStream {
                proxy: self.name.clone(),
            }
            .into()),
        }
    }

    /// A UDP association for one flow to `dst`.
    pub(crate) async fn open_udp(
        &self,
        ctx: &Ctx,
        dst: &Destination,
    ) -> io::Result<(UdpSend, UdpRecv)> {
        if !self.udp {
            return Err(DialError::UdpDisabled {
                proxy: self.name.clone(),
            }
            .into());
        }
        let server = self.server.resolve(&ctx.resolver).await?;
        let r = match &self.kind {
            Kind::Socks5(s) => {
                let tcp = self.server.connect(&ctx.resolver, ctx.mark).await?;
                s.udp(Box::new(tcp), server, ctx.mark).await
            }
            Kind::Shadowsocks(s) => s.udp(server, ctx.mark).map(super::udp::from_ss),
            Kind::Trojan(t) => t.udp(self.first_link(ctx).await?, dst).await,
            Kind::Vless(v) => v.udp(self.first_link(ctx).await?, dst).await,
            Kind::Vmess(v) => v.udp(self.first_link(ctx).await?, dst).await,
            Kind::Hysteria2(_) | Kind::Tuic(_) => self.quic_udp(&self.way(ctx, None)).await,
            Kind::Http(_) | Kind::Direct => Err(DialError::UdpOverHttp {
                proxy: self.name.clone(),
            }
            .into()),
        };
        r.inspect_err(|_| self.server.invalidate())
    }
}
