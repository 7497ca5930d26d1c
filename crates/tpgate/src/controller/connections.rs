//! `/connections`: the registry's live flows in mihomo's shape (what dashboards list), once
//! or as a WebSocket pushing the same snapshot every `?interval=` ms (default 1000), and
//! closing them (`DELETE /connections`, `DELETE /connections/{id}`), which ends the flow's
//! relay: a TCP client gets a RST, a UDP flow leaves the NAT table.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tpgate_core::flow::HostFrom;
use tracing::info;

use super::{bad_request, not_found, rules, streams, Api};
use crate::relay::registry::{Entry, Registry};

/// The snapshot mihomo sends.
fn snapshot(registry: &Registry) -> Value {
    let (_, up, down) = registry.totals();
    let conns: Vec<Value> = registry.snapshot().iter().map(|e| describe(e)).collect();
    json!({
        "downloadTotal": down,
        "uploadTotal": up,
        "connections": conns,
        "memory": streams::rss(),
    })
}

/// `GET /connections`; a WebSocket gets the snapshot now and every `?interval=` ms.
pub(super) async fn list(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !streams::wants_websocket(&headers) {
        return Json(snapshot(&api.shared().registry)).into_response();
    }
    let interval = match q.get("interval").map(|i| i.parse::<u64>()) {
        None => 1000,
        Some(Ok(ms)) => ms.clamp(100, 3_600_000),
        Some(Err(_)) => return bad_request(),
    };
    let registry = api.shared().registry.clone();
    let items = streams::every(Duration::from_millis(interval), true, move || {
        snapshot(&registry)
    });
    streams::respond(&api, &headers, ws, items)
}

/// `DELETE /connections`: closes every live flow.
pub(super) async fn close_all(State(api): State<Api>) -> StatusCode {
    let n = api.shared().registry.close_all();
    info!(flows = n, "all connections closed by the controller");
    StatusCode::NO_CONTENT
}

/// `DELETE /connections/{id}`.
pub(super) async fn close(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match id
        .parse::<u64>()
        .ok()
        .filter(|&id| api.shared().registry.close(id))
    {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(),
    }
}

/// One flow as mihomo describes a connection.
fn describe(e: &Entry) -> Value {
    let i = &e.info;
    let process = i.process.as_ref();
    // A sub-rule's flow names the list's rule last: `SUB-RULE,(..),web > DOMAIN,x,y`.
    let deciding = i.rule.rsplit(" > ").next().unwrap_or_default();
    let (rule, payload) = rules::parts(deciding);
    let rule = rules::type_name(&rule.to_ascii_uppercase()).to_owned();
    // mihomo lists the chain from the leaf back to the rule's target.
    let chains: Vec<&str> = i.route.split('/').rev().collect();
    json!({
        "id": e.id.to_string(),
        "metadata": {
            "network": i.network.to_string(),
            "type": "TProxy",
            "sourceIP": i.client.ip().to_string(),
            "destinationIP": i.dst.ip().to_string(),
            "sourcePort": i.client.port().to_string(),
            "destinationPort": i.dst.port().to_string(),
            "host": i.host.clone().unwrap_or_default(),
            "sniffHost": if i.host_from == Some(HostFrom::Sniffed) {
                i.host.clone().unwrap_or_default()
            } else {
                String::new()
            },
            "dnsMode": match i.host_from {
                Some(HostFrom::FakeIp) => "fake-ip",
                Some(HostFrom::DnsMapping) => "redir-host",
                _ => "normal",
            },
            "process": process.and_then(|p| p.name.clone()).unwrap_or_default(),
            "processPath": process.and_then(|p| p.path.clone()).unwrap_or_default(),
            "uid": process.and_then(|p| p.uid),
            "inboundName": "tproxy",
            "origin": crate::relay::origin_name(i.origin),
        },
        "upload": e.up(),
        "download": e.down(),
        "start": rfc3339(e.started),
        "chains": chains,
        "rule": rule,
        "rulePayload": payload,
    })
}

/// `2026-12-06T11:23:26.123Z`.
pub(super) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_556_206_123);
        assert_eq!(rfc3339(t), "2026-12-06T11:23:26.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
