//! Asking upstream nameservers: plain UDP (retried over TCP when truncated), TCP, DNS over
//! TLS (one kept connection per server, queries pipelined on it: `pipeline`) and DNS over
//! HTTPS (HTTP/1.1 POST of application/dns-message on kept-alive connections: `doh`). Every
//! socket carries the routing mark, so the server's own queries are never intercepted.
//! Plain TCP still opens a connection per query (it is mostly the truncated-UDP retry).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{select_ok, BoxFuture};
use futures::FutureExt as _;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use rustls::pki_types::ServerName;
use socket2::Type;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::UdpSocket;
use tokio_rustls::TlsConnector;
use tpgate_core::config::{DomainPattern, Nameserver, Tls, Transport};
use tpgate_core::dns::reply;
use tracing::debug;

use super::doh::DohPool;
use super::error::UpstreamError;
use super::pipeline::Pipeline;
use crate::outbound::{connect_marked, TlsClient};

/// One exchange (connect, handshake, answer) may take this long.
const TIMEOUT: Duration = Duration::from_secs(4);
/// The largest DNS message over TCP is 65535 bytes; UDP answers are smaller.
const UDP_BUF: usize = 4096;

/// One configured nameserver, ready to ask.
pub(crate) struct Upstream {
    ns: Nameserver,
    /// The resolved address of a server written as a name (`tls://dns.google`).
    addr: Mutex<Option<IpAddr>>,
    tls: Option<TlsConnector>,
    server_name: Option<ServerName<'static>>,
    /// DoT: the kept connection, shared by concurrent queries.
    dot: Pipeline,
    /// DoH: the kept-alive HTTP/1.1 connections.
    doh: DohPool,
    /// What the metrics report of this server.
    stats: UpstreamStats,
}

/// Answers, failures and the total time the answers took, of one server.
#[derive(Debug, Default)]
pub(crate) struct UpstreamStats {
    pub(crate) answers: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) latency_micros: AtomicU64,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.ns.text)
    }
}

impl Upstream {
    fn new(ns: Nameserver) -> io::Result<Self> {
        let (tls, server_name) = match ns.transport {
            Transport::Tls | Transport::Https => {
                let settings = Tls {
                    alpn: Vec::new(),
                    sni: ns.sni.clone(),
                    skip_cert_verify: ns.skip_cert_verify,
                    fingerprint: None,
                    reality: None,
                };
                let alpn: &[&[u8]] = if ns.transport == Transport::Https {
                    &[b"http/1.1"]
                } else {
                    &[]
                };
                let (connector, name) = TlsClient::parts(&settings, &ns.host, alpn)?;
                (Some(connector), Some(name))
            }
            _ => (None, None),
        };
        let addr = ns.host.parse().ok();
        Ok(Self {
            ns,
            addr: Mutex::new(addr),
            tls,
            server_name,
            dot: Pipeline::default(),
            doh: DohPool::default(),
            stats: UpstreamStats::default(),
        })
    }

    fn udp(addr: SocketAddr) -> Self {
        Self {
            ns: Nameserver {
                transport: Transport::Udp,
                host: addr.ip().to_string(),
                port: addr.port(),
                path: String::new(),
                sni: None,
                skip_cert_verify: false,
                text: addr.to_string(),
            },
            addr: Mutex::new(Some(addr.ip())),
            tls: None,
            server_name: None,
            dot: Pipeline::default(),
            doh: DohPool::default(),
            stats: UpstreamStats::default(),
        }
    }

    pub(crate) fn text(&self) -> &str {
        &self.ns.text
    }
}

/// Which servers a name is asked of, and the bootstrap servers for servers' own names.
#[derive(Debug)]
pub(crate) struct Forwarder {
    bootstrap: Vec<Arc<Upstream>>,
    main: Vec<Arc<Upstream>>,
    fallback: Vec<Arc<Upstream>>,
    policy: Vec<(DomainPattern, Vec<Arc<Upstream>>)>,
    mark: u32,
}

impl Forwarder {
    /// Every server (bootstrap, main, fallback, policy) with its statistics, once each.
    pub(crate) fn stats(&self) -> Vec<(String, &UpstreamStats)> {
        let mut out: Vec<(String, &UpstreamStats)> = Vec::new();
        let all = self
            .bootstrap
            .iter()
            .chain(&self.main)
            .chain(&self.fallback)
            .chain(self.policy.iter().flat_map(|(_, l)| l));
        for up in all {
            if !out.iter().any(|(t, _)| t == up.text()) {
                out.push((up.text().to_owned(), &up.stats));
            }
        }
        out
    }

