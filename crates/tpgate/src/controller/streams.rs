//! The streaming routes: `/traffic` (`{up, down}` bytes in the last second, from the
//! registry's totals), `/memory` (`{inuse, oslimit}`, the process's resident memory),
//! `/logs?level=&format=` (`{type, payload}` or mihomo's structured form), and the
//! WebSocket side of `/connections`. Each answers a WebSocket upgrade with one text message
//! per item, and a plain GET with a chunked response of one JSON line per item, as mihomo
//! does; all end at shutdown.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures::stream::{BoxStream, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::{bad_request, Api};
use crate::logs;

/// The client asked for a WebSocket (`Upgrade: websocket`, as mihomo checks it).
pub(super) fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// A stream of JSON items, sent the way the client asked: WebSocket messages, or the lines
/// of a chunked response.
pub(super) fn respond(
    api: &Api,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    items: BoxStream<'static, Value>,
) -> Response {
    let stop = api.stop.clone();
    let items = items
        .take_until(Box::pin(async move { stop.wait().await }))
        .boxed();
    match ws {
        Ok(ws) => ws.on_upgrade(move |socket| send(socket, items)),
        Err(rejection) if wants_websocket(headers) => rejection.into_response(),
        Err(_) => {
            let lines =
                items.map(|v| Ok::<_, std::convert::Infallible>(Bytes::from(format!("{v}\n"))));
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(lines),
            )
                .into_response()
        }
    }
}

/// Sends each item as a text message until the stream ends or the client goes away.
async fn send(mut socket: WebSocket, mut items: BoxStream<'static, Value>) {
    loop {
        tokio::select! {
            item = items.next() => {
                let Some(item) = item else { break };
                if socket.send(Message::Text(item.to_string().into())).await.is_err() {
                    return;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// `f()` every `period`, the first time at once when `now`.
pub(super) fn every(
    period: Duration,
    now: bool,
    mut f: impl FnMut() -> Value + Send + 'static,
) -> BoxStream<'static, Value> {
    let start = tokio::time::Instant::now() + if now { Duration::ZERO } else { period };
    let mut tick = tokio::time::interval_at(start, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::poll_fn(move |cx| tick.poll_tick(cx).map(|_| Some(f()))).boxed()
}

/// `GET /traffic`: every second, the bytes moved (both ways, all flows) since the last.
pub(super) async fn traffic(
    State(api): State<Api>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let registry = api.shared().registry.clone();
    let (_, mut up0, mut down0) = registry.totals();
    let items = every(Duration::from_secs(1), false, move || {
        let (_, up, down) = registry.totals();
        let v = json!({"up": up.saturating_sub(up0), "down": down.saturating_sub(down0)});
        (up0, down0) = (up, down);
        v
    });
    respond(&api, &headers, ws, items)
}

/// Resident memory in bytes (`VmRSS` of /proc/self/status).
pub(super) fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `GET /memory`: every second, `{inuse, oslimit}`; the first is 0 (mihomo's, so charts
/// start at zero).
pub(super) async fn memory(
    State(api): State<Api>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let mut first = true;
    let items = every(Duration::from_secs(1), false, move || {
        let inuse = if std::mem::take(&mut first) { 0 } else { rss() };
        json!({"inuse": inuse, "oslimit": 0})
    });
    respond(&api, &headers, ws, items)
}

/// `GET /logs?level=info&format=structured`.
pub(super) async fn logs(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let level = match q.get("level").map(String::as_str) {
        None | Some("") => Some(tpgate_core::config::LogLevel::Info),
        Some(l) => logs::parse_level(l),
    };
    let Some(level) = level else {
        return bad_request();
    };
    let structured = q.get("format").is_some_and(|f| f == "structured");
    let rx = logs::subscribe();
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => return Some((line, rx)),
                // A slow reader loses lines; it goes on with the newest.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let items = lines
        .filter(move |l| {
            let keep = l.level != tpgate_core::config::LogLevel::Silent
                && logs::verbosity(l.level) <= logs::verbosity(level);
            std::future::ready(keep)
        })
        .map(move |l| {
            let kind = logs::level_name(l.level);
            if structured {
                json!({
                    "time": clock(),
                    "level": if kind == "warning" { "warn" } else { kind },
                    "message": l.payload,
                    "fields": [],
                })
            } else {
                json!({"type": kind, "payload": l.payload})
            }
        })
        .boxed();
    respond(&api, &headers, ws, items)
}

/// `15:04:05` in UTC (Go's `time.TimeOnly`).
fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
