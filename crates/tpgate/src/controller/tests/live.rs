//! The live routes: `/traffic`, `/memory`, `/logs` and `/connections` over WebSockets and
//! chunked responses, `/metrics` parsed as Prometheus text and checked against the flows
//! the test made, and streams ending at shutdown.

use std::time::Duration;

use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tpgate_core::config::LogLevel;
use tpgate_core::net::{Network, Origin};

use super::{start, Server, SAMPLE};
use crate::logs;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws(s: &Server, path: &str) -> Ws {
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let url = format!("ws://{}{path}", s.addr);
    let (ws, resp) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("websocket");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next text message as JSON.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON");
        }
    }
}

#[tokio::test]
async fn traffic_counts_the_bytes_of_each_second_over_a_websocket() {
    let s = start("secret: 'a+b/c='\n").await;
    let mut w = ws(&s, "/traffic?token=a%2Bb%2Fc%3D").await;
    let flow = s.flow(Network::Tcp, Origin::Forwarded, "DIRECT");
    flow.add_up(1500);
    flow.add_down(700);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let v = next(&mut w).await;
        seen.push(v.clone());
        if v["up"] == 1500 {
            assert_eq!(v["down"], 700);
            let quiet = next(&mut w).await;
            assert_eq!(
                (quiet["up"].as_u64(), quiet["down"].as_u64()),
                (Some(0), Some(0))
            );
            return;
        }
    }
    panic!("no second with the flow's bytes: {seen:?}");
}

#[tokio::test]
async fn websocket_without_the_token_is_refused() {
    let s = start("secret: x\n").await;
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let url = format!("ws://{}/traffic", s.addr);
    let err = tokio_tungstenite::client_async(url, tcp).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 401),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn connections_push_the_same_snapshot_as_the_get() {
    let s = start(SAMPLE).await;
    let flow = s.flow(Network::Udp, Origin::Local, "pick/a");
    flow.add_up(10);
    let got = s.get_json("/connections").await;
    let c = &got["connections"][0];
    assert_eq!(c["id"], flow.id.to_string());
    assert_eq!(c["metadata"]["network"], "udp");
    assert_eq!(c["chains"], serde_json::json!(["a", "pick"]));
    assert_eq!(
        (c["rule"].as_str(), c["rulePayload"].as_str()),
        (Some("DomainSuffix"), Some("example.com"))
    );
    assert_eq!(got["uploadTotal"], 10);
    let mut w = ws(&s, "/connections?interval=200").await;
    let first = next(&mut w).await;
    assert_eq!(first["connections"][0]["id"], flow.id.to_string());
    assert_eq!(first["connections"][0]["upload"], 10);
    flow.add_up(5);
    let later = next(&mut w).await;
    assert_eq!(later["connections"][0]["upload"], 15);
    assert_eq!(later["uploadTotal"], 15);
    let r = s
        .call("DELETE", &format!("/connections/{}", flow.id), &[], None)
        .await;
    assert_eq!(r.status, 204);
    assert!(flow.is_closed());
    assert_eq!(
        s.call("DELETE", "/connections/999", &[], None).await.status,
        404
    );
    drop(flow);
    let empty = next(&mut w).await;
    assert_eq!(empty["connections"], serde_json::json!([]));
    assert_eq!(
        s.get("/connections?interval=x").await.status,
        200,
        "plain GET ignores it"
    );
}

#[tokio::test]
async fn memory_and_traffic_stream_as_chunked_json_lines_until_shutdown() {
    let s = start("").await;
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/memory")
        .header("host", "x")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut body = resp.into_body();
    let mut lines = Vec::new();
    while lines.len() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("in time")
            .expect("a frame")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            let v: Value = serde_json::from_slice(data.trim_ascii()).unwrap();
            lines.push(v);
        }
    }
    assert_eq!(lines[0], serde_json::json!({"inuse": 0, "oslimit": 0}));
    assert!(lines[1]["inuse"].as_u64().unwrap() > 0);
    // Shutdown ends the stream (the server's graceful stop does not wait for dashboards).
    let mut s = s;
    s.trigger.fire();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(f) = body.frame().await {
            if f.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ended at shutdown");
    tokio::time::timeout(Duration::from_secs(5), &mut s.done)
        .await
        .expect("serve returned")
        .unwrap();
}

