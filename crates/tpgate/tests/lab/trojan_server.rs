//! A Trojan server for the lab, written from the protocol description and independent of
//! tpgate's own code: TLS (rustls, throwaway rcgen certificate for `trojan.test`), then
//! `hex(SHA224(password)) CRLF CMD ATYP ADDR PORT CRLF`; CMD 1 (CONNECT) relays TCP, CMD 3
//! (UDP ASSOCIATE) carries datagrams framed as `ATYP ADDR PORT LENGTH CRLF PAYLOAD` both
//! ways. A wrong password closes the connection. Runs on a tokio runtime whose threads live
//! in a lab host's namespace; stopping it drops the runtime and every connection with it.
//!
//! Included with `#[path]` by the tests that need it (rcgen, sha2 dev-dependencies).

// Each test binary uses a different part.
#![allow(dead_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha224};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::lab::{Family, Lab, WanHost};

pub(crate) const TROJAN_PORT: u16 = 443;
pub(crate) const TROJAN_SNI: &str = "trojan.test";
pub(crate) const TROJAN_PASSWORD: &str = "lab-trojan-secret";

/// What the server was asked, for tests to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TrojanRequest {
    Connect(SocketAddr),
    UdpAssociate,
    /// A connection whose password hash did not match.
    BadPassword,
}

/// A throwaway self-signed certificate (and its key) for [`TROJAN_SNI`].
pub(crate) struct TrojanCert {
    pub(crate) cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl TrojanCert {
    pub(crate) fn generate() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec![TROJAN_SNI.to_owned()])
            .expect("generate certificate");
        Self {
            cert: ck.cert.der().clone(),
            key: ck.signing_key.serialize_der(),
        }
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let cfg = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .expect("TLS server config");
        Arc::new(cfg)
    }
}

