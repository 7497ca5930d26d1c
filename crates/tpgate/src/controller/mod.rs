//! The external controller: the part of mihomo's REST API that dashboards and scripts use
//! to see proxies and groups, to switch a select group (`PUT /proxies/{group}`), and to list
//! and close live connections (`/connections`, from the relay's registry). A bad
//! request gets a 4xx answer; it never affects the daemon.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tpgate_core::config::{GroupKind, Member};
use tracing::{info, warn};

use crate::outbound::{self, Node, Outbounds};
use crate::relay::registry::Registry;
use crate::shutdown::Shutdown;

mod connections;

#[derive(Clone)]
struct Api {
    outbounds: Arc<Outbounds>,
    /// Live flows, for `/connections`.
    registry: Arc<Registry>,
    secret: Option<Arc<str>>,
}

pub(crate) async fn serve(
    listener: TcpListener,
    (outbounds, registry): (Arc<Outbounds>, Arc<Registry>),
    secret: Option<String>,
    shutdown: Shutdown,
) {
    let api = Api {
        outbounds,
        registry,
        secret: secret.map(Into::into),
    };
    let app = Router::new()
        .route("/", get(|| async { Json(json!({"hello": "tpgate"})) }))
        .route("/version", get(version))
        .route("/proxies", get(proxies))
        .route("/proxies/{name}", get(proxy).put(select))
        .route("/proxies/{name}/delay", get(delay))
        .route(
            "/connections",
            get(connections::list).delete(connections::close_all),
        )
        .route("/connections/{id}", delete(connections::close))
        .layer(middleware::from_fn_with_state(api.clone(), auth))
        .with_state(api);
    let stop = async move { shutdown.wait().await };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        warn!("external controller stopped: {e}");
    }
}

/// `Authorization: Bearer <secret>` (or `?token=`), as mihomo checks it.
async fn auth(State(api): State<Api>, req: Request, next: Next) -> Response {
    let Some(secret) = &api.secret else {
        return next.run(req).await;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    if bearer == Some(secret) || token == Some(secret) {
        next.run(req).await
    } else {
        error(StatusCode::UNAUTHORIZED, "Unauthorized")
    }
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "message": message }))).into_response()
}

async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION"), "meta": true, "tpgate": true}))
}

fn describe(o: &Outbounds, node: &Node) -> Value {
    match node {
        Node::Upstream(u) => json!({
            "name": u.name,
            "type": u.type_name,
            "udp": u.udp,
            "history": [],
        }),
        Node::Group(g) => {
            let kind = match g.def.kind {
                GroupKind::Select => "Selector",
                GroupKind::UrlTest { .. } => "URLTest",
                GroupKind::Fallback => "Fallback",
                GroupKind::LoadBalance(_) => "LoadBalance",
                GroupKind::Relay => "Relay",
            };
            let members = g.members();
            let all: Vec<String> = members.list.iter().map(|&m| o.member_name(m)).collect();
            let mut v = json!({"name": g.def.name, "type": kind, "all": all, "history": []});
            if g.def.kind != GroupKind::Relay {
                let now = members
                    .list
                    .get(g.current())
                    .map_or(String::new(), |&m| o.member_name(m));
                v["now"] = json!(now);
            }
            v
        }
    }
}

/// The built-in outbounds every config has, as mihomo lists them.
const BUILTINS: [(&str, &str, Member); 2] = [
    ("DIRECT", "Direct", Member::Direct),
    ("REJECT", "Reject", Member::Reject),
];

fn builtin(name: &str) -> Option<(Value, Member)> {
    BUILTINS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|&(n, kind, m)| {
            let v = json!({"name": n, "type": kind, "udp": true, "history": []});
            (v, m)
        })
}

async fn proxies(State(api): State<Api>) -> Json<Value> {
    let o = &api.outbounds;
    let mut map: BTreeMap<String, Value> = BTreeMap::new();
    for (name, ..) in BUILTINS {
        if let Some((v, _)) = builtin(name) {
            map.insert(name.into(), v);
        }
    }
    for n in &o.nodes() {
        map.insert(n.name().to_string(), describe(o, n));
    }
    Json(json!({ "proxies": map }))
}

/// A proxy, a group, or DIRECT/REJECT (listed by `GET /proxies`, so they answer here too).
async fn proxy(State(api): State<Api>, Path(name): Path<String>) -> Response {
    match (api.outbounds.find(&name), builtin(&name)) {
        (Some(n), _) => Json(describe(&api.outbounds, &n)).into_response(),
        (None, Some((v, _))) => Json(v).into_response(),
        (None, None) => error(StatusCode::NOT_FOUND, "resource not found"),
    }
}

#[derive(Deserialize)]
struct SelectBody {
    name: String,
}

/// The body is read as JSON whatever its content type says (`curl -d` sends a form type).
async fn select(
    State(api): State<Api>,
    Path(group): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<SelectBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be JSON like {\"name\": \"member\"}",
        );
    };
    if api.outbounds.find(&group).is_none() {
        return error(StatusCode::NOT_FOUND, "resource not found");
    }
    match api.outbounds.select(&group, &body.name) {
        Ok(()) => {
            info!("group {group}: selected {}", body.name);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

#[derive(Deserialize)]
struct DelayQuery {
    url: String,
    timeout: Option<u64>,
}

async fn delay(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(q): Query<DelayQuery>,
) -> Response {
    let o = &api.outbounds;
    let member = match (o.id_of(&name), builtin(&name)) {
        (Some(id), _) => Member::Target(id),
        (None, Some((_, m))) => m,
        (None, None) => return error(StatusCode::NOT_FOUND, "resource not found"),
    };
    let Some(url) = outbound::Url::parse(&q.url) else {
        return error(StatusCode::BAD_REQUEST, "url must be http:// or https://");
    };
    let timeout = Duration::from_millis(q.timeout.unwrap_or(5000).clamp(100, 60_000));
    match outbound::probe(o, member, &url, timeout).await {
        Some(ms) => Json(json!({ "delay": ms })).into_response(),
        None => error(StatusCode::GATEWAY_TIMEOUT, "Timeout"),
    }
}
