//! What carries a VMess, VLESS or Trojan stream to its server (mihomo's `network`): TCP,
//! a WebSocket or HTTP upgrade, gRPC (gun over HTTP/2), `h2` (an HTTP/2 PUT) or `http`
//! (V2Ray's HTTP header), each inside TLS when the proxy has TLS. Every carrier yields a
//! plain byte stream, so the protocols above it (and their UDP, which rides the same
//! stream) do not know which one they run over. The carriers' own bytes come from
//! `tpgate_core::proto::{ws, gun, http_header}`; framing after a
//! WebSocket upgrade is tungstenite's, HTTP/2 is the `h2` crate's. gRPC tunnels share one
//! HTTP/2 connection per proxy when it is dialed straight (see [`http2`]).

mod http2;
mod http_header;
mod ws;

use std::io;
use std::sync::Arc;

use tpgate_core::config::{ProxyNetwork, Tls};

use super::error::TlsError;
use super::tls::TlsClient;
use super::BoxIo;

/// Which proxy the transport serves: the defaults for names and ALPN differ (mihomo's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Trojan,
    Vless,
    Vmess,
}

/// TLS (optional) and the carrier above it.
#[derive(Debug)]
pub(crate) struct Transport {
    tls: Option<TlsClient>,
    carrier: Carrier,
}

#[derive(Debug)]
enum Carrier {
    Tcp,
    Ws(Arc<ws::WsClient>),
    /// gRPC or `h2`: one HTTP/2 request.
    Http2(http2::Http2Client),
    /// `http`: V2Ray's HTTP header obfuscation.
    HttpHeader(http_header::HttpHeaderClient),
}

impl Transport {
    /// The transport toward `server:port` for `network`, inside `tls` when given (always
    /// for Trojan).
    pub(crate) fn new(
        protocol: Protocol,
        network: &ProxyNetwork,
        tls: Option<&Tls>,
        server: &str,
        port: u16,
    ) -> Result<Self, TlsError> {
        // mihomo: a Trojan `sni` is also the name in its HTTP requests; for VMess and VLESS
        // the request names the server, and TLS names the `Host` header when no
        // `servername` is given.
        let trojan_name = tls
            .filter(|_| protocol == Protocol::Trojan)
            .and_then(|t| t.sni.clone());
        let (carrier, tls) = match network {
            ProxyNetwork::Tcp => {
                let alpn: Vec<&[u8]> = tls
                    .map(|t| t.alpn.iter().map(|a| a.as_bytes()).collect())
                    .unwrap_or_default();
                let tls = tls
                    .map(|t| TlsClient::with_alpn(t, server, &alpn))
                    .transpose()?;
                (Carrier::Tcp, tls)
            }
            ProxyNetwork::Ws(opts) => {
                let host = trojan_name.unwrap_or_else(|| server.to_owned());
                let tls = match tls {
                    Some(t) => {
                        let mut t = t.clone();
                        if t.sni.is_none() && protocol != Protocol::Trojan {
                            t.sni = opts.host_header().map(str::to_owned);
                        }
                        let alpn: Vec<&[u8]> = match protocol {
                            Protocol::Trojan if !t.alpn.is_empty() => {
                                t.alpn.iter().map(|a| a.as_bytes()).collect()
                            }
                            _ => vec![b"http/1.1"],
                        };
                        Some(TlsClient::with_alpn(&t, server, &alpn)?)
                    }
                    None => None,
                };
                (Carrier::Ws(Arc::new(ws::WsClient::new(opts, host))), tls)
            }
            ProxyNetwork::Grpc(opts) => {
                let authority = match (protocol, tls.and_then(|t| t.sni.as_deref())) {
                    (_, Some(sni)) => sni.to_owned(),
                    (Protocol::Trojan, None) => server.to_owned(),
                    _ => format_authority(server, port),
                };
                let tls = tls
                    .map(|t| TlsClient::with_alpn(t, server, &[b"h2"]))
                    .transpose()?;
                let carrier = Carrier::Http2(http2::Http2Client::grpc(
                    &opts.service_name,
                    &authority,
                    tls.is_some(),
                ));
                (carrier, tls)
            }
            ProxyNetwork::Http(opts) => {
                let alpn: Vec<&[u8]> = tls
                    .map(|t| t.alpn.iter().map(|a| a.as_bytes()).collect())
                    .unwrap_or_default();
                let tls = tls
                    .map(|t| TlsClient::with_alpn(t, server, &alpn))
                    .transpose()?;
                let carrier = Carrier::HttpHeader(http_header::HttpHeaderClient::new(opts, server));
                (carrier, tls)
            }
            ProxyNetwork::H2(opts) => {
                // mihomo: VMess over h2 is always inside TLS; VLESS only with `tls: true`.
                let tls = match (tls, protocol) {
                    (Some(t), _) => Some(t.clone()),
                    (None, Protocol::Vmess) => Some(Tls::default()),
                    (None, _) => None,
                };
                let tls = tls
                    .map(|t| TlsClient::with_alpn(&t, server, &[b"h2"]))
                    .transpose()?;
                let carrier = Carrier::Http2(http2::Http2Client::h2(
                    &opts.hosts,
                    &opts.path,
                    tls.is_some(),
                ));
                (carrier, tls)
            }
        };
        Ok(Self { tls, carrier })
    }

    /// The TLS client when the stream is TLS straight over TCP (what XTLS Vision needs).
    pub(crate) fn tls_over_tcp(&self) -> Option<&TlsClient> {
        match self.carrier {
            Carrier::Tcp => self.tls.as_ref(),
            _ => None,
        }
    }

    /// A stream on the connection this transport shares (gRPC), when it has a live one
    /// with room: the proxy needs no new connection to its server.
    pub(crate) fn shared_stream(&self) -> Option<io::Result<BoxIo>> {
        match &self.carrier {
            Carrier::Http2(h) => h.open_shared(),
            _ => None,
        }
    }

    /// Turns a connection to the server into the stream the proxy protocol speaks over.
    pub(crate) async fn open(&self, link: Link) -> io::Result<BoxIo> {
        let (io, direct) = match link {
            Link::Carried(io) => return Ok(io),
            Link::Dialed { io, direct } => (io, direct),
        };
        let io = match &self.tls {
            Some(tls) => tls.wrap(io).await?,
            None => io,
        };
        match &self.carrier {
            Carrier::Tcp => Ok(io),
            Carrier::Ws(ws) => ws::open(ws.clone(), io).await,
            Carrier::Http2(h) => h.open(io, direct).await,
            Carrier::HttpHeader(h) => h.open(io),
        }
    }
}

/// What a proxy protocol speaks over.
pub(crate) enum Link {
    /// A connection that reaches the server, for the transport to wrap; `direct` when it
    /// was dialed straight from the gateway (so a gRPC connection on it may be shared).
    Dialed { io: BoxIo, direct: bool },
    /// A stream the transport already carries: a tunnel on the shared gRPC connection.
    Carried(BoxIo),
}

impl Link {
    /// A connection through earlier hops.
    pub(crate) fn through(io: BoxIo) -> Self {
        Self::Dialed { io, direct: false }
    }

    /// The stream, whichever it is (for the protocols without a transport).
    pub(crate) fn into_io(self) -> BoxIo {
        match self {
            Self::Dialed { io, .. } | Self::Carried(io) => io,
        }
    }
}

/// `host:port`, bracketing an IPv6 literal.
fn format_authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
