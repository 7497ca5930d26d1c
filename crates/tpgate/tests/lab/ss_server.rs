//! A real Shadowsocks server on a lab [`WanHost`]: shadowsocks-rust's server
//! (`shadowsocks-service`, the code behind `ssserver`) on a tokio runtime whose threads live
//! in the host's namespace, TCP and UDP, dual-stack on `[::]:8388`. Stopping it drops the
//! runtime, which closes the listener and every relayed connection, like killing `ssserver`.
//!
//! Included with `#[path]` by the tests that need it (it needs the `shadowsocks-service`
//! dev-dependency), not from `lab/mod.rs`.

// Each test binary uses a different part.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::thread::JoinHandle;
use std::time::Duration;

use shadowsocks_service::server::ServerBuilder;
pub(crate) use shadowsocks_service::shadowsocks::config::Mode;
use shadowsocks_service::shadowsocks::config::ServerConfig;
use shadowsocks_service::shadowsocks::crypto::CipherKind;
use tokio::sync::oneshot;

use crate::lab::{Family, Lab, WanHost};

/// The port every lab Shadowsocks server listens on.
pub(crate) const SS_PORT: u16 = 8388;

/// A 2022 cipher and its key (base64 of 16 bytes, as SIP022 requires for AES-128).
pub(crate) const SS2022_METHOD: &str = "2022-blake3-aes-128-gcm";
pub(crate) const SS2022_PASSWORD: &str = "AAECAwQFBgcICQoLDA0ODw==";
/// A classic AEAD cipher with a plain password.
pub(crate) const SS_AEAD_METHOD: &str = "chacha20-ietf-poly1305";
pub(crate) const SS_AEAD_PASSWORD: &str = "lab-shadowsocks-password";

/// A running Shadowsocks server; stopped on drop.
pub(crate) struct SsServer<'lab> {
    pub(crate) host: &'lab WanHost,
    pub(crate) method: &'static str,
    pub(crate) password: &'static str,
    port: u16,
    mode: Mode,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl<'lab> SsServer<'lab> {
    /// Starts a server with `method`/`password` on `lab.hosts[host]`; returns once it listens.
    pub(crate) fn start(
        lab: &'lab Lab,
        host: usize,
        method: &'static str,
        password: &'static str,
    ) -> Self {
        Self::start_on(lab, host, method, password, SS_PORT, Mode::TcpAndUdp)
    }

    /// [`Self::start`] on `port`, for TCP, UDP or both (`mode`): behind a plugin, TCP comes
    /// from the plugin's server while UDP comes straight to the plugin's port.
    pub(crate) fn start_on(
        lab: &'lab Lab,
        host: usize,
        method: &'static str,
        password: &'static str,
        port: u16,
        mode: Mode,
    ) -> Self {
        let mut s = Self {
            host: &lab.hosts[host],
            method,
            password,
            port,
            mode,
            stop: None,
            thread: None,
        };
        s.restart();
        s
    }

    /// Where tpgate connects: the host's IPv4 address.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host.v4, self.port)
    }

    /// What a destination sees for traffic through this server.
    pub(crate) fn egress(&self, family: Family) -> IpAddr {
        self.host.addr(family)
    }

    /// The server's settings, as a client needs them.
    pub(crate) fn client_config(&self) -> ServerConfig {
        let method: CipherKind = self.method.parse().expect("cipher name");
        let mut cfg = ServerConfig::new(self.addr(), self.password, method).expect("server config");
        cfg.set_mode(Mode::TcpAndUdp);
        cfg
    }

    /// (Re)starts the server; returns once it listens.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let method: CipherKind = self.method.parse().expect("cipher name");
        let listen = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), self.port);
        let mut cfg = ServerConfig::new(listen, self.password, method).expect("server config");
        cfg.set_mode(self.mode);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = self.host.ns.spawn_thread(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let server = match ServerBuilder::new(cfg).build().await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    r = server.run() => eprintln!("shadowsocks server ended: {r:?}"),
                    _ = stop_rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("shadowsocks server on {}: {e}", self.host.ns.name),
            Err(e) => panic!(
                "shadowsocks server on {} did not start: {e}",
                self.host.ns.name
            ),
        }
        self.stop = Some(stop_tx);
        self.thread = Some(thread);
    }

    /// Stops the server: closes its sockets and every connection it relays.
    pub(crate) fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The proxy entry for tpgate's config.
    pub(crate) fn proxy_yaml(&self, name: &str) -> String {
        format!(
            "{{name: {name}, type: ss, server: {}, port: {}, cipher: {}, password: \"{}\", udp: true}}",
            self.host.v4, self.port, self.method, self.password
        )
    }
}

