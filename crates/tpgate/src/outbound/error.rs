//! What goes wrong on the way out, one enum per layer: reaching a server or a chain of
//! upstreams ([`DialError`]), speaking a proxy's protocol once connected
//! ([`HandshakeError`]), setting up TLS toward a server ([`TlsError`]) and finding a
//! server's address ([`ResolveError`]). The dialers still return `io::Error`, because their
//! results travel through tokio's I/O traits and on to the relay; each enum converts into
//! an `io::Error` of the kind that failure always had, carrying the enum, so a caller that
//! needs the reason downcasts (`io::Error::get_ref`) instead of reading the message.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;

use hickory_proto::ProtoError;

/// Reaching a server, or the end of a chain of upstreams.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    /// The TCP connection did not stand within `CONNECT_TIMEOUT`.
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// A relay chain without hops (the loader never builds one).
    #[error("empty chain")]
    EmptyChain,
    /// An upstream's handshake did not finish within `HANDSHAKE_TIMEOUT`.
    #[error("{hop}: handshake timed out")]
    HandshakeTimeout { hop: String },
    /// An upstream's handshake failed; `source` says how (often a [`HandshakeError`]).
    #[error("{hop}: {source}")]
    Hop {
        hop: String,
        #[source]
        source: io::Error,
    },
    /// A UDP flow picked a proxy whose `udp` is off.
    #[error("{proxy}: udp is not enabled for this proxy")]
    UdpDisabled { proxy: String },
    /// A UDP flow picked an HTTP proxy, which carries TCP only.
    #[error("{proxy}: HTTP proxies carry TCP only")]
    UdpOverHttp { proxy: String },
    /// A hysteria2 or tuic proxy asked to speak over another hop's stream: a chain
    /// reaches a QUIC proxy through the earlier hops' UDP instead, so only a mistake in
    /// tpgate gets here.
    #[error("{proxy}: a QUIC proxy does not run over another hop's stream")]
    QuicNotFirst { proxy: String },
    /// UDP through a relay chain whose last hop carries no UDP (http, direct).
    #[error("{proxy}: UDP through a relay chain needs a last hop that carries UDP (trojan, vless, vmess, Shadowsocks, SOCKS5, hysteria2, tuic)")]
    UdpNotInStream { proxy: String },
}

impl DialError {
    pub(crate) fn kind(&self) -> io::ErrorKind {
        match self {
            Self::ConnectTimeout(_) | Self::HandshakeTimeout { .. } => io::ErrorKind::TimedOut,
            Self::EmptyChain => io::ErrorKind::Other,
            Self::Hop { source, .. } => source.kind(),
            // Alive but unable to carry the flow: not a reason to fail the member over.
            Self::UdpDisabled { .. }
            | Self::UdpOverHttp { .. }
            | Self::QuicNotFirst { .. }
            | Self::UdpNotInStream { .. } => io::ErrorKind::Unsupported,
        }
    }
}

impl From<DialError> for io::Error {
    fn from(e: DialError) -> Self {
        Self::new(e.kind(), e)
    }
}

/// Speaking a proxy's protocol (SOCKS5, HTTP CONNECT, Trojan) over a connection that
/// reaches it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The SOCKS5 server wants a username and password and the config has none.
    #[error("server asked for a password none was configured")]
    PasswordNotConfigured,
    /// The request cannot be written in the protocol (a name or credential too long).
    #[error(transparent)]
    Request(Box<dyn StdError + Send + Sync>),
    /// The proxy's reply is malformed, or a refusal.
    #[error(transparent)]
    Reply(Box<dyn StdError + Send + Sync>),
    /// The proxy sent more than a handshake reply can be without completing one.
    #[error("handshake reply too long")]
    ReplyTooLong,
    /// The proxy closed the connection before its reply was complete.
    #[error("proxy closed during the handshake")]
    Closed,
}

impl HandshakeError {
    pub(crate) fn request(e: impl StdError + Send + Sync + 'static) -> Self {
        Self::Request(Box::new(e))
    }

    pub(crate) fn kind(&self) -> io::ErrorKind {
        match self {
            Self::PasswordNotConfigured => io::ErrorKind::Other,
            Self::Request(_) => io::ErrorKind::InvalidInput,
            Self::Reply(_) | Self::ReplyTooLong => io::ErrorKind::InvalidData,
            Self::Closed => io::ErrorKind::UnexpectedEof,
        }
    }
}

impl From<HandshakeError> for io::Error {
    fn from(e: HandshakeError) -> Self {
        Self::new(e.kind(), e)
    }
}

/// Building the TLS client settings for a server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// rustls refused the protocol versions asked for.
    #[error(transparent)]
    Versions(rustls::Error),
    /// The SNI (`sni`, else the server's host) is not a valid server name.
    #[error(transparent)]
    ServerName(rustls::pki_types::InvalidDnsNameError),
    /// The TLS settings cannot carry QUIC (hysteria2).
    #[error("TLS for QUIC: {0}")]
    Quic(String),
}

