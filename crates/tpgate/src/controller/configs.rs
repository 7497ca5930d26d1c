//! `/configs` and the routes that change the daemon itself. `GET /configs` reports what is
//! in force in mihomo's shape (ports tpgate does not have are 0); `PATCH /configs` changes
//! `mode` and `log-level` live, accepts the other keys only when they already hold, and
//! says which it cannot change; `PUT /configs` reloads (from the running config's file, a
//! `path`, or a `payload`), answering 400 with the `FILE:LINE:COL` lines of a refused config;
//! `POST /restart` is a reload too (everything applies live); `POST /configs/geo` downloads
//! the geodata files from `geox-url` and reloads; `/upgrade` and `/upgrade/ui` answer 501:
//! tpgate does not upgrade itself from the API.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tpgate_core::rules::Mode;
use tracing::info;

use super::{bad_request, error, Api};
use crate::logs;
use crate::reload::{Request, Source};

pub(super) async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION"), "meta": true, "tpgate": true}))
}

pub(super) fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Rule => "rule",
        Mode::Global => "global",
        Mode::Direct => "direct",
    }
}

fn parse_mode(s: &str) -> Option<Mode> {
    [Mode::Rule, Mode::Global, Mode::Direct]
        .into_iter()
        .find(|&m| s.eq_ignore_ascii_case(mode_name(m)))
}

/// What `GET /configs` answers.
fn general(api: &Api) -> Value {
    let c = api.config();
    json!({
        "port": 0,
        "socks-port": 0,
        "redir-port": 0,
        "tproxy-port": c.tproxy_port,
        "mixed-port": 0,
        "tun": {
            "enable": false,
            "device": "",
            "stack": "",
            "dns-hijack": [],
            "auto-route": false,
            "auto-detect-interface": false,
            "file-descriptor": 0,
        },
        "tuic-server": {"enable": false, "listen": "", "certificate": "", "private-key": ""},
        "ss-config": "",
        "vmess-config": "",
        "authentication": [],
        "skip-auth-prefixes": [],
        "lan-allowed-ips": [],
        "lan-disallowed-ips": [],
        "allow-lan": !c.intercept.lan_interfaces.is_empty(),
        "bind-address": "*",
        "inbound-tfo": false,
        "inbound-mptcp": false,
        "mode": mode_name(api.shared().engine.mode()),
        "modes": ["rule", "global", "direct"],
        "unified-delay": false,
        "log-level": logs::level_name(logs::level()),
        "ipv6": c.ipv6,
        "interface-name": "",
        "routing-mark": c.routing_mark,
        "geox-url": {"geo-ip": "", "mmdb": "", "asn": "", "geo-site": ""},
        "geo-auto-update": false,
        "geo-update-interval": 0,
        "geodata-mode": false,
        "geodata-loader": "",
        "geosite-matcher": "",
        "tcp-concurrent": false,
        "find-process-mode": "strict",
        "sniffing": c.sniffer.enable,
        "global-client-fingerprint": "",
        "global-ua": "",
        "etag-support": false,
        "keep-alive-idle": 0,
        "keep-alive-interval": 0,
        "disable-keep-alive": false,
    })
}

pub(super) async fn get_configs(State(api): State<Api>) -> Json<Value> {
    Json(general(&api))
}