impl Drop for SsServer<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A current-thread runtime for one client exchange.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// From `ns`, connects to `dst` through the Shadowsocks server with shadowsocks-rust's own
/// client, sends `data`, half-closes and reads to EOF; returns what came back.
pub(crate) fn ss_tcp_echo(
    ns: &crate::lab::Netns,
    server: &SsServer<'_>,
    dst: SocketAddr,
    data: &[u8],
) -> std::io::Result<Vec<u8>> {
    use shadowsocks_service::shadowsocks::config::ServerType;
    use shadowsocks_service::shadowsocks::context::Context;
    use shadowsocks_service::shadowsocks::relay::tcprelay::ProxyClientStream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let std_stream = crate::lab::tcp_connect(ns, server.addr())?;
    std_stream.set_nonblocking(true)?;
    let cfg = server.client_config();
    client_runtime().block_on(async move {
        let stream = tokio::net::TcpStream::from_std(std_stream)?;
        let ctx = Context::new_shared(ServerType::Local);
        let s = ProxyClientStream::from_stream(ctx, stream, &cfg, dst);
        let (mut rd, mut wr) = tokio::io::split(s);
        let limit = crate::lab::IO_TIMEOUT;
        let write = async {
            // The first write carries the request header; shadowsocks-rust's client wants
            // it in one piece (a debug assertion), so keep it small.
            let (first, rest) = data.split_at(data.len().min(1024));
            wr.write_all(first).await?;
            wr.write_all(rest).await?;
            wr.shutdown().await
        };
        let mut got = Vec::new();
        let read = rd.read_to_end(&mut got);
        let (w, r) = tokio::time::timeout(limit, async { tokio::join!(write, read) })
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "ss echo"))?;
        w?;
        r?;
        Ok(got)
    })
}

/// From `ns`, sends `payload` to `dst` over the Shadowsocks server's UDP relay and waits for
/// one reply; returns the source address the server reported and the payload.
pub(crate) fn ss_udp_exchange(
    ns: &crate::lab::Netns,
    server: &SsServer<'_>,
    dst: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> std::io::Result<(SocketAddr, Vec<u8>)> {
    use shadowsocks_service::shadowsocks::config::ServerType;
    use shadowsocks_service::shadowsocks::context::Context;
    use shadowsocks_service::shadowsocks::net::UdpSocket as ShadowUdpSocket;
    use shadowsocks_service::shadowsocks::relay::socks5::Address;
    use shadowsocks_service::shadowsocks::relay::udprelay::options::UdpSocketControlData;
    use shadowsocks_service::shadowsocks::relay::udprelay::proxy_socket::{
        ProxySocket, UdpSocketType,
    };

    let std_socket = ns.enter(|| std::net::UdpSocket::bind(Family::V4.any()))?;
    std_socket.connect(server.addr())?;
    std_socket.set_nonblocking(true)?;
    let cfg = server.client_config();
    client_runtime().block_on(async move {
        let socket = ShadowUdpSocket::from(tokio::net::UdpSocket::from_std(std_socket)?);
        let ctx = Context::new_shared(ServerType::Local);
        let proxy = ProxySocket::from_socket(UdpSocketType::Client, ctx, &cfg, socket);
        // SIP022 keys a UDP session by the client's session id; a fresh one per exchange,
        // or the server drops the packet as a replay of an earlier exchange.
        let mut ctrl = UdpSocketControlData::default();
        ctrl.client_session_id = fresh_session_id();
        ctrl.packet_id = 1;
        proxy
            .send_with_ctrl(&Address::SocketAddress(dst), &ctrl, payload)
            .await?;
        let mut buf = vec![0u8; 65536];
        let (n, from, _) = tokio::time::timeout(wait, proxy.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "ss udp reply"))??;
        let from = match from {
            Address::SocketAddress(a) => a,
            Address::DomainNameAddress(name, _) => {
                return Err(std::io::Error::other(format!("reply from a name: {name}")))
            }
        };
        Ok((from, buf[..n].to_vec()))
    })
}

/// A session id no earlier exchange of this process used: clock, pid and a counter mixed.
fn fresh_session_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40) ^ N.fetch_add(1, Ordering::Relaxed)
}
