//! Why asking the upstream nameservers failed: [`UpstreamError`]. The exchanges under
//! `Forwarder` run on tokio sockets and streams and return `io::Error`; what goes wrong in
//! tpgate's own handling is one of these variants, carried in an `io::Error` of the kind it
//! always had, so a caller downcasts (`io::Error::get_ref`) instead of reading the message.

use std::io;
use std::num::TryFromIntError;

use hickory_proto::op::ResponseCode;
use hickory_proto::ProtoError;

/// One query to the upstream nameservers, or to one of them, failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No nameserver to ask (none configured, and /etc/resolv.conf names none but this
    /// server).
    #[error("no nameserver")]
    NoNameserver,
    /// `server` did not finish the exchange in time.
    #[error("{server} timed out")]
    Timeout { server: String },
    /// Asking `server` failed: connecting, TLS, I/O or its reply, as `source` says.
    #[error("{server}: {source}")]
    Exchange {
        server: String,
        #[source]
        source: io::Error,
    },
    /// `server` answered SERVFAIL or REFUSED, which counts as no answer.
    #[error("{server} answered {code}")]
    Refused { server: String, code: ResponseCode },
    /// The query could not be encoded.
    #[error(transparent)]
    Encode(ProtoError),
    /// The reply is not a DNS message.
    #[error(transparent)]
    Malformed(ProtoError),
    /// The query is longer than a TCP frame can carry (65,535 bytes).
    #[error(transparent)]
    TooLong(TryFromIntError),
    /// DoT: the query is too short to have an id, or too long for a frame.
    #[error("not a query that fits a frame")]
    Unframeable,
    /// The reply's id is not the query's.
    #[error("reply id mismatch")]
    IdMismatch,
    /// The reply does not answer the query (not a response, another question, truncated
    /// over a stream): never cached, never handed on.
    #[error("not an answer to the query: {0}")]
    NotAnAnswer(tpgate_core::dns::reply::NotAnAnswer),
    /// A DoT or DoH server without TLS settings (the loader never builds one).
    #[error("no TLS settings")]
    NoTls,
    /// A name to resolve (a server's, or a flow's for DIRECT) is not a valid DNS name.
    #[error(transparent)]
    BadName(ProtoError),
    /// The server is written as a name and there is no bootstrap server to resolve it.
    #[error("no default-nameserver")]
    NoBootstrap,
    /// The nameservers know no address of `host` (a server's name asked of the bootstrap
    /// servers, or a flow's name).
    #[error("{host}: no address")]
    NoAddress { host: String },
    /// The bootstrap servers did not answer in time.
    #[error("bootstrap timed out")]
    BootstrapTimeout,
    /// DoT: the kept connection closed before the reply came.
    #[error("connection closed before the reply")]
    Closed,
    /// DoT: no reply on the kept connection in time; the connection is dropped.
    #[error("no reply")]
    NoReply,
    /// DoH: the HTTP exchange failed (handshake, request or reading the body).
    #[error(transparent)]
    Http(hyper::Error),
    /// DoH: the request could not be built from the configured path and host.
    #[error(transparent)]
    Request(http::Error),
    /// DoH: the server answered with a status other than success.
    #[error("HTTP {0}")]
    Status(hyper::StatusCode),
}

impl UpstreamError {
    pub(crate) fn kind(&self) -> io::ErrorKind {
        match self {
            Self::NoNameserver | Self::NoBootstrap | Self::NoAddress { .. } => {
                io::ErrorKind::NotFound
            }
            Self::Timeout { .. } | Self::BootstrapTimeout | Self::NoReply => {
                io::ErrorKind::TimedOut
            }
            Self::Exchange { source, .. } => source.kind(),
            Self::Malformed(_) | Self::NotAnAnswer(_) => io::ErrorKind::InvalidData,
            Self::BadName(_) => io::ErrorKind::InvalidInput,
            Self::Closed => io::ErrorKind::ConnectionAborted,
            Self::Refused { .. }
            | Self::Encode(_)
            | Self::TooLong(_)
            | Self::Unframeable
            | Self::IdMismatch
            | Self::NoTls
            | Self::Http(_)
            | Self::Request(_)
            | Self::Status(_) => io::ErrorKind::Other,
        }
    }
}

impl From<UpstreamError> for io::Error {
    fn from(e: UpstreamError) -> Self {
        Self::new(e.kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_messages_are_the_ones_callers_saw_before() {
        let e = io::Error::from(UpstreamError::NoReply);
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "no reply");
        let inner = io::Error::from(UpstreamError::Closed);
        let e = UpstreamError::Exchange {
            server: "tls://192.0.2.53".into(),
            source: inner,
        };
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(
            e.to_string(),
            "tls://192.0.2.53: connection closed before the reply"
        );
        let e = io::Error::from(e);
        let typed = e.get_ref().and_then(|e| e.downcast_ref::<UpstreamError>());
        assert!(matches!(typed, Some(UpstreamError::Exchange { .. })));
    }
}