/// `PATCH /configs`: all or nothing; 204, or 400 saying what cannot change.
pub(super) async fn patch_configs(State(api): State<Api>, body: Bytes) -> Response {
    let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(&body) else {
        return bad_request();
    };
    let now = general(&api);
    let (mut mode, mut level) = (None, None);
    for (key, value) in &patch {
        match key.as_str() {
            "mode" => match value.as_str().and_then(parse_mode) {
                Some(m) => mode = Some(m),
                None => return bad_request(),
            },
            "log-level" => match value.as_str().and_then(logs::parse_level) {
                Some(l) => level = Some(l),
                None => return bad_request(),
            },
            _ => {
                if let Some(problem) = unchangeable(&now, key, value) {
                    return error(StatusCode::BAD_REQUEST, &problem);
                }
            }
        }
    }
    if let Some(m) = mode {
        api.shared().engine.set_mode(m);
        info!("mode switched to {} by the controller", mode_name(m));
    }
    if let Some(l) = level {
        logs::set_level(l);
        info!("log level set to {} by the controller", logs::level_name(l));
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Why `key: value` cannot be applied, or `None` when it already holds (or is a key mihomo
/// would ignore too).
fn unchangeable(now: &Value, key: &str, value: &Value) -> Option<String> {
    let current = now.get(key)?;
    let same = match (current, value) {
        // `tun: {enable: false}` is the state, whatever else it lists.
        (Value::Object(cur), Value::Object(want)) => {
            want.iter().all(|(k, v)| cur.get(k).is_none_or(|c| c == v))
        }
        (c, v) => c == v,
    };
    (!same).then(|| {
        format!(
            "tpgate cannot change `{key}` from PATCH (only `mode` and `log-level`); edit \
             the config file and reload it (`tpgate reload`, or PUT /configs)"
        )
    })
}

fn not_supported(message: &str) -> Response {
    error(StatusCode::NOT_IMPLEMENTED, message)
}

/// `PUT /configs` (`{"path": "...", "payload": "..."}`, both optional): a reload, as
/// `SIGHUP` does; 204, or 400 with why the config was refused (the running one stays).
pub(super) async fn put_configs(State(api): State<Api>, body: Bytes) -> Response {
    #[derive(serde::Deserialize, Default)]
    struct Put {
        #[serde(default)]
        path: String,
        #[serde(default)]
        payload: String,
    }
    let put = if body.iter().all(u8::is_ascii_whitespace) {
        Put::default()
    } else {
        match serde_json::from_slice::<Put>(&body) {
            Ok(p) => p,
            Err(_) => return bad_request(),
        }
    };
    let source = if !put.payload.is_empty() {
        Source::Payload(put.payload)
    } else if !put.path.is_empty() {
        Source::File(Some(put.path.into()))
    } else {
        Source::File(None)
    };
    match reload(&api, source).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

/// `POST /configs/geo`, `/upgrade/geo`: downloads every geodata file the config uses from
/// its `geox-url`, then reloads; 204, 400 when the config names no URL, 502 with what failed
/// (the files in place stay).
pub(super) async fn geo(State(api): State<Api>) -> Response {
    let config = api.config();
    if crate::geodata::wanted(&config, api.config_path.as_deref()).is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the config names no geodata to download: set `geox-url.mmdb` (GEOIP rules) or \
             `geox-url.geosite` (GEOSITE rules)",
        );
    }
    let shared = api.shared();
    match crate::geodata::update(
        &config,
        api.config_path.as_deref(),
        &shared.outbounds,
        false,
    )
    .await
    {
        Ok(_) => match reload(&api, Source::File(None)).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(r) => r,
        },
        Err(lines) => {
            for l in &lines {
                tracing::warn!("{l}");
            }
            error(StatusCode::BAD_GATEWAY, &lines.join("\n"))
        }
    }
}

/// `POST /restart`: tpgate applies every part of a config live, so a restart is a reload
/// of the config file (the DNS server's and the controller's addresses excepted, which the
/// log names when they changed); `{"status":"ok"}`, or 400 with why it was refused.
pub(super) async fn restart(State(api): State<Api>) -> Response {
    match reload(&api, Source::File(None)).await {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(r) => r,
    }
}

/// Asks the daemon for a reload from `source`; the error is the response to give.
async fn reload(api: &Api, source: Source) -> Result<(), Response> {
    let Some(requests) = &api.reload else {
        return Err(not_supported(
            "this tpgate controller has no daemon to reload",
        ));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if requests.send(Request { source, reply }).await.is_err() {
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, "tpgate is stopping"));
    }
    match answer.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(lines)) => Err(error(StatusCode::BAD_REQUEST, &lines.join("\n"))),
        Err(_) => Err(error(StatusCode::SERVICE_UNAVAILABLE, "tpgate is stopping")),
    }
}

/// `POST /upgrade`, `/upgrade/ui`.
pub(super) async fn upgrade() -> Response {
    not_supported(
        "tpgate does not upgrade itself or its dashboard: install a new tpgate with your \
         package manager, and unpack a new dashboard into external-ui",
    )
}