    pub(crate) fn new(cfg: &tpgate_core::config::Dns, mark: u32) -> io::Result<Self> {
        // /etc/resolv.conf may name this very server (listen on 127.0.0.1:53): asking it
        // would loop, so such entries are dropped.
        let system: Vec<SocketAddr> = crate::outbound::system_nameservers()
            .into_iter()
            .filter(|a| !is_self(*a, cfg.listen))
            .collect();
        let build = |list: &[Nameserver]| -> io::Result<Vec<Arc<Upstream>>> {
            let mut out = Vec::new();
            for ns in list {
                if ns.transport == Transport::System {
                    out.extend(system.iter().map(|a| Arc::new(Upstream::udp(*a))));
                } else {
                    out.push(Arc::new(Upstream::new(ns.clone())?));
                }
            }
            Ok(out)
        };
        let mut bootstrap = build(&cfg.default_nameserver)?;
        if bootstrap.is_empty() {
            bootstrap = system.iter().map(|a| Arc::new(Upstream::udp(*a))).collect();
        }
        let mut main = build(&cfg.nameserver)?;
        if main.is_empty() {
            main = bootstrap.clone();
        }
        if main.is_empty() {
            tracing::warn!(
                "dns: no usable nameserver (none configured, /etc/resolv.conf names none but \
                 this server); queries that need one get SERVFAIL"
            );
        }
        let mut policy = Vec::new();
        for (pattern, list) in &cfg.nameserver_policy {
            policy.push((pattern.clone(), build(list)?));
        }
        Ok(Self {
            bootstrap,
            main,
            fallback: build(&cfg.fallback)?,
            policy,
            mark,
        })
    }

    /// Asks the servers for `name` (all at once; the first good answer wins), then the
    /// `fallback` servers when none answered. SERVFAIL and REFUSED count as no answer.
    pub(crate) async fn forward(
        &self,
        name: &str,
        query: &Message,
    ) -> Result<Message, UpstreamError> {
        let servers = self
            .policy
            .iter()
            .find(|(p, _)| p.matches(name))
            .map_or(&self.main, |(_, s)| s);
        match self.race(servers, query).await {
            Ok(m) => Ok(m),
            Err(e) if self.fallback.is_empty() => Err(e),
            Err(e) => {
                debug!("dns {name}: nameservers failed ({e}); asking fallback");
                self.race(&self.fallback, query).await
            }
        }
    }

