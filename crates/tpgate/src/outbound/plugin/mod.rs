//! Shadowsocks plugins (mihomo's `plugin`): what carries an `ss` proxy's encrypted stream to
//! its server. simple-obfs wraps the stream in a fake HTTP upgrade or fake TLS
//! ([`obfs`]); v2ray-plugin is a WebSocket, optionally in TLS, reusing the transports of
//! VMess and VLESS ([`super::transport`]), with Mux.Cool frames inside unless `mux: false`
//! (the v2ray-plugin server wants them: it reads every stream as Mux.Cool); shadow-tls v2 borrows a real TLS handshake with
//! another server, then frames the stream as TLS records ([`shadow_tls`]). UDP never goes
//! through a plugin: as mihomo does, it is plain Shadowsocks UDP to the server's address.

mod framed;
mod obfs;
mod shadow_tls;

use std::io;

use tpgate_core::config::{ProxyNetwork, SsPlugin};

use super::error::TlsError;
use super::transport::{Link, Protocol, Transport};
use super::BoxIo;

/// One proxy's plugin, ready to carry its connections.
#[derive(Debug)]
pub(crate) enum Plugin {
    Obfs(obfs::ObfsClient),
    /// v2ray-plugin: a WebSocket transport, with Mux.Cool inside (`mux`).
    V2ray {
        transport: Transport,
        mux: bool,
    },
    ShadowTls(shadow_tls::ShadowTlsClient),
}

impl Plugin {
    /// The plugin toward `server:port`.
    pub(crate) fn new(plugin: &SsPlugin, server: &str, port: u16) -> Result<Self, TlsError> {
        Ok(match plugin {
            SsPlugin::Obfs { mode, host } => Self::Obfs(obfs::ObfsClient::new(*mode, host, port)),
            SsPlugin::V2ray { ws, tls, mux } => {
                // VLESS's WebSocket defaults are v2ray-plugin's: the request names the
                // `Host` header (always set here), TLS offers http/1.1 and names it too.
                let network = ProxyNetwork::Ws(ws.clone());
                let transport =
                    Transport::new(Protocol::Vless, &network, tls.as_ref(), server, port)?;
                Self::V2ray {
                    transport,
                    mux: *mux,
                }
            }
            SsPlugin::ShadowTls {
                host,
                password,
                skip_cert_verify,
                version,
            } => Self::ShadowTls(shadow_tls::ShadowTlsClient::new(
                host,
                password,
                *skip_cert_verify,
                *version,
            )?),
        })
    }

    /// Turns a connection to the server into the stream Shadowsocks speaks over.
    pub(crate) async fn open(&self, io: BoxIo) -> io::Result<BoxIo> {
        match self {
            Self::Obfs(o) => Ok(o.open(io)),
            Self::V2ray { transport, mux } => {
                let io = transport.open(Link::through(io)).await?;
                Ok(if *mux {
                    Box::new(framed::Framed::new(io, framed::Framing::MuxCool))
                } else {
                    io
                })
            }
            Self::ShadowTls(s) => s.open(io).await,
        }
    }
}

/// Why a plugin's stream failed. Carried in an `io::Error` of kind `InvalidData`
/// (`UnexpectedEof` for [`PluginError::Closed`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PluginError {
    /// The obfs server's answer to the fake HTTP upgrade is not a `101`.
    #[error("obfs: {0}")]
    ObfsHttp(tpgate_core::proto::ws::UpgradeError),
    /// The obfs or shadow-tls server sent records that server does not send.
    #[error("{plugin}: {error}")]
    Records {
        plugin: &'static str,
        error: tpgate_core::proto::obfs::RecordError,
    },
    /// v2ray-plugin's server sent what is not a Mux.Cool frame.
    #[error("v2ray-plugin: {0}")]
    Mux(tpgate_core::proto::mux_cool::MuxError),
    /// The server ended the stream before sending a byte of it.
    #[error("{0}: the server ended the stream without a reply")]
    NoReply(&'static str),
    /// The server closed inside a record or before its answer was whole.
    #[error("{0}: the server closed mid-record")]
    Closed(&'static str),
}

impl From<PluginError> for io::Error {
    fn from(e: PluginError) -> Self {
        let kind = match e {
            PluginError::Closed(_) => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        Self::new(kind, e)
    }
}
