//! HTTP CONNECT upstream, optionally over TLS, optionally with basic auth. TCP only.

use std::io;

use tokio::io::AsyncWriteExt;
use tpgate_core::config::Credentials;
use tpgate_core::net::Destination;
use tpgate_core::proto::http;

use super::error::HandshakeError;
use super::framing::{read_msg, with_prefix};
use super::tls::TlsClient;
use super::BoxIo;

#[derive(Debug)]
pub(crate) struct Http {
    auth: Option<Credentials>,
    tls: Option<TlsClient>,
}

impl Http {
    pub(crate) fn new(auth: Option<Credentials>, tls: Option<TlsClient>) -> Self {
        Self { auth, tls }
    }

    pub(crate) async fn connect(&self, io: BoxIo, dst: &Destination) -> io::Result<BoxIo> {
        let mut io = match &self.tls {
            Some(t) => t.wrap(io).await?,
            None => io,
        };
        let mut out = Vec::with_capacity(256);
        let auth = self
            .auth
            .as_ref()
            .map(|c| (c.username.as_str(), c.password.as_str()));
        http::encode_connect(dst, auth, &mut out).map_err(HandshakeError::request)?;
        io.write_all(&out).await?;
        let mut buf = Vec::with_capacity(512);
        read_msg(&mut io, &mut buf, |b| {
            http::parse_connect_response(b).map(|r| r.map(|r| ((), r.head_len)))
        })
        .await?;
        Ok(with_prefix(io, buf))
    }
}
