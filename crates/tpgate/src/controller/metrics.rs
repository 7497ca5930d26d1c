//! `GET /metrics` (behind the same secret as the rest): Prometheus/OpenMetrics text, made
//! at each scrape from what the daemon already counts: flows live and ended by network,
//! origin, action and rule; bytes by route; failed connects by route and reason; each
//! proxy's last health-check delay; DNS queries (answered, refused, cache hits), each
//! upstream server's answers, failures and latency, and the fake-ip pools' use; the UDP NAT
//! table's size and idle evictions; provider updates and their age; geodata file ages;
//! reloads; the process's memory and descriptors and the runtime's live tasks. Nothing here
//! counts on its own, so a scrape costs one pass over the live flows.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::time::SystemTime;

use super::{streams, Api};
use crate::dns::{Access, Dns};
use crate::outbound::Node;
use crate::relay::registry::FlowKind;
use crate::relay::udp::NatTable;
use crate::relay::{origin_name, RelayPath};
use crate::reload::ReloadStats;

type Labels = Vec<(&'static str, String)>;

/// What the metrics read besides the API's state.
#[derive(Clone, Default)]
pub(crate) struct Metrics {
    /// Who the DNS server answered and refused.
    pub(crate) dns_access: Option<std::sync::Arc<Access>>,
    /// The UDP NAT table.
    pub(crate) nat: Option<std::sync::Arc<NatTable>>,
    pub(crate) reloads: Option<std::sync::Arc<ReloadStats>>,
}

fn kind(k: &FlowKind) -> Labels {
    let (n, o, action, rule) = k;
    vec![
        ("network", n.to_string()),
        ("origin", origin_name(*o).to_owned()),
        ("action", (*action).to_owned()),
        ("rule", rule.clone()),
    ]
}

fn seconds_since(t: SystemTime) -> i64 {
    SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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
        let labels = kind(&e.info.kind());
        active.get_or_create(&labels).inc();
        total.get_or_create(&labels).inc();
    }
    for (k, &flows) in &ended.flows_by_kind {
        total.get_or_create(&kind(k)).inc_by(flows);
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

    let relays = Family::<Labels, Counter>::default();
    for p in RelayPath::ALL {
        relays
            .get_or_create(&vec![("relay", p.name().to_owned())])
            .inc_by(p.count());
    }
    r.register(
        "tpgate_tcp_relays",
        "TCP connections by how their bytes moved: sockmap (joined in the kernel), splice \
         (zero-copy, DIRECT) or copy (through tpgate: upstreams)",
        relays,
    );

    let shared = api.shared();
    let o = &shared.outbounds;
    let failures = Family::<Labels, Counter>::default();
    for ((route, reason), n) in o.failures() {
        failures
            .get_or_create(&vec![("route", route), ("reason", reason.to_owned())])
            .inc_by(n);
    }
    r.register(
        "tpgate_dial_failures",
        "Connects through a route that failed, by reason (connect_timeout, handshake_timeout, handshake, tls, resolve, refused, reset, unreachable, unsupported, other)",
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
        dns_metrics(&mut r, dns);
    }
    limit_metrics(&mut r, &shared.limits);
    if let Some(nat) = &api.metrics.nat {
        gauge(
            &mut r,
            "tpgate_udp_nat_flows",
            "UDP flows in the NAT table",
            as_i64(nat.len() as u64),
        );
        counter(
            &mut r,
            "tpgate_udp_nat_evictions",
            "UDP flows removed from the NAT table for being idle",
            nat.evicted(),
        );
    }
    if let Some(reloads) = &api.metrics.reloads {
        let f = Family::<Labels, Counter>::default();
        for (result, n) in [("applied", &reloads.applied), ("refused", &reloads.refused)] {
            f.get_or_create(&vec![("result", result.to_owned())])
                .inc_by(n.load(std::sync::atomic::Ordering::Relaxed));
        }
        r.register("tpgate_reloads", "Config reloads, by result", f);
    }
    provider_metrics(&mut r, api);
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
    gauge(
        &mut r,
        "tpgate_tokio_tasks",
        "Tasks alive in the tokio runtime (relays, listeners, timers, the controller's own)",
        tokio::runtime::Handle::try_current()
            .map_or(0, |h| as_i64(h.metrics().num_alive_tasks() as u64)),
    );
    r
}

/// New flows refused for the `limits`, and the caps and live count they are checked against.
fn limit_metrics(r: &mut Registry, limits: &crate::relay::limits::Limits) {
    let refused = Family::<Labels, Counter>::default();
    for (network, over, n) in limits.refused() {
        let labels = vec![
            ("network", network.to_string()),
            ("reason", over.label().to_owned()),
        ];
        refused.get_or_create(&labels).inc_by(n);
    }
    r.register(
        "tpgate_flows_refused",
        "New TCP connections (reset) and UDP flows (datagram dropped) refused for the limits, by reason (max-connections, per-source)",
        refused,
    );
    let (max, per_source) = limits.caps();
    let caps = Family::<Labels, Gauge>::default();
    for (limit, v) in [("max-connections", max), ("per-source", per_source)] {
        caps.get_or_create(&vec![("limit", limit.to_owned())])
            .set(as_i64(v as u64));
    }
    r.register("tpgate_flow_limit", "The limits in force", caps);
    gauge(
        r,
        "tpgate_flows_admitted",
        "Live TCP connections and UDP flows holding a place under the limits (includes those not decided yet)",
        as_i64(limits.live() as u64),
    );
}

fn dns_metrics(r: &mut Registry, dns: &Dns) {
    let answers = Family::<Labels, Counter>::default();
    let failures = Family::<Labels, Counter>::default();
    let latency = Family::<Labels, Counter<f64>>::default();
    for (server, ok, failed, secs) in dns.upstream_stats() {
        let labels = vec![("server", server)];
        answers.get_or_create(&labels).inc_by(ok);
        failures.get_or_create(&labels).inc_by(failed);
        latency.get_or_create(&labels).inc_by(secs);
    }
    r.register(
        "tpgate_dns_upstream_answers",
        "Answers from each upstream DNS server",
        answers,
    );
    r.register(
        "tpgate_dns_upstream_failures",
        "Queries to each upstream DNS server that failed (timeout, error, SERVFAIL, REFUSED)",
        failures,
    );
    r.register(
        "tpgate_dns_upstream_latency_seconds",
        "Total time each upstream DNS server took to answer (divide by the answers for the mean)",
        latency,
    );
    let used = Family::<Labels, Gauge>::default();
    let size = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (family, n, capacity) in dns.fake_ip_use() {
        let labels = vec![("family", family.to_owned())];
        used.get_or_create(&labels).set(as_i64(n));
        #[allow(clippy::cast_precision_loss)] // a size, shown as a float on purpose
        size.get_or_create(&labels).set(capacity as f64);
    }
    r.register(
        "tpgate_dns_fake_ip_used",
        "Fake-ip addresses holding a name",
        used,
    );
    r.register(
        "tpgate_dns_fake_ip_capacity",
        "Addresses in the fake-ip range",
        size,
    );
}

/// Provider update outcomes and ages, proxies per provider, geodata file ages.
fn provider_metrics(r: &mut Registry, api: &Api) {
    let updates = Family::<Labels, Counter>::default();
    let age = Family::<Labels, Gauge>::default();
    for ((kind, name), u) in crate::providers::updates() {
        for (result, n) in [("ok", u.ok), ("failed", u.failed)] {
            updates
                .get_or_create(&vec![
                    ("kind", kind.to_owned()),
                    ("provider", name.clone()),
                    ("result", result.to_owned()),
                ])
                .inc_by(n);
        }
        if let Some(t) = u.last_ok {
            age.get_or_create(&vec![("kind", kind.to_owned()), ("provider", name)])
                .set(seconds_since(t));
        }
    }
    let config = api.config();
    let shared = api.shared();
    let proxies = Family::<Labels, Gauge>::default();
    for (k, p) in config.proxy_providers.iter().enumerate() {
        let labels = vec![("provider", p.name.clone())];
        proxies
            .get_or_create(&labels)
            .set(as_i64(shared.outbounds.provided_count(k) as u64));
    }
    r.register(
        "tpgate_provider_updates",
        "Provider downloads and reloads, by kind (rule, proxy) and result",
        updates,
    );
    r.register(
        "tpgate_provider_update_age_seconds",
        "Seconds since each provider's last successful update",
        age,
    );
    r.register(
        "tpgate_proxy_provider_proxies",
        "Usable proxies each proxy provider has now",
        proxies,
    );
    let geo = Family::<Labels, Gauge>::default();
    for (file, path) in [
        ("geoip", config.geoip_path.as_deref()),
        ("geosite", config.geosite_path.as_deref()),
    ] {
        let modified = path.and_then(|p| std::fs::metadata(p).ok()?.modified().ok());
        if let Some(t) = modified {
            geo.get_or_create(&vec![("file", file.to_owned())])
                .set(seconds_since(t));
        }
    }
    r.register(
        "tpgate_geodata_age_seconds",
        "Seconds since each geodata file in use was last written",
        geo,
    );
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

#[cfg(test)]
mod tests {
    /// Every metric the Grafana dashboard in `packaging/` queries is one this module
    /// registers (counters are registered without their `_total`).
    #[test]
    fn the_grafana_dashboard_queries_only_metrics_that_exist() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../../packaging/grafana-dashboard.json"))
                .expect("dashboard JSON");
        let source = include_str!("metrics.rs");
        let mut checked = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                for name in expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("tpgate_"))
                {
                    let base = name.strip_suffix("_total").unwrap_or(name);
                    assert!(
                        source.contains(&format!("\"{base}\"")),
                        "panel {}: {name} is not a tpgate metric",
                        panel["title"]
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 20, "{checked}");
    }
}