/// `hex(SHA224(password))`, the 56 characters a client sends first.
pub(crate) fn trojan_hash(password: &str) -> String {
    Sha224::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A running Trojan server; stopped on drop.
pub(crate) struct TrojanServer<'lab> {
    pub(crate) host: &'lab WanHost,
    pub(crate) cert: TrojanCert,
    requests: Arc<Mutex<Vec<TrojanRequest>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl<'lab> TrojanServer<'lab> {
    /// Starts the server on `lab.hosts[host]`, port 443, dual-stack; returns once it listens.
    pub(crate) fn start(lab: &'lab Lab, host: usize) -> Self {
        let mut s = Self {
            host: &lab.hosts[host],
            cert: TrojanCert::generate(),
            requests: Arc::default(),
            stop: None,
            thread: None,
        };
        s.restart();
        s
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host.v4, TROJAN_PORT)
    }

    pub(crate) fn egress(&self, family: Family) -> IpAddr {
        self.host.addr(family)
    }

    /// Requests received so far.
    pub(crate) fn requests(&self) -> Vec<TrojanRequest> {
        self.requests.lock().expect("requests lock").clone()
    }

    /// The proxy entry for tpgate's config.
    pub(crate) fn proxy_yaml(&self, name: &str) -> String {
        format!(
            "{{name: {name}, type: trojan, server: {}, port: {TROJAN_PORT}, password: \"{TROJAN_PASSWORD}\", sni: {TROJAN_SNI}, skip-cert-verify: true, udp: true}}",
            self.host.v4
        )
    }

    /// (Re)starts the server; returns once it listens.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let acceptor = TlsAcceptor::from(self.cert.server_config());
        let requests = Arc::clone(&self.requests);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let thread = self.host.ns.spawn_thread(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listen = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), TROJAN_PORT);
                let listener = match TcpListener::bind(listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    () = accept_loop(listener, acceptor, requests) => {}
                    _ = stop_rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("trojan server on {}: {e}", self.host.ns.name),
            Err(e) => panic!("trojan server on {} did not start: {e}", self.host.ns.name),
        }
        self.stop = Some(stop_tx);
        self.thread = Some(thread);
    }

    /// Stops the server and every connection it relays.
    pub(crate) fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TrojanServer<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    requests: Arc<Mutex<Vec<TrojanRequest>>>,
) {
    let want = trojan_hash(TROJAN_PASSWORD);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let (acceptor, requests, want) = (acceptor.clone(), Arc::clone(&requests), want.clone());
        tokio::spawn(async move {
            let result = async {
                let tls = acceptor.accept(tcp).await?;
                serve(tls, &want, &requests).await
            }
            .await;
            if let Err(e) = result {
                eprintln!("trojan server: {peer}: {e}");
            }
        });
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

async fn expect_crlf(s: &mut (impl AsyncRead + Unpin)) -> io::Result<()> {
    let mut crlf = [0u8; 2];
    s.read_exact(&mut crlf).await?;
    if crlf == *b"\r\n" {
        Ok(())
    } else {
        Err(bad(format!("expected CRLF, got {crlf:?}")))
    }
}

/// Reads `ATYP ADDR PORT` (IPv4, domain name or IPv6); a domain name is resolved.
async fn read_addr(s: &mut (impl AsyncRead + Unpin)) -> io::Result<SocketAddr> {
    let atyp = s.read_u8().await?;
    let ip: IpAddr = match atyp {
        1 => {
            let mut o = [0u8; 4];
            s.read_exact(&mut o).await?;
            Ipv4Addr::from(o).into()
        }
        4 => {
            let mut o = [0u8; 16];
            s.read_exact(&mut o).await?;
            Ipv6Addr::from(o).into()
        }
        3 => {
            let len = s.read_u8().await?;
            let mut name = vec![0u8; usize::from(len)];
            s.read_exact(&mut name).await?;
            let port = s.read_u16().await?;
            let name = String::from_utf8(name).map_err(|_| bad("domain name not UTF-8"))?;
            return tokio::net::lookup_host((name.as_str(), port))
                .await?
                .next()
                .ok_or_else(|| bad(format!("{name} does not resolve")));
        }
        a => return Err(bad(format!("ATYP {a}"))),
    };
    let port = s.read_u16().await?;
    Ok(SocketAddr::new(ip, port))
}

fn write_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(1);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => {
                out.push(1);
                out.extend_from_slice(&v4.octets());
            }
            None => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
        },
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

async fn serve<S>(mut tls: S, want: &str, requests: &Mutex<Vec<TrojanRequest>>) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut hash = [0u8; 56];
    tls.read_exact(&mut hash).await?;
    if hash != want.as_bytes() {
        requests
            .lock()
            .expect("requests lock")
            .push(TrojanRequest::BadPassword);
        return Err(bad("wrong password hash"));
    }
    expect_crlf(&mut tls).await?;
    let cmd = tls.read_u8().await?;
    let target = read_addr(&mut tls).await?;
    expect_crlf(&mut tls).await?;
    match cmd {
        1 => {
            requests
                .lock()
                .expect("requests lock")
                .push(TrojanRequest::Connect(target));
            let mut out = TcpStream::connect(target).await?;
            tokio::io::copy_bidirectional(&mut tls, &mut out).await?;
            Ok(())
        }
        3 => {
            requests
                .lock()
                .expect("requests lock")
                .push(TrojanRequest::UdpAssociate);
            relay_udp(tls).await
        }
        c => Err(bad(format!("CMD {c}"))),
    }
}

