//! simple-obfs: its settings; the stream is [`Framed`] (the request carrying the first write,
//! then raw bytes in HTTP mode or TLS records in TLS mode).

use tpgate_core::config::ObfsMode;

use super::framed::{Framed, Framing};
use crate::outbound::BoxIo;

/// One proxy's obfs settings.
#[derive(Debug)]
pub(crate) struct ObfsClient {
    mode: ObfsMode,
    host: String,
    /// The server's port: the HTTP request's `Host` names it unless it is 80.
    port: u16,
}

impl ObfsClient {
    pub(crate) fn new(mode: ObfsMode, host: &str, port: u16) -> Self {
        Self {
            mode,
            host: host.to_owned(),
            port,
        }
    }

    /// Wraps a connection to the server; the fake request goes out with the first write.
    pub(crate) fn open(&self, io: BoxIo) -> BoxIo {
        let framing = match self.mode {
            ObfsMode::Http => Framing::ObfsHttp {
                host: self.host.clone(),
                port: self.port,
            },
            ObfsMode::Tls => Framing::ObfsTls {
                host: self.host.clone(),
            },
        };
        Box::new(Framed::new(io, framing))
    }
}
