//! The TCP path in-process, on real loopback sockets: a flow is handed to [`tcp::flow`] with
//! the original destination a TPROXY listener would have read, decided by the real rule
//! engine with a test [`FlowIo`], relayed, registered, counted and closed. What only the
//! kernel can show (interception itself) is in the network-namespace end-to-end tests.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tpgate_core::config::Sniffer;
use tpgate_core::flow::{FakeIp, Settings, Tables};
use tpgate_core::net::Network;
use tpgate_core::rules::{PortRange, ProcessInfo};

use super::registry::Registry;
use super::{tcp, FlowIo, RoutingMark, Shared};
use crate::outbound::Outbounds;

/// Scripted answers: which addresses are this host's, the fake-ip table, what names
/// resolve to, which process owns local flows; counts the process lookups.
#[derive(Debug, Default)]
pub(crate) struct TestIo {
    pub(crate) local: Vec<IpAddr>,
    pub(crate) fake: HashMap<IpAddr, String>,
    pub(crate) names: HashMap<String, IpAddr>,
    pub(crate) process: Option<ProcessInfo>,
    pub(crate) process_lookups: AtomicU32,
}

impl Tables for TestIo {
    fn is_local(&self, ip: IpAddr) -> bool {
        self.local.contains(&ip)
    }
    fn fake_ip(&self, ip: IpAddr) -> FakeIp {
        self.fake
            .get(&ip)
            .map_or(FakeIp::NotFake, |n| FakeIp::Name(n.clone()))
    }
    fn mapped_name(&self, _: IpAddr) -> Option<String> {
        None
    }
    fn geo_codes(&self, _: IpAddr) -> Vec<String> {
        Vec::new()
    }
}

impl FlowIo for TestIo {
    fn process(
        &self,
        _: Network,
        _: SocketAddr,
        _: SocketAddr,
    ) -> BoxFuture<'static, Option<ProcessInfo>> {
        self.process_lookups.fetch_add(1, Ordering::Relaxed);
        let p = self.process.clone();
        Box::pin(async move { p })
    }
    fn resolve(&self, name: &str) -> BoxFuture<'static, io::Result<IpAddr>> {
        let r = self
            .names
            .get(name)
            .copied()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound));
        Box::pin(async move { r })
    }
}

/// A [`Shared`] from a config's `rules`, with the given answers; HTTP is sniffed on
/// `http_port`.
pub(crate) fn shared(rules: &[&str], io: Arc<TestIo>, http_port: u16) -> Arc<Shared> {
    let mut yaml = String::from("state-file: /nonexistent/tpgate-test/state.json\nrules:\n");
    for r in rules {
        yaml.push_str(&format!("  - \"{r}\"\n"));
    }
    let config = tpgate_core::config::load(&yaml).expect("config").config;
    let sniffer = Sniffer {
        http_ports: vec![PortRange {
            start: http_port,
            end: http_port,
        }],
        tls_ports: vec![],
        timeout: Duration::from_millis(500),
        ..Sniffer::default()
    };
    Arc::new(Shared {
        engine: config.rule_engine(),
        settings: Settings {
            tproxy_port: 7893,
            sniffer,
        },
        outbounds: Outbounds::new(&config).expect("outbounds"),
        routing_mark: RoutingMark(0),
        io,
        registry: Registry::new(),
        limits: super::limits::Limits::new(&config.limits, 65_536),
    })
}