/// UDP ASSOCIATE: one dual-stack socket per association; framed packets from the client go
/// to their address, datagrams coming back are framed with their source.
async fn relay_udp<S>(tls: S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let socket = Arc::new(UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await?);
    let (mut rd, mut wr) = tokio::io::split(tls);
    let back = {
        let socket = Arc::clone(&socket);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let (n, from) = socket.recv_from(&mut buf).await?;
                let mut frame = Vec::with_capacity(n + 24);
                write_addr(&mut frame, from);
                let len = u16::try_from(n).map_err(|_| bad("datagram too long"))?;
                frame.extend_from_slice(&len.to_be_bytes());
                frame.extend_from_slice(b"\r\n");
                frame.extend_from_slice(&buf[..n]);
                wr.write_all(&frame).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), io::Error>(())
        })
    };
    let result = async {
        loop {
            let dst = match read_addr(&mut rd).await {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            };
            let len = rd.read_u16().await?;
            expect_crlf(&mut rd).await?;
            let mut payload = vec![0u8; usize::from(len)];
            rd.read_exact(&mut payload).await?;
            let dst = match dst {
                SocketAddr::V4(v4) => {
                    SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
                }
                v6 => v6,
            };
            socket.send_to(&payload, dst).await?;
        }
    }
    .await;
    back.abort();
    result
}

/// A TLS client session to `server` from `ns`, trusting only the server's certificate.
async fn trojan_tls(
    std_stream: std::net::TcpStream,
    server: &TrojanServer<'_>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    std_stream.set_nonblocking(true)?;
    let tcp = TcpStream::from_std(std_stream)?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(server.cert.cert.clone())
        .map_err(|e| bad(format!("root cert: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name =
        rustls::pki_types::ServerName::try_from(TROJAN_SNI).map_err(|e| bad(e.to_string()))?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// The request header for `cmd` and `target`.
pub(crate) fn trojan_header(password: &str, cmd: u8, target: SocketAddr) -> Vec<u8> {
    let mut h = trojan_hash(password).into_bytes();
    h.extend_from_slice(b"\r\n");
    h.push(cmd);
    write_addr(&mut h, target);
    h.extend_from_slice(b"\r\n");
    h
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// From `ns`, a Trojan CONNECT to `dst` with `password`: sends `data`, half-closes and
/// reads to EOF; returns what came back.
pub(crate) fn trojan_tcp_echo(
    ns: &crate::lab::Netns,
    server: &TrojanServer<'_>,
    password: &str,
    dst: SocketAddr,
    data: &[u8],
) -> io::Result<Vec<u8>> {
    let std_stream = crate::lab::tcp_connect(ns, server.addr())?;
    client_runtime().block_on(async move {
        let tls = trojan_tls(std_stream, server).await?;
        let (mut rd, mut wr) = tokio::io::split(tls);
        let write = async {
            wr.write_all(&trojan_header(password, 1, dst)).await?;
            wr.write_all(data).await?;
            wr.shutdown().await
        };
        let mut got = Vec::new();
        let read = rd.read_to_end(&mut got);
        let (w, r) =
            tokio::time::timeout(crate::lab::IO_TIMEOUT, async { tokio::join!(write, read) })
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "trojan echo"))?;
        w?;
        r?;
        Ok(got)
    })
}

/// From `ns`, a Trojan UDP ASSOCIATE: sends `payload` to `dst`, waits for one framed reply;
/// returns its source address and payload.
pub(crate) fn trojan_udp_exchange(
    ns: &crate::lab::Netns,
    server: &TrojanServer<'_>,
    dst: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> io::Result<(SocketAddr, Vec<u8>)> {
    let std_stream = crate::lab::tcp_connect(ns, server.addr())?;
    client_runtime().block_on(async move {
        let mut tls = trojan_tls(std_stream, server).await?;
        let mut msg = trojan_header(TROJAN_PASSWORD, 3, dst);
        write_addr(&mut msg, dst);
        let len = u16::try_from(payload.len()).map_err(|_| bad("payload too long"))?;
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(b"\r\n");
        msg.extend_from_slice(payload);
        tls.write_all(&msg).await?;
        tokio::time::timeout(wait, async {
            let from = read_addr(&mut tls).await?;
            let len = tls.read_u16().await?;
            expect_crlf(&mut tls).await?;
            let mut data = vec![0u8; usize::from(len)];
            tls.read_exact(&mut data).await?;
            Ok((from, data))
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "trojan udp reply"))?
    })
}
