//! The external controller: mihomo's REST API as dashboards (zashboard, metacubexd, yacd)
//! and scripts use it, on the same paths with the same JSON, status codes and
//! `{"message": ...}` errors. CORS answers browsers before authentication, so a preflight
//! never gets 401; `Authorization: Bearer` or `?token=` (URL-decoded, compared in constant
//! time) guards the rest; `/traffic`, `/memory`, `/logs` and `/connections` stream over a
//! WebSocket or a chunked response. The same router serves the TCP address, the unix socket
//! (without `secret`, as mihomo) and, with `external-ui`, a dashboard at `/ui/`.
//!
//! A bad request gets a 4xx answer; it never affects the daemon. Each route module reads the
//! daemon through [`Api`] and changes only what mihomo's route changes.

mod auth;
mod configs;
mod connections;
mod dns;
mod metrics;
mod providers;
mod proxies;
mod rules;
mod streams;
#[cfg(test)]
mod tests;
mod ui;

use std::collections::HashMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::{TcpListener, UnixListener};
use tpgate_core::config::{Config, Cors};
use tracing::warn;

use crate::dns::Dns;
use crate::relay::{Shared, SharedCell};
use crate::reload::{ConfigCell, Requests};
use crate::shutdown::Shutdown;

pub(crate) use metrics::Metrics;

/// What the controller reads and changes: shared by every request.
#[derive(Clone)]
pub(crate) struct Api(Arc<Inner>);

pub(crate) struct Inner {
    /// The config in force (ports, rule providers, what `/configs` reports); a reload
    /// replaces it.
    config: Arc<ConfigCell>,
    /// Where `PUT /configs` sends its reloads (`None`: no daemon to reload, in tests).
    reload: Option<Requests>,
    /// The config file (geodata paths are relative to its folder).
    config_path: Option<PathBuf>,
    /// The current rule engine (mode, disabled rules), outbounds and registry: a reload
    /// replaces them, so each request reads the cell.
    cell: Arc<SharedCell>,
    /// The built-in DNS server, for `/dns/query` and the cache flushes.
    dns: Option<Arc<Dns>>,
    secret: Option<String>,
    cors: Cors,
    /// `external-ui` (+ `external-ui-name`), already resolved against the config's folder.
    ui: Option<PathBuf>,
    /// Ends the streams (WebSockets, chunked responses) at shutdown, so the server's
    /// graceful stop does not wait for a dashboard to go away.
    stop: Shutdown,
    metrics: Metrics,
    /// When each rule provider was last loaded, for `updatedAt`.
    provider_updates: Mutex<HashMap<String, SystemTime>>,
    started: SystemTime,
}

impl Deref for Api {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// What the daemon hands the controller.
pub(crate) struct Context {
    pub(crate) config: Arc<ConfigCell>,
    pub(crate) reload: Option<Requests>,
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) cell: Arc<SharedCell>,
    pub(crate) dns: Option<Arc<Dns>>,
    /// The dashboard folder, resolved (see `Inner::ui`).
    pub(crate) ui: Option<PathBuf>,
    pub(crate) metrics: Metrics,
}

impl Inner {
    /// What new requests act on (the current config generation).
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.cell.load()
    }

    /// The config in force.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.load()
    }
}

impl Api {
    pub(crate) fn new(cx: Context, stop: Shutdown) -> Self {
        Self(Arc::new(Inner {
            secret: cx.config.load().secret.clone(),
            cors: cx.config.load().controller.cors.clone(),
            config: cx.config,
            reload: cx.reload,
            config_path: cx.config_path,
            cell: cx.cell,
            dns: cx.dns,
            ui: cx.ui,
            stop,
            metrics: cx.metrics,
            provider_updates: Mutex::new(HashMap::new()),
            started: SystemTime::now(),
        }))
    }

    /// The same API without `secret` (the unix socket's: mihomo trusts whoever may open it).
    fn without_secret(&self) -> Self {
        Self(Arc::new(Inner {
            config: self.config.clone(),
            reload: self.reload.clone(),
            config_path: self.config_path.clone(),
            cell: self.cell.clone(),
            dns: self.dns.clone(),
            secret: None,
            cors: self.cors.clone(),
            ui: self.ui.clone(),
            stop: self.stop.clone(),
            metrics: self.metrics.clone(),
            provider_updates: Mutex::new(HashMap::new()),
            started: self.started,
        }))
    }
}

