//! What the QUIC proxies (hysteria2, tuic) share: a quinn client config on the same rustls
//! settings as the TLS outbounds, and an endpoint on a marked UDP socket of its own.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::AsyncUdpSocket;
use tpgate_core::config::Tls;

use super::error::TlsError;
use super::tls::TlsClient;

/// Idle QUIC connections are kept alive by pings this often...
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// ...and end after this long without an answer.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS choices beyond [`Tls`] that only the QUIC proxies make.
#[derive(Debug, Clone, Copy)]
pub(super) struct Options {
    /// 0-RTT on resumed sessions (tuic's `reduce-rtt`).
    pub(super) early_data: bool,
    /// Send the server name (tuic's `disable-sni` turns it off).
    pub(super) sni: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            early_data: false,
            sni: true,
        }
    }
}

/// The quinn client config for `tls` (its `alpn` offered) and the server name to ask for;
/// `transport` gets the keep-alive and idle timeout every QUIC proxy uses.
pub(super) fn client_config(
    tls: &Tls,
    server: &str,
    mut transport: quinn::TransportConfig,
    options: Options,
) -> Result<(quinn::ClientConfig, String), TlsError> {
    let alpn: Vec<&[u8]> = tls.alpn.iter().map(|a| a.as_bytes()).collect();
    let (config, server_name) = TlsClient::config(tls, server, &alpn)?;
    let config = if options.early_data || !options.sni {
        let mut c = (*config).clone();
        c.enable_early_data = options.early_data;
        c.enable_sni = options.sni;
        Arc::new(c)
    } else {
        config
    };
    let quic = QuicClientConfig::try_from(config).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
    client.transport_config(Arc::new(transport));
    Ok((client, server_name))
}

/// A client endpoint on a new UDP socket carrying the routing `mark` (so its packets are
/// never intercepted), of `remote`'s family; `wrap` may put a layer between QUIC and the
/// socket (obfuscation, port hopping).
pub(super) fn endpoint(
    remote: SocketAddr,
    mark: u32,
    client: quinn::ClientConfig,
    wrap: impl FnOnce(Arc<dyn AsyncUdpSocket>) -> Arc<dyn AsyncUdpSocket>,
) -> io::Result<quinn::Endpoint> {
    let sock = tpgate_sys::outbound_socket(remote.is_ipv6(), socket2::Type::DGRAM, mark)?;
    let any: SocketAddr = if remote.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    sock.bind(&any.into())?;
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let inner = runtime.wrap_udp_socket(sock.into())?;
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        wrap(inner),
        runtime,
    )?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// A QUIC stream's receiving half whose errors carry the connection's close reason (and
/// `hint`, what that reason likely means for the protocol): a bare "connection lost" is
/// all quinn says otherwise.
pub(super) struct Explained {
    inner: quinn::RecvStream,
    conn: quinn::Connection,
    hint: &'static str,
}

impl Explained {
    pub(super) fn new(
        inner: quinn::RecvStream,
        conn: quinn::Connection,
        hint: &'static str,
    ) -> Self {
        Self { inner, conn, hint }
    }
}

impl tokio::io::AsyncRead for Explained {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        match r {
            std::task::Poll::Ready(Err(e)) => {
                let why = match self.conn.close_reason() {
                    Some(reason) => format!("{e}: {reason}{}", self.hint),
                    None => e.to_string(),
                };
                std::task::Poll::Ready(Err(io::Error::new(e.kind(), why)))
            }
            other => other,
        }
    }
}