/// An echo server on loopback; returns its address.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A client connection whose accepted end is handed to [`tcp::flow`] as if TPROXY had
/// delivered it for `dst`.
async fn intercepted(shared: &Arc<Shared>, dst: SocketAddr) -> TcpStream {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
    let (client, (accepted, src)) = (client.unwrap(), accepted.unwrap());
    let shared = shared.clone();
    tokio::spawn(async move { tcp::flow(accepted, src, dst, &shared).await });
    client
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

/// The client's next read: `Ok(bytes)` or the error kind (a reset).
async fn read_some(c: &mut TcpStream) -> Result<Vec<u8>, io::ErrorKind> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
        Ok(Ok(n)) => Ok(buf[..n].to_vec()),
        Ok(Err(e)) => Err(e.kind()),
        Err(_) => Err(io::ErrorKind::TimedOut),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_flow_is_relayed_registered_counted_and_closed_on_request() {
    let server = echo_server().await;
    let s = shared(&["MATCH,DIRECT"], Arc::default(), 1);
    let mut c = intercepted(&s, server).await;
    c.write_all(b"hello").await.unwrap();
    assert_eq!(read_some(&mut c).await.unwrap(), b"hello");
    let reg = &s.registry;
    eventually("the flow is listed with both directions counted", || {
        reg.snapshot()
            .first()
            .is_some_and(|e| e.up() == 5 && e.down() == 5)
    })
    .await;
    let e = reg.snapshot().remove(0);
    assert_eq!((e.info.dst, e.info.rule.as_str()), (server, "MATCH,DIRECT"));
    assert_eq!(e.info.route, "DIRECT");
    assert!(reg.close(e.id));
    assert_eq!(read_some(&mut c).await, Err(io::ErrorKind::ConnectionReset));
    eventually("a closed flow is unlisted", || reg.snapshot().is_empty()).await;
    assert_eq!(reg.totals(), (1, 5, 5), "its bytes stay in the totals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sniffed_name_decides_and_its_bytes_reach_the_server() {
    let server = echo_server().await;
    let rules = ["DOMAIN,blocked.test,REJECT", "MATCH,DIRECT"];
    let s = shared(&rules, Arc::default(), server.port());
    let mut blocked = intercepted(&s, server).await;
    blocked
        .write_all(b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_some(&mut blocked).await,
        Err(io::ErrorKind::ConnectionReset)
    );
    let mut ok = intercepted(&s, server).await;
    let req = b"GET / HTTP/1.1\r\nHost: fine.test\r\n\r\n";
    ok.write_all(req).await.unwrap();
    let mut back = vec![0u8; req.len()];
    ok.read_exact(&mut back).await.unwrap();
    assert_eq!(back, req, "the sniffed bytes were sent on first");
    let e = s.registry.snapshot().remove(0);
    assert_eq!(e.info.host.as_deref(), Some("fine.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_ip_flow_goes_direct_to_its_name_resolved_for_real() {
    let server = echo_server().await;
    let fake: IpAddr = "198.18.0.5".parse().unwrap();
    let io = TestIo {
        fake: [(fake, "echo.test".to_owned())].into(),
        names: [("echo.test".to_owned(), server.ip())].into(),
        ..TestIo::default()
    };
    let s = shared(&["MATCH,DIRECT"], Arc::new(io), 1);
    let mut c = intercepted(&s, SocketAddr::new(fake, server.port())).await;
    c.write_all(b"ping").await.unwrap();
    assert_eq!(read_some(&mut c).await.unwrap(), b"ping");
    let e = s.registry.snapshot().remove(0);
    assert_eq!(e.info.host.as_deref(), Some("echo.test"));
    assert_eq!(
        e.info.dst.ip(),
        fake,
        "listed with the address the client asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_rules_ask_once_for_local_flows_only() {
    let server = echo_server().await;
    let io = TestIo {
        local: vec!["127.0.0.1".parse().unwrap()],
        process: Some(ProcessInfo {
            uid: Some(0),
            name: Some("curl".into()),
            path: None,
        }),
        ..TestIo::default()
    };
    let io = Arc::new(io);
    let s = shared(&["PROCESS-NAME,curl,REJECT", "MATCH,DIRECT"], io.clone(), 1);
    let mut c = intercepted(&s, server).await;
    assert_eq!(read_some(&mut c).await, Err(io::ErrorKind::ConnectionReset));
    assert_eq!(io.process_lookups.load(Ordering::Relaxed), 1);
    assert!(
        s.registry.snapshot().is_empty(),
        "a rejected flow is not listed"
    );
    // A LAN host's flow (not a local address) is never looked up.
    let lan = shared(
        &["PROCESS-NAME,curl,REJECT", "MATCH,DIRECT"],
        Arc::default(),
        1,
    );
    let mut c = intercepted(&lan, server).await;
    c.write_all(b"x").await.unwrap();
    assert_eq!(read_some(&mut c).await.unwrap(), b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_to_the_listener_itself_is_refused() {
    let io = TestIo {
        local: vec!["127.0.0.1".parse().unwrap()],
        ..TestIo::default()
    };
    let s = shared(&["MATCH,DIRECT"], Arc::new(io), 1);
    let mut c = intercepted(&s, "127.0.0.1:7893".parse().unwrap()).await;
    assert_eq!(read_some(&mut c).await, Err(io::ErrorKind::ConnectionReset));
    assert!(s.registry.snapshot().is_empty());
}
