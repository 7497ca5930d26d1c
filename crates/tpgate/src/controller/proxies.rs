//! `/proxies` and `/group`: every proxy and group in config order (DIRECT, REJECT,
//! REJECT-DROP, the proxies, the groups, then `GLOBAL`), each as mihomo describes it, with
//! its delay `history` and `alive`; choosing a select group's member (or fixing a url-test or
//! fallback group's, `DELETE` unfixes it) and delay tests of one proxy or of a whole group.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tpgate_core::config::{GroupKind, Member};
use tracing::info;

use super::connections::rfc3339;
use super::{bad_request, error, json_body, not_found, Api};
use crate::outbound::{self, Group, Node, Outbounds};

/// The built-in outbounds every config has, as mihomo lists them.
const BUILTINS: [(&str, &str, Member); 3] = [
    ("DIRECT", "Direct", Member::Direct),
    ("REJECT", "Reject", Member::Reject),
    ("REJECT-DROP", "RejectDrop", Member::Reject),
];

/// mihomo's type name of a group.
fn group_type(g: &Group) -> &'static str {
    match g.def.kind {
        GroupKind::Select => "Selector",
        GroupKind::UrlTest { .. } => "URLTest",
        GroupKind::Fallback => "Fallback",
        GroupKind::LoadBalance(_) => "LoadBalance",
        GroupKind::Relay => "Relay",
    }
}

/// Whether flows through `m` can carry UDP now (a group: through the member it uses).
fn udp(o: &Outbounds, m: Member, depth: usize) -> bool {
    match m {
        Member::Direct | Member::Reject => true,
        Member::Target(id) => match o.node(id) {
            Some(Node::Upstream(u)) => u.udp,
            Some(Node::Group(g)) if depth < 16 => {
                if g.is_relay() {
                    g.def.members.iter().all(|&m| udp(o, m, depth + 1))
                } else {
                    g.def
                        .members
                        .get(g.current())
                        .is_some_and(|&m| udp(o, m, depth + 1))
                }
            }
            _ => false,
        },
    }
}

/// The fields every proxy and group has.
fn common(api: &Api, name: &str, kind: &str, udp: bool) -> Map<String, Value> {
    let shared = api.shared();
    let o = &shared.outbounds;
    let history: Vec<Value> = o
        .history
        .of(name)
        .iter()
        .map(|d| json!({"time": rfc3339(d.time), "delay": d.ms}))
        .collect();
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("type".into(), json!(kind));
    m.insert("id".into(), json!(""));
    m.insert("history".into(), json!(history));
    m.insert("extra".into(), json!({}));
    m.insert("alive".into(), json!(o.history.alive(name)));
    m.insert("udp".into(), json!(udp));
    for key in ["uot", "xudp", "tfo", "mptcp", "smux"] {
        m.insert(key.into(), json!(false));
    }
    m.insert("interface".into(), json!(""));
    m.insert("dialer-proxy".into(), json!(""));
    m.insert("routing-mark".into(), json!(o.ctx.mark));
    m
}

/// One proxy or group as mihomo's `GET /proxies/{name}` shows it.
pub(super) fn describe(api: &Api, name: &str) -> Option<Value> {
    let shared = api.shared();
    let o = &shared.outbounds;
    if let Some(&(n, kind, m)) = BUILTINS.iter().find(|(n, ..)| *n == name) {
        return Some(Value::Object(common(api, n, kind, udp(o, m, 0))));
    }
    let id = o.id_of(name)?;
    let node = o.node(id)?;
    let udp = udp(o, Member::Target(id), 0);
    let mut m = match &node {
        Node::Upstream(u) => {
            let mut m = common(api, &u.name, u.type_name, udp);
            if let Some(d) = u.dialer {
                m.insert("dialer-proxy".into(), json!(o.member_name(d)));
            }
            m
        }
        Node::Group(g) => {
            let mut m = common(api, &g.def.name, group_type(g), udp);
            let members = g.members();
            let all: Vec<String> = members.list.iter().map(|&x| o.member_name(x)).collect();
            m.insert("all".into(), json!(all));
            if !g.is_relay() && !matches!(g.def.kind, GroupKind::LoadBalance(_)) {
                let now = members
                    .list
                    .get(g.current())
                    .map_or(String::new(), |&x| o.member_name(x));
                m.insert("now".into(), json!(now));
            }
            if matches!(
                g.def.kind,
                GroupKind::UrlTest { .. } | GroupKind::Fallback | GroupKind::LoadBalance(_)
            ) {
                let url = g.def.health.as_ref().map_or("", |h| h.url.as_str());
                m.insert("testUrl".into(), json!(url));
                m.insert("expectedStatus".into(), json!("*"));
            }
            if matches!(g.def.kind, GroupKind::UrlTest { .. } | GroupKind::Fallback) {
                let fixed = g
                    .fixed()
                    .and_then(|i| members.list.get(i))
                    .map_or(String::new(), |&x| o.member_name(x));
                m.insert("fixed".into(), json!(fixed));
            }
            m.insert("hidden".into(), json!(g.def.hidden));
            m.insert("icon".into(), json!(g.def.icon.clone().unwrap_or_default()));
            m
        }
    };
    m.insert("name".into(), json!(node.name()));
    Some(Value::Object(m))
}

