//! `/rules`: the main rule list with mihomo's type names, payloads and targets, each with
//! its index and whether it is switched off; `PATCH /rules/disable` `{"index": bool}`
//! switches rules off and on for the flows decided from then on.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tpgate_core::rules::{Rule, Verdict};
use tracing::info;

use super::{bad_request, json_body, Api};
use crate::outbound::Outbounds;

/// mihomo's name of a rule type (`DOMAIN-SUFFIX` -> `DomainSuffix`).
pub(super) fn type_name(kind: &str) -> &str {
    match kind {
        "DOMAIN" => "Domain",
        "DOMAIN-SUFFIX" => "DomainSuffix",
        "DOMAIN-KEYWORD" => "DomainKeyword",
        "DOMAIN-WILDCARD" => "DomainWildcard",
        "DOMAIN-REGEX" => "DomainRegex",
        "GEOSITE" => "GeoSite",
        "GEOIP" => "GeoIP",
        "SRC-GEOIP" => "SrcGeoIP",
        "IP-CIDR" | "IP-CIDR6" => "IPCIDR",
        "SRC-IP-CIDR" => "SrcIPCIDR",
        "SRC-PORT" => "SrcPort",
        "DST-PORT" => "DstPort",
        "PROCESS-NAME" => "ProcessName",
        "PROCESS-PATH" => "ProcessPath",
        "PROCESS-NAME-REGEX" => "ProcessNameRegex",
        "PROCESS-PATH-REGEX" => "ProcessPathRegex",
        "RULE-SET" => "RuleSet",
        "NETWORK" => "Network",
        "UID" => "Uid",
        "SUB-RULE" => "SubRules",
        "MATCH" => "Match",
        "ORIGIN" => "Origin",
        other => other,
    }
}

/// (type as written, payload) of a rule's text: `DOMAIN-SUFFIX,example.com,proxy` ->
/// (`DOMAIN-SUFFIX`, `example.com`); `MATCH,x` -> (`MATCH`, ``); `AND,((A),(B)),x` ->
/// (`AND`, `((A),(B))`).
pub(super) fn parts(text: &str) -> (&str, &str) {
    let text = text.trim();
    let text = text
        .strip_suffix(",no-resolve")
        .or_else(|| text.strip_suffix(",NO-RESOLVE"))
        .unwrap_or(text);
    let (kind, rest) = text.split_once(',').unwrap_or((text, ""));
    let payload = rest.rsplit_once(',').map_or("", |(p, _)| p);
    (kind.trim(), payload.trim())
}

/// The target's name as the dashboards show it.
fn target(o: &Outbounds, r: &Rule) -> String {
    match r.verdict {
        Verdict::Direct => "DIRECT".to_owned(),
        Verdict::Reject => "REJECT".to_owned(),
        Verdict::RejectDrop => "REJECT-DROP".to_owned(),
        Verdict::Proxy(id) => o.node(id).map_or_else(
            || {
                r.text
                    .rsplit(',')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            },
            |n| n.name().to_owned(),
        ),
    }
}

/// `GET /rules`.
pub(super) async fn list(State(api): State<Api>) -> Json<Value> {
    let shared = api.shared();
    let engine = &shared.engine;
    let shared = api.shared();
    let o = &shared.outbounds;
    let rules: Vec<Value> = engine
        .rules()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (kind, payload) = parts(&r.text);
            let proxy = if kind.eq_ignore_ascii_case("SUB-RULE") {
                r.text
                    .rsplit(',')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            } else {
                target(o, r)
            };
            json!({
                "index": i,
                "type": type_name(&kind.to_ascii_uppercase()),
                "payload": payload,
                "proxy": proxy,
                "size": -1,
                "extra": {
                    "disabled": engine.is_disabled(i),
                    "hitCount": 0,
                    "hitAt": "0001-01-01T00:00:00Z",
                    "missCount": 0,
                    "missAt": "0001-01-01T00:00:00Z",
                },
            })
        })
        .collect();
    Json(json!({ "rules": rules }))
}

/// `PATCH /rules/disable` `{"0": true, "3": false}`: 204, or 400 naming no rule.
pub(super) async fn disable(State(api): State<Api>, body: Bytes) -> Response {
    let Some(changes) = json_body::<HashMap<String, bool>>(&body) else {
        return bad_request();
    };
    let shared = api.shared();
    let engine = &shared.engine;
    let mut parsed = Vec::with_capacity(changes.len());
    for (k, off) in changes {
        match k.trim().parse::<usize>() {
            Ok(i) if i < engine.rules().len() => parsed.push((i, off)),
            _ => return bad_request(),
        }
    }
    for (i, off) in parsed {
        engine.set_disabled(i, off);
        info!(rule = i, disabled = off, "rule switched by the controller");
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_parts() {
        assert_eq!(
            parts("DOMAIN-SUFFIX,example.com,up"),
            ("DOMAIN-SUFFIX", "example.com")
        );
        assert_eq!(
            parts("IP-CIDR,192.0.2.0/24,DIRECT,no-resolve"),
            ("IP-CIDR", "192.0.2.0/24")
        );
        assert_eq!(parts("MATCH,DIRECT"), ("MATCH", ""));
        assert_eq!(
            parts("AND,((DST-PORT,443),(NETWORK,udp)),REJECT"),
            ("AND", "((DST-PORT,443),(NETWORK,udp))")
        );
        assert_eq!(parts("(none)"), ("(none)", ""));
        assert_eq!(type_name("IP-CIDR6"), "IPCIDR");
        assert_eq!(type_name("AND"), "AND");
    }
}
