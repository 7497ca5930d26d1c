//! `/providers/proxies` and `/providers/rules`. As mihomo does, one `default` provider of
//! type `Compatible` holds DIRECT, REJECT, every proxy and every group written in the config,
//! in config order (updating it changes nothing); each `proxy-providers` entry follows with
//! the proxies it has now, when it was last updated and its `subscriptionInfo`. `PUT`
//! downloads an http provider (or reads a file provider) again now; `healthcheck` tests its
//! proxies. Rule providers are the config's `rule-providers`, with their live entry counts;
//! `PUT` loads one again now.

use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tpgate_core::config::{ProviderSource, ProxySource, RuleProvider, DEFAULT_HEALTH_URL};
use tpgate_core::rules::{Behavior, Format};
use tracing::{info, warn};

use super::connections::rfc3339;
use super::proxies::{self, DelayQuery};
use super::{error, not_found, Api};
use crate::outbound::Node;

/// mihomo's name of the provider of the config's own proxies.
const DEFAULT: &str = "default";

/// The names the `default` provider holds: like `GLOBAL`'s members.
fn default_names(api: &Api) -> Vec<String> {
    let shared = api.shared();
    let o = &shared.outbounds;
    let global = o.builtin_global();
    ["DIRECT", "REJECT"]
        .into_iter()
        .map(str::to_owned)
        .chain(
            o.nodes()
                .iter()
                .enumerate()
                .filter(|(i, _)| global.is_none_or(|g| g.0 as usize != *i))
                .map(|(_, n)| n.name().to_owned()),
        )
        .collect()
}

fn default_provider(api: &Api) -> Value {
    let proxies: Vec<Value> = default_names(api)
        .iter()
        .filter_map(|n| proxies::describe(api, n))
        .collect();
    json!({
        "name": DEFAULT,
        "type": "Proxy",
        "vehicleType": "Compatible",
        "proxies": proxies,
        "testUrl": "",
        "expectedStatus": "*",
    })
}

/// A provider named in a path: the config's own proxies, or proxy provider `k`.
#[derive(Clone, Copy)]
enum Which {
    Default,
    Provided(usize),
}

fn which(api: &Api, name: &str) -> Option<Which> {
    if name == DEFAULT {
        return Some(Which::Default);
    }
    api.config()
        .proxy_providers
        .iter()
        .position(|p| p.name == name)
        .map(Which::Provided)
}

/// The proxy names provider `w` holds now.
fn names_of(api: &Api, w: Which) -> Vec<String> {
    match w {
        Which::Default => default_names(api),
        Which::Provided(k) => api.shared().outbounds.provided_names(k),
    }
}

/// mihomo's shape of proxy provider `k`.
fn provided_provider(api: &Api, k: usize) -> Option<Value> {
    let config = api.config();
    let p = config.proxy_providers.get(k)?;
    let shared = api.shared();
    let o = &shared.outbounds;
    let proxies: Vec<Value> = o
        .provided_names(k)
        .iter()
        .filter_map(|n| proxies::describe(api, n))
        .collect();
    let vehicle = match p.source {
        ProxySource::File { .. } => "File",
        ProxySource::Http { .. } => "HTTP",
        ProxySource::Inline => "Inline",
    };
    let mut v = json!({
        "name": p.name,
        "type": "Proxy",
        "vehicleType": vehicle,
        "proxies": proxies,
        "testUrl": p.health.as_ref().map_or("", |h| h.url.as_str()),
        "expectedStatus": "*",
        "updatedAt": rfc3339(o.provided_at(k).unwrap_or(api.started)),
    });
    if let Some(info) = o.subscription_info(&p.name) {
        v["subscriptionInfo"] = json!({
            "Upload": info.upload,
            "Download": info.download,
            "Total": info.total,
            "Expire": info.expire,
        });
    }
    Some(v)
}

fn provider_json(api: &Api, w: Which) -> Option<Value> {
    match w {
        Which::Default => Some(default_provider(api)),
        Which::Provided(k) => provided_provider(api, k),
    }
}

/// `GET /providers/proxies`.
pub(super) async fn proxy_providers(State(api): State<Api>) -> Json<Value> {
    let mut all = Map::new();
    all.insert(DEFAULT.to_owned(), default_provider(&api));
    for k in 0..api.config().proxy_providers.len() {
        if let Some(v) = provided_provider(&api, k) {
            all.insert(v["name"].as_str().unwrap_or_default().to_owned(), v);
        }
    }
    Json(json!({ "providers": all }))
}

/// `GET /providers/proxies/{provider}`.
pub(super) async fn proxy_provider(
    State(api): State<Api>,
    Path(provider): Path<String>,
) -> Response {
    match which(&api, &provider).and_then(|w| provider_json(&api, w)) {
        Some(v) => Json(v).into_response(),
        None => not_found(),
    }
}

