//! The controller in-process: [`serve`] on a port-0 loopback listener (and a unix socket)
//! with a test [`Shared`] built from a YAML config, driven by a small HTTP/1 client and
//! tokio-tungstenite, the answers checked against mihomo's JSON shapes.

mod api;
mod live;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tpgate_core::config::Config;
use tpgate_core::flow::Settings;
use tpgate_core::net::{Network, Origin};

use super::{serve, Api, Context, Listeners, Metrics};
use crate::relay::registry::{FlowInfo, Registry};
use crate::relay::tests::TestIo;
use crate::relay::{RoutingMark, Shared};
use crate::shutdown::{self, Trigger};

/// A controller serving on loopback until dropped.
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    pub(super) shared: Arc<Shared>,
    pub(super) trigger: Trigger,
    pub(super) done: tokio::task::JoinHandle<()>,
    /// The state file's folder, removed at the end.
    state_dir: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.trigger.fire();
        self.done.abort();
        if let Some(d) = &self.state_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// `yaml` as a config, with a state file of its own (selections are saved there; as root
/// even a path under /nonexistent would be created).
pub(super) fn config(yaml: &str) -> Config {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let state = std::env::temp_dir()
        .join(format!("tpgate-controller-test-{}-{n}", std::process::id()))
        .join("state.json");
    let text = format!("state-file: {}\n{yaml}", state.display());
    tpgate_core::config::load(&text)
        .unwrap_or_else(|e| panic!("config: {e:?}"))
        .config
}

pub(super) async fn start(yaml: &str) -> Server {
    start_with(config(yaml), None, None).await
}

/// With a dashboard folder and a unix socket, when given.
pub(super) async fn start_with(
    config: Config,
    ui: Option<PathBuf>,
    unix: Option<&std::path::Path>,
) -> Server {
    let outbounds = crate::outbound::Outbounds::new(&config).expect("outbounds");
    let engine = match outbounds.builtin_global() {
        Some(g) => config
            .rule_engine()
            .with_global(tpgate_core::rules::Verdict::Proxy(g)),
        None => config.rule_engine(),
    };
    let shared = Arc::new(Shared {
        engine,
        settings: Settings {
            tproxy_port: config.tproxy_port,
            sniffer: config.sniffer.clone(),
        },
        outbounds,
        routing_mark: RoutingMark(config.routing_mark),
        io: Arc::new(TestIo::default()),
        registry: Registry::new(),
        limits: crate::relay::limits::Limits::new(&config.limits, 65_536),
    });
    let dns = (config.dns.enable).then(|| {
        crate::dns::Dns::new(&config.dns, config.routing_mark, &config.state_file).expect("dns")
    });
    let state_dir = std::path::Path::new(&config.state_file)
        .parent()
        .filter(|d| d.starts_with(std::env::temp_dir()))
        .map(std::path::Path::to_path_buf);
    let (trigger, stop) = shutdown::channel();
    let api = Api::new(
        Context {
            config: crate::reload::ConfigCell::new(config),
            reload: None,
            config_path: None,
            cell: crate::relay::SharedCell::new(shared.clone()),
            dns,
            ui,
            metrics: Metrics::default(),
        },
        stop,
    );
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let unix = unix.map(|p| tokio::net::UnixListener::bind(p).unwrap());
    let listeners = Listeners {
        tcp: Some(tcp),
        unix,
    };
    let done = tokio::spawn(serve(listeners, api.clone()));
    Server {
        addr,
        shared,
        trigger,
        done,
        state_dir,
    }
}

/// One answer.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: hyper::HeaderMap,
    pub(super) body: Bytes,
}

impl Reply {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Server {
    /// `method path` with `headers` and `body`, on a new connection.
    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = Full::new(Bytes::from(body.unwrap_or_default().to_owned()));
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            send.send_request(req.body(body).unwrap()),
        )
        .await
        .expect("answered in time")
        .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    pub(super) async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[], None).await
    }

    pub(super) async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        r.json()
    }

    /// A flow in the registry, as a relay would list it.
    pub(super) fn flow(
        &self,
        network: Network,
        origin: Origin,
        route: &str,
    ) -> crate::relay::registry::Registered {
        self.shared.registry.register(FlowInfo {
            network,
            client: "198.51.100.2:40000".parse().unwrap(),
            dst: "203.0.113.2:443".parse().unwrap(),
            origin,
            host: Some("www.example.com".into()),
            host_from: None,
            process: None,
            rule: "DOMAIN-SUFFIX,example.com,DIRECT".into(),
            route: route.into(),
        })
    }
}

/// Two SOCKS5 proxies (nothing listens behind them), every kind of group, a rule provider.
pub(super) const SAMPLE: &str = "\
proxies:
  - {name: a, type: socks5, server: 127.0.0.1, port: 9, udp: true}
  - {name: b, type: socks5, server: 127.0.0.1, port: 9}
proxy-groups:
  - {name: pick, type: select, proxies: [b, a, DIRECT], icon: 'https://icons.example/p.svg'}
  - {name: auto, type: url-test, proxies: [a, b], url: 'http://127.0.0.1:9/', interval: 0}
  - {name: safe, type: fallback, proxies: [a, b], url: 'http://127.0.0.1:9/', interval: 0}
  - {name: spread, type: load-balance, proxies: [a, b], url: 'http://127.0.0.1:9/', interval: 0}
  - {name: chain, type: relay, proxies: [a, b]}
rule-providers:
  ads: {type: inline, behavior: domain, payload: [ads.example, '+.track.example']}
rules:
  - RULE-SET,ads,REJECT
  - DOMAIN-SUFFIX,example.com,pick
  - IP-CIDR,192.0.2.0/24,DIRECT,no-resolve
  - MATCH,auto
";
