//! `GET /metrics` (behind the same secret as the rest): Prometheus/OpenMetrics text, made
//! at each scrape from what the daemon already counts: flows live and ended by network and
//! origin, bytes by route, failed connects by route, each proxy's last health-check delay,
//! DNS queries (answered, refused, cache hits), and the process's memory and descriptors.
//! Nothing here counts on its own, so a scrape costs one pass over the live flows.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tpgate_core::net::{Network, Origin};

use super::{streams, Api};
use crate::dns::{Access, Dns};
use crate::outbound::Node;
use crate::relay::origin_name;

type Labels = Vec<(&'static str, String)>;

/// What the metrics read besides the API's state.
#[derive(Clone, Default)]
pub(crate) struct Metrics {
    /// Who the DNS server answered and refused.
    pub(crate) dns_access: Option<std::sync::Arc<Access>>,
}

fn kind(n: Network, o: Origin) -> Labels {
    vec![
        ("network", n.to_string()),
        ("origin", origin_name(o).to_owned()),
    ]
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The registry of one scrape.
pub(super) fn collect(api: &Api) -> Registry {
    let mut r = Registry::default();
    let shared = api.shared();
    let registry = &shared.registry;
    let live = registry.snapshot();
    let ended = registry.ended();

    let active = Family::<Labels, Gauge>::default();
    let total = Family::<Labels, Counter>::default();
    for e in &live {
        active
            .get_or_create(&kind(e.info.network, e.info.origin))
            .inc();
        total
            .get_or_create(&kind(e.info.network, e.info.origin))
            .inc();
    }
    for (&(n, o), &flows) in &ended.flows_by_kind {
        total.get_or_create(&kind(n, o)).inc_by(flows);
    }
    r.register(
        "tpgate_flows_active",
        "Live TCP connections and UDP flows",
        active,
    );
    r.register(
        "tpgate_flows",
        "Flows relayed since start (live and ended)",
        total,
    );

    let mut bytes: HashMap<String, (u64, u64)> = ended.bytes_by_route;
    for e in &live {
        let b = bytes.entry(e.info.route.clone()).or_default();
        b.0 += e.up();
        b.1 += e.down();
    }
    let by_route = Family::<Labels, Counter>::default();
    for (route, (up, down)) in bytes {
        for (direction, n) in [("up", up), ("down", down)] {
            let labels = vec![
                ("route", route.clone()),
                ("direction", direction.to_owned()),
            ];
            by_route.get_or_create(&labels).inc_by(n);
        }
    }
    r.register(
        "tpgate_route_bytes",
        "Bytes relayed by route (up: client to server)",
        by_route,
    );

    let shared = api.shared();
    let o = &shared.outbounds;
    let failures = Family::<Labels, Counter>::default();
    for (route, n) in o.failures() {
        failures.get_or_create(&vec![("route", route)]).inc_by(n);
    }
    r.register(
        "tpgate_dial_failures",
        "Connects through a route that failed",
        failures,
    );

    let delay = Family::<Labels, Gauge>::default();
    let alive = Family::<Labels, Gauge>::default();
    for n in o.nodes() {
        if let Node::Upstream(u) = n {
            let labels = vec![("proxy", u.name.clone())];
            if let Some(ms) = o.history.last(&u.name) {
                delay.get_or_create(&labels).set(i64::from(ms));
            }
            alive
                .get_or_create(&labels)
                .set(i64::from(o.history.alive(&u.name)));
        }
    }
    r.register(
        "tpgate_proxy_delay_milliseconds",
        "The last successful delay test of each proxy",
        delay,
    );
    r.register(
        "tpgate_proxy_alive",
        "1 when the last delay test of the proxy succeeded",
        alive,
    );

    if let Some(access) = &api.metrics.dns_access {
        counter(
            &mut r,
            "tpgate_dns_queries",
            "DNS queries answered",
            access.allowed(),
        );
        counter(
            &mut r,
            "tpgate_dns_queries_refused",
            "DNS queries refused (not from this machine or a LAN interface)",
            access.dropped(),
        );
    }
    if let Some(dns) = &api.dns {
        counter(
            &mut r,
            "tpgate_dns_cache_hits",
            "DNS answers served from the cache",
            cache_hits(dns),
        );
    }
    gauge(
        &mut r,
        "tpgate_process_resident_memory_bytes",
        "Resident memory of the tpgate process",
        as_i64(streams::rss()),
    );
    gauge(
        &mut r,
        "tpgate_process_open_fds",
        "Open file descriptors of the tpgate process",
        as_i64(open_fds()),
    );
    r
}

fn cache_hits(dns: &Dns) -> u64 {
    dns.cache_hits.load(std::sync::atomic::Ordering::Relaxed)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// `GET /metrics`.
pub(super) async fn scrape(State(api): State<Api>) -> Response {
    let mut text = String::new();
    if encode(&mut text, &collect(&api)).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
