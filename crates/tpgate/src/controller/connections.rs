//! `/connections`: the registry's live flows in mihomo's shape (what dashboards list), and
//! closing them (`DELETE /connections`, `DELETE /connections/{id}`), which ends the flow's
//! relay: a TCP client gets a RST, a UDP flow leaves the NAT table.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tpgate_core::flow::HostFrom;
use tracing::info;

use super::{error, Api};
use crate::relay::registry::Entry;

/// `GET /connections`.
pub(super) async fn list(State(api): State<Api>) -> Json<Value> {
    let (_, up, down) = api.registry.totals();
    let conns: Vec<Value> = api
        .registry
        .snapshot()
        .iter()
        .map(|e| describe(e))
        .collect();
    Json(json!({
        "downloadTotal": down,
        "uploadTotal": up,
        "connections": conns,
        "memory": 0,
    }))
}

/// `DELETE /connections`: closes every live flow.
pub(super) async fn close_all(State(api): State<Api>) -> StatusCode {
    let n = api.registry.close_all();
    info!(flows = n, "all connections closed by the controller");
    StatusCode::NO_CONTENT
}

/// `DELETE /connections/{id}`.
pub(super) async fn close(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match id.parse::<u64>().ok().filter(|&id| api.registry.close(id)) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "resource not found"),
    }
}

/// One flow as mihomo describes a connection.
fn describe(e: &Entry) -> Value {
    let i = &e.info;
    let process = i.process.as_ref();
    let (rule, payload) = rule_parts(&i.rule);
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

/// `DOMAIN-SUFFIX,example.com,proxy` -> (`DOMAIN-SUFFIX`, `example.com`); `MATCH,x` ->
/// (`MATCH`, ``); `(none)` -> (`(none)`, ``).
fn rule_parts(text: &str) -> (&str, &str) {
    let mut parts = text.splitn(3, ',');
    let kind = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (Some(payload), Some(_)) => (kind, payload),
        _ => (kind, ""),
    }
}

/// `2026-12-06T11:23:26.123Z`.
fn rfc3339(t: SystemTime) -> String {
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
    fn timestamps_and_rule_parts() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_556_206_123);
        assert_eq!(rfc3339(t), "2026-12-06T11:23:26.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rule_parts("DOMAIN-SUFFIX,example.com,up"),
            ("DOMAIN-SUFFIX", "example.com")
        );
        assert_eq!(rule_parts("MATCH,DIRECT"), ("MATCH", ""));
        assert_eq!(rule_parts("(none)"), ("(none)", ""));
    }
}
