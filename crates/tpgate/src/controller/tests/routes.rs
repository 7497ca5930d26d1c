//! The other request/response routes against mihomo's shapes: `/configs` and the 501s,
//! `/providers`, `/rules`, `/dns` and the cache flushes, `/ui/`, the unix socket.

use std::net::SocketAddr;

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UdpSocket;
use tpgate_core::rules::Mode;

use super::{config, start, start_with, SAMPLE};

#[tokio::test]
async fn configs_mode_and_log_level_change_live_the_rest_is_reported() {
    let s = start(SAMPLE).await;
    let c = s.get_json("/configs").await;
    assert_eq!(c["mode"], "rule");
    assert_eq!(c["tproxy-port"], 7893);
    assert_eq!(
        (c["port"].as_u64(), c["mixed-port"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(c["allow-lan"], false);
    assert_eq!(c["tun"]["enable"], false);
    assert!(c["log-level"].is_string() && c["ipv6"].is_boolean() && c["sniffing"].is_boolean());
    let s = &s;
    let patch =
        |body: &'static str| async move { s.call("PATCH", "/configs", &[], Some(body)).await };
    assert_eq!(patch(r#"{"mode":"Global"}"#).await.status, 204);
    assert_eq!(s.shared.engine.mode(), Mode::Global);
    assert_eq!(s.get_json("/configs").await["mode"], "global");
    assert_eq!(
        patch(r#"{"log-level":"debug","mode":"direct"}"#)
            .await
            .status,
        204
    );
    assert_eq!(s.get_json("/configs").await["log-level"], "debug");
    assert_eq!(s.shared.engine.mode(), Mode::Direct);
    assert_eq!(patch(r#"{"mode":"fast"}"#).await.status, 400);
    assert_eq!(patch(r#"{"log-level":"loud"}"#).await.status, 400);
    assert_eq!(patch("[]").await.status, 400);
    let r = patch(r#"{"allow-lan":true,"mode":"rule"}"#).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"].as_str().unwrap().contains("allow-lan"),
        "{r:?}"
    );
    assert_eq!(s.shared.engine.mode(), Mode::Direct, "all or nothing");
    assert_eq!(
        patch(r#"{"allow-lan":false,"tun":{"enable":false},"x-unknown":1}"#)
            .await
            .status,
        204
    );
    assert_eq!(
        patch(r#"{"log-level":"info","mode":"rule"}"#).await.status,
        204
    );
    for (method, path) in [
        ("PUT", "/configs?reload=true"),
        ("POST", "/restart"),
        ("POST", "/upgrade"),
        ("POST", "/upgrade/ui"),
    ] {
        let r = s
            .call(method, path, &[], Some(r#"{"path":"","payload":""}"#))
            .await;
        assert_eq!(r.status, 501, "{method} {path}");
        assert!(
            r.json()["message"].as_str().unwrap().contains("tpgate"),
            "{r:?}"
        );
    }
    // No `geox-url` in this config: nothing to download, and it says what to set.
    let r = s.call("POST", "/configs/geo", &[], None).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"].as_str().unwrap().contains("geox-url"),
        "{r:?}"
    );
}

#[tokio::test]
async fn providers_and_rules() {
    let s = start(SAMPLE).await;
    let p = s.get_json("/providers/proxies").await;
    let d = &p["providers"]["default"];
    assert_eq!(
        (d["type"].as_str(), d["vehicleType"].as_str()),
        (Some("Proxy"), Some("Compatible"))
    );
    let names: Vec<&str> = d["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["DIRECT", "REJECT", "a", "b", "pick", "auto", "safe", "spread", "chain"]
    );
    assert_eq!(
        s.get_json("/providers/proxies/default").await["name"],
        "default"
    );
    assert_eq!(s.get("/providers/proxies/other").await.status, 404);
    assert_eq!(
        s.call("PUT", "/providers/proxies/default", &[], None)
            .await
            .status,
        204
    );
    assert_eq!(
        s.get_json("/providers/proxies/default/a").await["name"],
        "a"
    );
    assert_eq!(s.get("/providers/proxies/default/GLOBAL").await.status, 404);

    let r = s.get_json("/providers/rules").await;
    let ads = &r["providers"]["ads"];
    assert_eq!(ads["behavior"], "Domain");
    assert_eq!(
        (ads["ruleCount"].as_u64(), ads["vehicleType"].as_str()),
        (Some(2), Some("Inline"))
    );
    assert_eq!(
        (ads["type"].as_str(), ads["format"].as_str()),
        (Some("Rule"), Some("YamlRule"))
    );
    assert_eq!(
        s.call("PUT", "/providers/rules/ads", &[], None)
            .await
            .status,
        204
    );
    assert_eq!(
        s.call("PUT", "/providers/rules/nosuch", &[], None)
            .await
            .status,
        404
    );

    let rules = s.get_json("/rules").await;
    let rules = rules["rules"].as_array().unwrap();
    let row = |i: usize| {
        let r = &rules[i];
        (
            r["index"].as_u64().unwrap(),
            r["type"].as_str().unwrap().to_owned(),
            r["payload"].as_str().unwrap().to_owned(),
            r["proxy"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(row(0), (0, "RuleSet".into(), "ads".into(), "REJECT".into()));
    assert_eq!(
        row(1),
        (
            1,
            "DomainSuffix".into(),
            "example.com".into(),
            "pick".into()
        )
    );
    assert_eq!(
        row(2),
        (2, "IPCIDR".into(), "192.0.2.0/24".into(), "DIRECT".into())
    );
    assert_eq!(row(3), (3, "Match".into(), String::new(), "auto".into()));
    assert_eq!(rules[0]["size"], -1);
    assert_eq!(rules[1]["extra"]["disabled"], false);
    let r = s
        .call("PATCH", "/rules/disable", &[], Some(r#"{"1": true}"#))
        .await;
    assert_eq!(r.status, 204);
    assert!(s.shared.engine.is_disabled(1));
    assert_eq!(
        s.get_json("/rules").await["rules"][1]["extra"]["disabled"],
        true
    );
    assert_eq!(
        s.call("PATCH", "/rules/disable", &[], Some(r#"{"9": true}"#))
            .await
            .status,
        400
    );
    assert_eq!(
        s.call("PATCH", "/rules/disable", &[], Some(r#"{"x": true}"#))
            .await
            .status,
        400
    );
    assert_eq!(
        s.call("PATCH", "/rules/disable", &[], Some(r#"{"1": false}"#))
            .await
            .status,
        204
    );
    assert!(!s.shared.engine.is_disabled(1));
}

/// An upstream answering every A query with 203.0.113.5.
async fn dns_upstream() -> SocketAddr {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_recursion_available(true);
            r.add_queries(q.queries().iter().cloned());
            if let Some(first) = q
                .queries()
                .first()
                .filter(|x| x.query_type() == RecordType::A)
            {
                r.add_answer(Record::from_rdata(
                    first.name().clone(),
                    60,
                    RData::A(A([203, 0, 113, 5].into())),
                ));
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

#[tokio::test]
async fn dns_query_and_flushes() {
    let s = start(SAMPLE).await;
    let r = s.get("/dns/query?name=example.com").await;
    assert_eq!(
        (r.status, r.json()),
        (500, json!({"message": "DNS section is disabled"}))
    );
    let up = dns_upstream().await;
    let s = start(&format!(
        "dns: {{enable: true, enhanced-mode: fake-ip, nameserver: ['udp://{up}']}}\n"
    ))
    .await;
    let v = s.get_json("/dns/query?name=www.example.com&type=A").await;
    assert_eq!(v["Status"], 0);
    assert_eq!(
        v["Question"][0],
        json!({"Name": "www.example.com.", "Qtype": 1, "Qclass": 1})
    );
    assert_eq!(v["Answer"][0]["data"], "203.0.113.5");
    assert_eq!(
        (
            v["Answer"][0]["type"].as_u64(),
            v["Answer"][0]["TTL"].as_u64()
        ),
        (Some(1), Some(60))
    );
    assert_eq!(v["RA"], true);
    assert!(v.get("Authority").is_none());
    assert_eq!(
        s.get("/dns/query?name=x.example&type=BOGUS").await.status,
        400
    );
    assert_eq!(
        s.call("POST", "/cache/dns/flush", &[], None).await.status,
        204
    );
    assert_eq!(
        s.call("POST", "/cache/fakeip/flush", &[], None)
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn dashboard_files_and_the_unix_socket() {
    let dir = std::env::temp_dir().join(format!("tpgate-ui-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<html>dash</html>").unwrap();
    std::fs::write(dir.join("assets/app.js"), "let x = 1;").unwrap();
    let sock = dir.join("api.sock");
    let c = config("secret: s3cret\n");
    let s = start_with(c, Some(dir.clone()), Some(&sock)).await;
    let r = s.get("/ui").await;
    assert_eq!((r.status, r.header("location")), (307, Some("/ui/")));
    let r = s.get("/ui/").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"<html>dash</html>"[..]));
    let r = s.get("/ui/assets/app.js").await;
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        s.get("/ui/proxies").await.body,
        &b"<html>dash</html>"[..],
        "a dashboard route"
    );
    assert_eq!(s.get("/ui/assets/missing.js").await.status, 404);
    assert_eq!(s.get("/ui/%2e%2e/api.sock").await.status, 404);
    assert_eq!(
        s.get("/version").await.status,
        401,
        "the API still needs the secret"
    );

    // The unix socket serves without the secret.
    let mut u = tokio::net::UnixStream::connect(&sock).await.unwrap();
    u.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    u.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"meta\":true"), "{text}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn proxy_providers_are_listed_updated_and_checked() {
    let dir = std::env::temp_dir().join(format!("tpgate-ctl-providers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sub.yaml");
    let socks =
        |name: &str| format!("{{name: {name}, type: socks5, server: 192.0.2.9, port: 1080}}");
    std::fs::write(&file, format!("proxies:\n  - {}\n", socks("F1"))).unwrap();
    let yaml = format!(
        "proxy-providers:\n  inl:\n    type: inline\n    payload:\n      - {}\n  f:\n    type: file\n    path: {}\n    health-check: {{enable: true, url: 'http://192.0.2.1/gen', interval: 300}}\nproxy-groups:\n  - {{name: G, type: select, use: [inl, f]}}\nrules:\n  - MATCH,G\n",
        socks("I1"),
        file.display()
    );
    let s = start(&yaml).await;
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["proxies"]
            .as_array()
            .unwrap_or_else(|| panic!("proxies in {v}"))
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = s.get_json("/providers/proxies").await;
    let inl = &all["providers"]["inl"];
    assert_eq!(
        (inl["type"].as_str(), inl["vehicleType"].as_str()),
        (Some("Proxy"), Some("Inline"))
    );
    assert_eq!(names(inl), ["I1"]);
    assert!(
        inl["updatedAt"].as_str().is_some_and(|t| t.contains('T')),
        "{inl}"
    );
    let f = &all["providers"]["f"];
    assert_eq!(f["vehicleType"], "File");
    assert_eq!(f["testUrl"], "http://192.0.2.1/gen");
    assert!(
        all["providers"]["default"].is_object(),
        "the config's own proxies stay"
    );

    // The file changes; PUT reads it again and the group follows.
    std::fs::write(
        &file,
        format!("proxies:\n  - {}\n  - {}\n", socks("F2"), socks("F3")),
    )
    .unwrap();
    assert_eq!(
        s.call("PUT", "/providers/proxies/f", &[], None)
            .await
            .status,
        204
    );
    assert_eq!(
        names(&s.get_json("/providers/proxies/f").await),
        ["F2", "F3"]
    );
    let g = s.get_json("/proxies/G").await;
    assert!(
        g["all"].as_array().unwrap().iter().any(|n| n == "F3"),
        "the group has the provider's new proxy: {g}"
    );
    // A broken file is refused and the provider keeps what it had.
    std::fs::write(&file, "proxies: [{name: broken").unwrap();
    assert_eq!(
        s.call("PUT", "/providers/proxies/f", &[], None)
            .await
            .status,
        503
    );
    assert_eq!(
        names(&s.get_json("/providers/proxies/f").await),
        ["F2", "F3"]
    );

    assert_eq!(s.get_json("/providers/proxies/inl/I1").await["name"], "I1");
    assert_eq!(s.get("/providers/proxies/inl/F2").await.status, 404);
    assert_eq!(s.get("/providers/proxies/nope").await.status, 404);
    assert_eq!(
        s.call("PUT", "/providers/proxies/nope", &[], None)
            .await
            .status,
        404
    );
    let _ = std::fs::remove_dir_all(&dir);
}