#[tokio::test]
async fn logs_are_filtered_by_level_and_formatted_as_mihomo_does() {
    let s = start("").await;
    let mut plain = ws(&s, "/logs?level=warning").await;
    let mut structured = ws(&s, "/logs?level=debug&format=structured").await;
    let tag = format!("tpgate-test-{}", s.addr.port());
    for (level, text) in [
        (LogLevel::Info, "info line"),
        (LogLevel::Warning, "warning line"),
        (LogLevel::Debug, "debug line"),
    ] {
        logs::publish(logs::Line {
            level,
            payload: format!("{tag} {text}"),
        });
    }
    let mine = |v: &Value, key: &str| v[key].as_str().is_some_and(|p| p.starts_with(&tag));
    let mut got = next(&mut plain).await;
    while !mine(&got, "payload") {
        got = next(&mut plain).await;
    }
    assert_eq!(got["type"], "warning");
    assert_eq!(got["payload"], format!("{tag} warning line"));
    let mut levels = Vec::new();
    while levels.len() < 3 {
        let v = next(&mut structured).await;
        if mine(&v, "message") {
            assert!(v["time"].as_str().unwrap().len() == 8 && v["fields"].is_array());
            levels.push(v["level"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(levels, ["info", "warn", "debug"]);
    assert_eq!(s.get("/logs?level=loud").await.status, 400);
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_the_flows() {
    let s = start(&format!("secret: x\n{SAMPLE}")).await;
    let a = s.flow(Network::Tcp, Origin::Forwarded, "pick/a");
    a.add_up(100);
    a.add_down(2000);
    let b = s.flow(Network::Tcp, Origin::Forwarded, "pick/a");
    b.add_up(20);
    drop(b);
    let c = s.flow(Network::Udp, Origin::Local, "DIRECT");
    c.add_down(64);
    s.shared.outbounds.history.record("a", Some(42));
    s.shared.outbounds.history.record("b", None);
    let provider = format!("metrics-test-{}", std::process::id());
    crate::providers::record_update("proxy", &provider, true);
    crate::providers::record_update("proxy", &provider, false);
    assert_eq!(s.get("/metrics").await.status, 401);
    let r = s
        .call("GET", "/metrics", &[("authorization", "Bearer x")], None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {labels:?} in\n{text}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{other:?}"),
        }
    };
    let fwd = [
        ("network", "tcp"),
        ("origin", "forwarded"),
        ("action", "PROXY"),
    ];
    assert_eq!(value("tpgate_flows_total", &fwd), 2.0);
    assert_eq!(value("tpgate_flows_active", &fwd), 1.0);
    // The parser splits label values at commas; the rule label is checked as written.
    assert!(
        text.lines().any(|l| l
            == r#"tpgate_flows_total{network="udp",origin="local",action="DIRECT",rule="DOMAIN-SUFFIX,example.com,DIRECT"} 1"#),
        "{text}"
    );
    assert_eq!(
        value(
            "tpgate_flows_total",
            &[("network", "udp"), ("origin", "local")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "tpgate_route_bytes_total",
            &[("route", "pick/a"), ("direction", "up")]
        ),
        120.0
    );
    assert_eq!(
        value(
            "tpgate_route_bytes_total",
            &[("route", "pick/a"), ("direction", "down")]
        ),
        2000.0
    );
    assert_eq!(
        value(
            "tpgate_route_bytes_total",
            &[("route", "DIRECT"), ("direction", "down")]
        ),
        64.0
    );
    assert_eq!(
        value("tpgate_proxy_delay_milliseconds", &[("proxy", "a")]),
        42.0
    );
    assert_eq!(value("tpgate_proxy_alive", &[("proxy", "b")]), 0.0);
    for result in ["ok", "failed"] {
        let labels = [
            ("kind", "proxy"),
            ("provider", provider.as_str()),
            ("result", result),
        ];
        assert_eq!(value("tpgate_provider_updates_total", &labels), 1.0);
    }
    assert!(
        value(
            "tpgate_provider_update_age_seconds",
            &[("provider", provider.as_str())]
        ) < 60.0
    );
    assert!(value("tpgate_process_resident_memory_bytes", &[]) > 0.0);
    assert!(value("tpgate_process_open_fds", &[]) > 0.0);
    drop((a, c));
}