/// Where the controller listens: the TCP address and the unix socket, bound by the daemon
/// before anything is installed.
#[derive(Default)]
pub(crate) struct Listeners {
    pub(crate) tcp: Option<TcpListener>,
    pub(crate) unix: Option<UnixListener>,
}

/// Serves until `api`'s shutdown fires.
pub(crate) async fn serve(listeners: Listeners, api: Api) {
    let stop = api.stop.clone();
    let tcp = listeners.tcp.map(|l| {
        let app = router(api.clone());
        let stop = stop.clone();
        async move {
            let shutdown = async move { stop.wait().await };
            if let Err(e) = axum::serve(l, app).with_graceful_shutdown(shutdown).await {
                warn!("external controller stopped: {e}");
            }
        }
    });
    let unix = listeners.unix.map(|l| {
        let app = router(api.without_secret());
        let stop = stop.clone();
        async move {
            let shutdown = async move { stop.wait().await };
            if let Err(e) = axum::serve(l, app).with_graceful_shutdown(shutdown).await {
                warn!("external controller (unix socket) stopped: {e}");
            }
        }
    });
    tokio::join!(
        async move {
            if let Some(t) = tcp {
                t.await;
            }
        },
        async move {
            if let Some(u) = unix {
                u.await;
            }
        }
    );
}

/// Every route, behind authentication; CORS in front of all of it.
pub(crate) fn router(api: Api) -> Router {
    let guarded = Router::new()
        .route("/", get(|| async { Json(json!({"hello": "mihomo"})) }))
        .route("/version", get(configs::version))
        .route("/traffic", get(streams::traffic))
        .route("/memory", get(streams::memory))
        .route("/logs", get(streams::logs))
        .route(
            "/configs",
            get(configs::get_configs)
                .patch(configs::patch_configs)
                .put(configs::put_configs),
        )
        .route("/configs/geo", post(configs::geo))
        .route("/restart", post(configs::restart))
        .route("/upgrade", post(configs::upgrade))
        .route("/upgrade/ui", post(configs::upgrade))
        .route("/upgrade/geo", post(configs::geo))
        .route("/proxies", get(proxies::list))
        .route(
            "/proxies/{name}",
            get(proxies::one)
                .put(proxies::select)
                .delete(proxies::unfix),
        )
        .route("/proxies/{name}/delay", get(proxies::delay))
        .route("/group", get(proxies::groups))
        .route("/group/{name}", get(proxies::group))
        .route("/group/{name}/delay", get(proxies::group_delay))
        .route("/providers/proxies", get(providers::proxy_providers))
        .route(
            "/providers/proxies/{provider}",
            get(providers::proxy_provider).put(providers::update_proxy_provider),
        )
        .route(
            "/providers/proxies/{provider}/healthcheck",
            get(providers::healthcheck),
        )
        .route(
            "/providers/proxies/{provider}/{name}",
            get(providers::provider_proxy),
        )
        .route(
            "/providers/proxies/{provider}/{name}/healthcheck",
            get(providers::provider_proxy_delay),
        )
        .route("/providers/rules", get(providers::rule_providers))
        .route(
            "/providers/rules/{name}",
            axum::routing::put(providers::update_rule_provider),
        )
        .route("/rules", get(rules::list))
        .route("/rules/disable", patch(rules::disable))
        .route(
            "/connections",
            get(connections::list).delete(connections::close_all),
        )
        .route("/connections/{id}", delete(connections::close))
        .route("/dns/query", get(dns::query))
        .route("/cache/fakeip/flush", post(dns::flush_fakeip))
        .route("/cache/dns/flush", post(dns::flush_dns))
        .route("/metrics", get(metrics::scrape))
        .layer(middleware::from_fn_with_state(
            api.clone(),
            auth::authenticate,
        ));
    let ui = ui::router(api.ui.clone());
    Router::new()
        .merge(guarded)
        .merge(ui)
        .layer(middleware::from_fn_with_state(api.clone(), auth::cors))
        .with_state(api)
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "message": message }))).into_response()
}

/// mihomo's answer to an unknown proxy, group, provider or connection.
fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Resource not found")
}

/// mihomo's answer to a body or query it cannot read.
fn bad_request() -> Response {
    error(StatusCode::BAD_REQUEST, "Body invalid")
}

/// The body as JSON whatever its content type says (`curl -d` sends a form type).
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}