impl TlsError {
    pub(crate) fn kind(&self) -> io::ErrorKind {
        match self {
            Self::Versions(_) => io::ErrorKind::Other,
            Self::ServerName(_) | Self::Quic(_) => io::ErrorKind::InvalidInput,
        }
    }
}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> Self {
        Self::new(e.kind(), e)
    }
}

/// Finding the address of an upstream's server name with the marked resolver.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// `host` is not a valid DNS name.
    #[error("{host}: {source}")]
    BadName {
        host: String,
        #[source]
        source: ProtoError,
    },
    /// No nameserver knew an address of `host`.
    #[error("{host}: no address")]
    NoAddress { host: String },
    /// `server` did not answer in time.
    #[error("DNS {server} timed out")]
    Timeout { server: SocketAddr },
    /// The query could not be encoded.
    #[error(transparent)]
    Encode(ProtoError),
}

impl ResolveError {
    pub(crate) fn kind(&self) -> io::ErrorKind {
        match self {
            Self::BadName { .. } => io::ErrorKind::InvalidInput,
            Self::NoAddress { .. } => io::ErrorKind::NotFound,
            Self::Timeout { .. } => io::ErrorKind::TimedOut,
            Self::Encode(_) => io::ErrorKind::Other,
        }
    }
}

impl From<ResolveError> for io::Error {
    fn from(e: ResolveError) -> Self {
        Self::new(e.kind(), e)
    }
}

/// The metrics' word for why a flow through an upstream failed: `connect_timeout`,
/// `handshake_timeout`, `handshake` (the proxy refused or spoke wrongly), `tls`, `resolve`,
/// `unsupported` (the member cannot carry this flow), or the socket error's kind
/// (`refused`, `reset`, `unreachable`, `other`).
pub(crate) fn failure_reason(e: &io::Error) -> &'static str {
    let inner = e.get_ref();
    if let Some(d) = inner.and_then(|i| i.downcast_ref::<DialError>()) {
        return match d {
            DialError::ConnectTimeout(_) => "connect_timeout",
            DialError::HandshakeTimeout { .. } => "handshake_timeout",
            DialError::UdpDisabled { .. }
            | DialError::UdpOverHttp { .. }
            | DialError::QuicNotFirst { .. }
            | DialError::UdpNotInStream { .. } => "unsupported",
            DialError::EmptyChain => "other",
            DialError::Hop { source, .. } => failure_reason(source),
        };
    }
    if inner.is_some_and(|i| i.is::<HandshakeError>()) {
        return "handshake";
    }
    if inner.is_some_and(|i| i.is::<TlsError>()) {
        return "tls";
    }
    if inner.is_some_and(|i| i.is::<ResolveError>()) {
        return "resolve";
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => "reset",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => "unreachable",
        io::ErrorKind::Unsupported => "unsupported",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed<E: StdError + 'static>(e: &io::Error) -> Option<&E> {
        e.get_ref()?.downcast_ref()
    }

    #[test]
    fn the_reason_survives_the_trip_through_io_error() {
        let e = io::Error::from(DialError::UdpDisabled { proxy: "a".into() });
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert_eq!(e.to_string(), "a: udp is not enabled for this proxy");
        assert!(matches!(typed(&e), Some(DialError::UdpDisabled { .. })));

        // A hop keeps the kind of what failed inside it, and that reason stays reachable.
        let inner = io::Error::from(HandshakeError::Closed);
        let e = io::Error::from(DialError::Hop {
            hop: "b".into(),
            source: inner,
        });
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(e.to_string(), "b: proxy closed during the handshake");
        let Some(DialError::Hop { source, .. }) = typed(&e) else {
            panic!("not a hop error: {e:?}");
        };
        assert!(matches!(typed(source), Some(HandshakeError::Closed)));
    }
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn failure_reasons_name_the_stage_that_failed() {
        let addr: SocketAddr = "192.0.2.1:1080".parse().unwrap();
        let cases: [(io::Error, &str); 6] = [
            (DialError::ConnectTimeout(addr).into(), "connect_timeout"),
            (
                DialError::HandshakeTimeout { hop: "a".into() }.into(),
                "handshake_timeout",
            ),
            (
                DialError::Hop {
                    hop: "a".into(),
                    source: io::Error::from(io::ErrorKind::ConnectionRefused),
                }
                .into(),
                "refused",
            ),
            (
                DialError::UdpOverHttp { proxy: "h".into() }.into(),
                "unsupported",
            ),
            (io::Error::from(io::ErrorKind::ConnectionReset), "reset"),
            (io::Error::from(io::ErrorKind::InvalidInput), "other"),
        ];
        for (e, want) in cases {
            assert_eq!(failure_reason(&e), want, "{e}");
        }
    }
}