    async fn race(
        &self,
        servers: &[Arc<Upstream>],
        query: &Message,
    ) -> Result<Message, UpstreamError> {
        if servers.is_empty() {
            return Err(UpstreamError::NoNameserver);
        }
        let attempts: Vec<BoxFuture<'_, Result<Message, UpstreamError>>> = servers
            .iter()
            .map(|up| {
                async move {
                    let server = || up.text().to_owned();
                    let started = std::time::Instant::now();
                    let answer = async {
                        let reply = tokio::time::timeout(TIMEOUT, self.exchange(up, query))
                            .await
                            .map_err(|_| UpstreamError::Timeout { server: server() })?
                            .map_err(|source| UpstreamError::Exchange {
                                server: server(),
                                source,
                            })?;
                        match reply.response_code() {
                            code @ (ResponseCode::ServFail | ResponseCode::Refused) => {
                                Err(UpstreamError::Refused {
                                    server: server(),
                                    code,
                                })
                            }
                            _ => Ok(reply),
                        }
                    }
                    .await;
                    let st = &up.stats;
                    match &answer {
                        Ok(_) => {
                            st.answers.fetch_add(1, Ordering::Relaxed);
                            let us =
                                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                            st.latency_micros.fetch_add(us, Ordering::Relaxed);
                        }
                        Err(_) => {
                            st.failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    answer
                }
                .boxed()
            })
            .collect();
        select_ok(attempts).await.map(|(m, _)| m)
    }

    /// One query to one server; the reply carries `query`'s id.
    async fn exchange(&self, up: &Upstream, query: &Message) -> io::Result<Message> {
        let addr = SocketAddr::new(self.server_ip(up).await?, up.ns.port);
        let mut q = query.clone();
        let id: u16 = rand::random();
        q.set_id(id);
        let bytes = q.to_vec().map_err(UpstreamError::Encode)?;
        // `stream`: the reply came over TCP, TLS or HTTPS, where truncated is final.
        let (reply, stream) = match up.ns.transport {
            Transport::Udp | Transport::System => {
                let r = udp_exchange(addr, &q, &bytes, self.mark).await?;
                if r.truncated() {
                    (tcp_exchange(addr, &bytes, self.mark).await?, true)
                } else {
                    (r, false)
                }
            }
            Transport::Tcp => (tcp_exchange(addr, &bytes, self.mark).await?, true),
            Transport::Tls => {
                let connect = || async {
                    self.tls_connect(up, connect_marked(addr, self.mark).await?)
                        .await
                };
                (up.dot.exchange(&bytes, connect).await?, true)
            }
            Transport::Https => {
                let connect = || async {
                    self.tls_connect(up, connect_marked(addr, self.mark).await?)
                        .await
                };
                (up.doh.exchange(&up.ns, &bytes, connect).await?, true)
            }
        };
        if reply.id() != id && up.ns.transport != Transport::Https {
            return Err(UpstreamError::IdMismatch.into());
        }
        reply::check(&q, &reply, stream).map_err(UpstreamError::NotAnAnswer)?;
        let mut reply = reply;
        reply.set_id(query.id());
        Ok(reply)
    }

    async fn tls_connect<S>(
        &self,
        up: &Upstream,
        io: S,
    ) -> io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (Some(c), Some(n)) = (&up.tls, &up.server_name) else {
            return Err(UpstreamError::NoTls.into());
        };
        c.connect(n.clone(), io).await
    }

    /// The address of a server: its literal, or its name resolved via the bootstrap
    /// (`default-nameserver`) servers over UDP.
    async fn server_ip(&self, up: &Upstream) -> io::Result<IpAddr> {
        if let Some(ip) = up.addr.lock().ok().and_then(|a| *a) {
            return Ok(ip);
        }
        let name = Name::from_ascii(&up.ns.host).map_err(UpstreamError::BadName)?;
        let mut q = Message::new();
        q.set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(name, RecordType::A));
        let mut last: io::Error = UpstreamError::NoBootstrap.into();
        for b in &self.bootstrap {
            let Some(ip) = b.addr.lock().ok().and_then(|a| *a) else {
                continue;
            };
            q.set_id(rand::random());
            let bytes = q.to_vec().map_err(UpstreamError::Encode)?;
            let fut = udp_exchange(SocketAddr::new(ip, b.ns.port), &q, &bytes, self.mark);
            match tokio::time::timeout(TIMEOUT, fut).await {
                Ok(Ok(reply)) => {
                    let found = reply.answers().iter().find_map(|r| match r.data() {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        _ => None,
                    });
                    if let Some(ip) = found {
                        if let Ok(mut a) = up.addr.lock() {
                            *a = Some(ip);
                        }
                        return Ok(ip);
                    }
                    last = UpstreamError::NoAddress {
                        host: up.ns.host.clone(),
                    }
                    .into();
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = UpstreamError::BootstrapTimeout.into(),
            }
        }
        Err(last)
    }

    pub(crate) fn describe(&self) -> String {
        self.main
            .iter()
            .map(|u| u.text().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn parse(bytes: &[u8]) -> io::Result<Message> {
    Message::from_vec(bytes).map_err(|e| UpstreamError::Malformed(e).into())
}

/// `query` (as `bytes`) to `addr` over UDP; the first datagram carrying its id decides.
async fn udp_exchange(
    addr: SocketAddr,
    query: &Message,
    bytes: &[u8],
    mark: u32,
) -> io::Result<Message> {
    let s = tpgate_sys::outbound_socket(addr.is_ipv6(), Type::DGRAM, mark)?;
    s.connect(&addr.into())?;
    let sock = UdpSocket::from_std(s.into())?;
    sock.send(bytes).await?;
    let id = query.id().to_be_bytes();
    let mut buf = vec![0u8; UDP_BUF];
    loop {
        let n = sock.recv(&mut buf).await?;
        // A stray datagram (another id) does not end the wait. One with the query's id
        // that is no answer to it (garbage, cut short, a query, another question) does:
        // the server is broken, and waiting would only turn SERVFAIL into a time-out.
        if buf[..n].get(..2) != Some(&id[..]) {
            continue;
        }
        let m = parse(&buf[..n])?;
        reply::check(query, &m, false).map_err(UpstreamError::NotAnAnswer)?;
        return Ok(m);
    }
}

async fn tcp_exchange(addr: SocketAddr, query: &[u8], mark: u32) -> io::Result<Message> {
    let stream = connect_marked(addr, mark).await?;
    framed_exchange(stream, query).await
}

/// RFC 1035 4.2.2 framing: a two-byte length before each message.
async fn framed_exchange<S>(mut stream: S, query: &[u8]) -> io::Result<Message>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let len = u16::try_from(query.len()).map_err(UpstreamError::TooLong)?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    parse(&buf)
}

/// Whether `server` is the DNS server's own `listen` address.
fn is_self(server: SocketAddr, listen: Option<SocketAddr>) -> bool {
    let Some(l) = listen else {
        return false;
    };
    server.port() == l.port()
        && (server.ip() == l.ip() || (l.ip().is_unspecified() && server.ip().is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listen_address_is_not_an_upstream() {
        let any: SocketAddr = "0.0.0.0:53".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:53".parse().unwrap();
        assert!(is_self(lo, Some(any)));
        assert!(is_self(lo, Some(lo)));
        assert!(!is_self(lo, Some("0.0.0.0:1053".parse().unwrap())));
        assert!(!is_self("192.0.2.53:53".parse().unwrap(), Some(any)));
        assert!(!is_self(lo, None));
    }
}