/// `PUT /providers/proxies/{provider}`: an http provider is downloaded again now, a file
/// provider read again; 204, or 503 with why (the provider keeps what it had). The
/// config's own proxies are always current.
pub(super) async fn update_proxy_provider(
    State(api): State<Api>,
    Path(provider): Path<String>,
) -> Response {
    match which(&api, &provider) {
        None => not_found(),
        Some(Which::Default) => StatusCode::NO_CONTENT.into_response(),
        Some(Which::Provided(k)) => {
            let config = api.config();
            let shared = api.shared();
            match crate::providers::update_proxy_provider_now(&config, k, &shared.outbounds).await {
                Ok(n) => {
                    info!(provider = %provider, proxies = n, "proxy provider updated by the controller");
                    StatusCode::NO_CONTENT.into_response()
                }
                Err(e) => {
                    warn!(provider = %provider, "proxy provider update failed: {e:#}");
                    error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}"))
                }
            }
        }
    }
}

/// `GET /providers/proxies/{provider}/healthcheck`: tests every proxy of the provider
/// (against the provider's `health-check` URL when it has one, else the default URL),
/// records the results, then 204.
pub(super) async fn healthcheck(State(api): State<Api>, Path(provider): Path<String>) -> Response {
    let Some(w) = which(&api, &provider) else {
        return not_found();
    };
    let shared = api.shared();
    let o = &shared.outbounds;
    let names: Vec<String> = match w {
        Which::Default => o
            .nodes()
            .iter()
            .filter_map(|n| match n {
                Node::Upstream(u) => Some(u.name.clone()),
                Node::Group(_) => None,
            })
            .collect(),
        Which::Provided(k) => o.provided_names(k),
    };
    let url = match w {
        Which::Provided(k) => api.config().proxy_providers[k]
            .health
            .as_ref()
            .map(|h| h.url.clone()),
        Which::Default => None,
    };
    let Some(url) = crate::outbound::Url::parse(url.as_deref().unwrap_or(DEFAULT_HEALTH_URL))
    else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let tests = names.iter().filter_map(|n| {
        let id = o.id_of(n)?;
        let url = &url;
        Some(async move {
            let m = tpgate_core::config::Member::Target(id);
            let r = crate::outbound::probe(o, m, url, std::time::Duration::from_secs(5)).await;
            o.history.record(n, r);
        })
    });
    futures::future::join_all(tests).await;
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /providers/proxies/{provider}/{name}`.
pub(super) async fn provider_proxy(
    State(api): State<Api>,
    Path((provider, name)): Path<(String, String)>,
) -> Response {
    if !which(&api, &provider).is_some_and(|w| names_of(&api, w).contains(&name)) {
        return not_found();
    }
    proxies::one(State(api), Path(name)).await
}

/// `GET /providers/proxies/{provider}/{name}/healthcheck?url=&timeout=`: a delay test.
pub(super) async fn provider_proxy_delay(
    State(api): State<Api>,
    Path((provider, name)): Path<(String, String)>,
    q: Query<DelayQuery>,
) -> Response {
    if !which(&api, &provider).is_some_and(|w| names_of(&api, w).contains(&name)) {
        return not_found();
    }
    proxies::delay(State(api), Path(name), q).await
}

fn behavior(b: Behavior) -> &'static str {
    match b {
        Behavior::Domain => "Domain",
        Behavior::IpCidr => "IPCIDR",
        Behavior::Classical => "Classical",
    }
}

fn format(f: Format) -> &'static str {
    match f {
        Format::Yaml => "YamlRule",
        Format::Text => "TextRule",
        Format::Mrs => "MrsRule",
    }
}

fn vehicle(p: &RuleProvider) -> &'static str {
    match p.source {
        ProviderSource::File { .. } => "File",
        ProviderSource::Http { .. } => "HTTP",
        ProviderSource::Inline => "Inline",
    }
}

fn rule_provider(api: &Api, p: &RuleProvider) -> Value {
    let updated = api
        .provider_updates
        .lock()
        .ok()
        .and_then(|u| u.get(&p.name).copied())
        .unwrap_or(api.started);
    json!({
        "behavior": behavior(p.behavior),
        "format": format(p.format),
        "name": p.name,
        "ruleCount": p.handle.current().len(),
        "type": "Rule",
        "vehicleType": vehicle(p),
        "updatedAt": rfc3339(updated),
    })
}

/// `GET /providers/rules`.
pub(super) async fn rule_providers(State(api): State<Api>) -> Json<Value> {
    let mut all = Map::new();
    let config = api.config();
    for p in &config.rule_providers {
        all.insert(p.name.clone(), rule_provider(&api, p));
    }
    Json(json!({ "providers": all }))
}

/// `PUT /providers/rules/{name}`: 204 once loaded again, 503 with why it failed.
pub(super) async fn update_rule_provider(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Response {
    let config = api.config();
    let Some(p) = config.rule_providers.iter().find(|p| p.name == name) else {
        return not_found();
    };
    let got = crate::providers::update_now(p, &api.shared().outbounds).await;
    crate::providers::record_update("rule", &name, got.is_ok());
    match got {
        Ok(n) => {
            info!(provider = %name, entries = n, "rule provider updated by the controller");
            if let Ok(mut u) = api.provider_updates.lock() {
                u.insert(name, SystemTime::now());
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            warn!(provider = %name, "rule provider update failed: {e:#}");
            error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}"))
        }
    }
}