/// Every name `/proxies` lists, in order.
pub(super) fn names(o: &Outbounds) -> Vec<String> {
    BUILTINS
        .iter()
        .map(|(n, ..)| (*n).to_owned())
        .chain(o.nodes().iter().map(|n| n.name().to_owned()))
        .collect()
}

/// `GET /proxies`: an object keyed by name, in config order.
pub(super) async fn list(State(api): State<Api>) -> Json<Value> {
    let mut all = Map::new();
    for name in names(&api.shared().outbounds) {
        if let Some(v) = describe(&api, &name) {
            all.insert(name, v);
        }
    }
    Json(json!({ "proxies": all }))
}

/// `GET /proxies/{name}`.
pub(super) async fn one(State(api): State<Api>, Path(name): Path<String>) -> Response {
    describe(&api, &name).map_or_else(not_found, |v| Json(v).into_response())
}

#[derive(Deserialize)]
struct SelectBody {
    name: String,
}

/// `PUT /proxies/{group}` `{"name": member}`.
pub(super) async fn select(
    State(api): State<Api>,
    Path(group): Path<String>,
    body: Bytes,
) -> Response {
    let shared = api.shared();
    let o = &shared.outbounds;
    if describe(&api, &group).is_none() {
        return not_found();
    }
    let Some(body) = json_body::<SelectBody>(&body) else {
        return bad_request();
    };
    match o.find(&group) {
        Some(Node::Group(g)) if g.is_selectable() => {}
        _ => return error(StatusCode::BAD_REQUEST, "Must be a Selector"),
    }
    match o.select(&group, &body.name) {
        Ok(()) => {
            info!("group {group}: selected {}", body.name);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            &format!("Selector update error: {e}"),
        ),
    }
}

/// `DELETE /proxies/{group}`: a url-test or fallback group chooses by its checks again.
pub(super) async fn unfix(State(api): State<Api>, Path(group): Path<String>) -> Response {
    if describe(&api, &group).is_none() {
        return not_found();
    }
    if api.shared().outbounds.unfix(&group) {
        info!("group {group}: fixed member cleared");
        StatusCode::NO_CONTENT.into_response()
    } else {
        bad_request()
    }
}

#[derive(Deserialize)]
pub(super) struct DelayQuery {
    url: Option<String>,
    timeout: Option<String>,
}

/// Why a delay test's query was refused.
pub(super) enum BadQuery {
    Timeout,
    Url,
}

impl BadQuery {
    fn response(&self) -> Response {
        match self {
            Self::Timeout => bad_request(),
            Self::Url => error(StatusCode::BAD_REQUEST, "url must be http:// or https://"),
        }
    }
}

impl DelayQuery {
    /// The URL and timeout (5 s when not given).
    fn parse(&self) -> Result<(outbound::Url, Duration), BadQuery> {
        let timeout = match self.timeout.as_deref() {
            None | Some("") => 5000,
            Some(t) => t.parse::<u64>().map_err(|_| BadQuery::Timeout)?,
        };
        let url = self
            .url
            .as_deref()
            .filter(|u| !u.is_empty())
            .and_then(outbound::Url::parse)
            .ok_or(BadQuery::Url)?;
        Ok((url, Duration::from_millis(timeout.clamp(1, 60_000))))
    }
}

