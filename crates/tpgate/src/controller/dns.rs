//! `/dns/query?name=&type=` (asked of the built-in DNS server's nameservers, through its
//! cache, answered in mihomo's JSON), `POST /cache/dns/flush` and `POST
//! /cache/fakeip/flush`.

use std::collections::HashMap;
use std::str::FromStr as _;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hickory_proto::op::{Message, MessageType, OpCode, Query as Question};
use hickory_proto::rr::{Name, Record, RecordType};
use serde_json::{json, Value};

use super::{error, Api};

fn disabled() -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "DNS section is disabled")
}

fn record(r: &Record) -> Value {
    json!({
        "name": r.name().to_ascii(),
        "type": u16::from(r.record_type()),
        "TTL": r.ttl(),
        "data": r.data().to_string(),
    })
}

/// `GET /dns/query?name=example.com&type=AAAA` (type defaults to A).
pub(super) async fn query(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(dns) = &api.dns else {
        return disabled();
    };
    let kind = q.get("type").map_or("A", String::as_str);
    let kind = match RecordType::from_str(&kind.to_ascii_uppercase()) {
        Ok(k) if !matches!(k, RecordType::Unknown(_)) => k,
        _ => return error(StatusCode::BAD_REQUEST, "invalid query type"),
    };
    let text = q.get("name").map_or("", |n| n.trim().trim_end_matches('.'));
    let Ok(name) = Name::from_ascii(format!("{text}.")) else {
        return error(StatusCode::BAD_REQUEST, "invalid name");
    };
    if text.is_empty() {
        return error(StatusCode::BAD_REQUEST, "invalid name");
    }
    let mut m = Message::new();
    m.set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Question::query(name, kind));
    let Some(reply) = dns.query(&m, &text.to_ascii_lowercase()).await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("{text}: no nameserver answered"),
        );
    };
    let questions: Vec<Value> = reply
        .queries()
        .iter()
        .map(|q| {
            json!({
                "Name": q.name().to_ascii(),
                "Qtype": u16::from(q.query_type()),
                "Qclass": u16::from(q.query_class()),
            })
        })
        .collect();
    let mut out = json!({
        "Status": u16::from(reply.response_code()),
        "Question": questions,
        "TC": reply.truncated(),
        "RD": reply.recursion_desired(),
        "RA": reply.recursion_available(),
        "AD": reply.authentic_data(),
        "CD": reply.checking_disabled(),
    });
    for (key, records) in [
        ("Answer", reply.answers()),
        ("Authority", reply.name_servers()),
        ("Additional", reply.additionals()),
    ] {
        if !records.is_empty() {
            out[key] = records.iter().map(record).collect();
        }
    }
    Json(out).into_response()
}

/// `POST /cache/dns/flush`.
pub(super) async fn flush_dns(State(api): State<Api>) -> Response {
    let Some(dns) = &api.dns else {
        return disabled();
    };
    dns.flush_cache();
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /cache/fakeip/flush`: 400 when the DNS server is not in fake-ip mode.
pub(super) async fn flush_fakeip(State(api): State<Api>) -> Response {
    let Some(dns) = &api.dns else {
        return disabled();
    };
    if dns.flush_fakeip() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(
            StatusCode::BAD_REQUEST,
            "fake-ip is not enabled (dns.enhanced-mode)",
        )
    }
}