/// The member a name stands for.
fn member(o: &Outbounds, name: &str) -> Option<Member> {
    match (o.id_of(name), BUILTINS.iter().find(|(n, ..)| *n == name)) {
        (Some(id), _) => Some(Member::Target(id)),
        (None, Some(&(_, _, m))) => Some(m),
        (None, None) => None,
    }
}

/// Tests `name` and records the result in its history: `Ok(ms)`, or whether it timed out.
async fn test(
    o: &Outbounds,
    name: &str,
    m: Member,
    url: &outbound::Url,
    timeout: Duration,
) -> Result<u32, bool> {
    let start = Instant::now();
    let r = outbound::probe(o, m, url, timeout).await;
    o.history.record(name, r);
    r.ok_or_else(|| start.elapsed() >= timeout)
}

/// `GET /proxies/{name}/delay?url=&timeout=`.
pub(super) async fn delay(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(q): Query<DelayQuery>,
) -> Response {
    let shared = api.shared();
    let o = &shared.outbounds;
    let Some(m) = member(o, &name) else {
        return not_found();
    };
    let (url, timeout) = match q.parse() {
        Ok(x) => x,
        Err(e) => return e.response(),
    };
    match test(o, &name, m, &url, timeout).await {
        Ok(ms) => Json(json!({ "delay": ms })).into_response(),
        Err(true) => error(StatusCode::GATEWAY_TIMEOUT, "Timeout"),
        Err(false) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "An error occurred in the delay test",
        ),
    }
}

/// `GET /group`: the groups, in config order.
pub(super) async fn groups(State(api): State<Api>) -> Json<Value> {
    let shared = api.shared();
    let o = &shared.outbounds;
    let all: Vec<Value> = o
        .nodes()
        .iter()
        .filter(|n| matches!(n, Node::Group(_)))
        .filter_map(|n| describe(&api, n.name()))
        .collect();
    Json(json!({ "proxies": all }))
}

fn find_group(o: &Outbounds, name: &str) -> Option<std::sync::Arc<Group>> {
    match o.find(name) {
        Some(Node::Group(g)) => Some(g.clone()),
        _ => None,
    }
}

/// `GET /group/{name}`.
pub(super) async fn group(State(api): State<Api>, Path(name): Path<String>) -> Response {
    match find_group(&api.shared().outbounds, &name) {
        Some(_) => one(State(api), Path(name)).await,
        None => not_found(),
    }
}

/// `GET /group/{name}/delay?url=&timeout=`: tests every member at once (a url-test group
/// with its own URL, as mihomo does), records each result where the group and the
/// histories keep them, and answers `{member: delay}` for those that answered. A fixed
/// member is cleared first, as in mihomo.
pub(super) async fn group_delay(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(q): Query<DelayQuery>,
) -> Response {
    let shared = api.shared();
    let o = &shared.outbounds;
    let Some(g) = find_group(o, &name) else {
        return not_found();
    };
    let own = match g.def.kind {
        GroupKind::UrlTest { .. } => g.def.health.as_ref().map(|h| h.url.as_str()),
        _ => None,
    };
    let parsed = match own {
        Some(u) => DelayQuery {
            url: Some(u.to_owned()),
            timeout: q.timeout.clone(),
        }
        .parse(),
        None => q.parse(),
    };
    let (url, timeout) = match parsed {
        Ok(x) => x,
        Err(e) => return e.response(),
    };
    if !g.is_select() && g.is_selectable() {
        o.unfix(&name);
    }
    let members = g.members();
    let tests = members.list.iter().enumerate().map(|(i, &m)| {
        let (url, members) = (&url, &members);
        async move {
            let member = o.member_name(m);
            let r = test(o, &member, m, url, timeout).await;
            members.set_delay(i, r.unwrap_or(outbound::DEAD));
            (member, r.ok())
        }
    });
    let results = futures::future::join_all(tests).await;
    let mut delays = Map::new();
    for (member, ms) in results {
        if let Some(ms) = ms {
            delays.insert(member.to_owned(), json!(ms));
        }
    }
    if delays.is_empty() {
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            "get delay: all proxies timeout",
        );
    }
    Json(Value::Object(delays)).into_response()
}
