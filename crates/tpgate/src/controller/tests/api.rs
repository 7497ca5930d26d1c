//! The request/response routes against mihomo's shapes: CORS and tokens, `/proxies` and
//! `/group` with selections and delay tests.

use std::net::SocketAddr;

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::{config, start, start_with, SAMPLE};

/// An HTTP server answering 204 to anything, for delay tests.
async fn http_204() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn cors_preflight_is_answered_before_the_secret_and_tokens_are_url_decoded() {
    let s = start("secret: 'a+b/c='\n").await;
    let preflight = [
        ("origin", "http://192.0.2.7:8080"),
        ("access-control-request-method", "PUT"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
        ("access-control-request-private-network", "true"),
    ];
    let r = s.call("OPTIONS", "/proxies/pick", &preflight, None).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("300"));
    assert_eq!(
        r.header("access-control-allow-private-network"),
        Some("true")
    );

    let origin = [("origin", "http://192.0.2.7:8080")];
    let r = s.call("GET", "/version", &origin, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"message": "Unauthorized"}));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("*"),
        "the browser may read the 401"
    );
    for ok in ["/version?token=a%2Bb%2Fc%3D", "/version?token=a+b/c="] {
        let r = s.call("GET", ok, &origin, None).await;
        assert_eq!(r.status, 200, "{ok}: {r:?}");
        assert_eq!(r.json()["meta"], true);
    }
    for bad in [
        "/version?token=a+b%2Fc",
        "/version?token=",
        "/version?token=a%2Bb%2Fc%3",
    ] {
        assert_eq!(s.get(bad).await.status, 401, "{bad}");
    }
    let bearer = [("authorization", "Bearer a+b/c=")];
    assert_eq!(
        s.call("GET", "/", &bearer, None).await.json(),
        json!({"hello": "mihomo"})
    );
    let wrong = [("authorization", "Bearer a+b/c")];
    assert_eq!(s.call("GET", "/", &wrong, None).await.status, 401);

    // Listed origins only; an unlisted one gets no CORS headers, a preflight still no 401.
    let c = config(
        "secret: x\nexternal-controller-cors: {allow-origins: ['http://192.0.2.7:8080'], \
         allow-private-network: false}\n",
    );
    let s = start_with(c, None, None).await;
    let r = s.call("OPTIONS", "/configs", &preflight, None).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://192.0.2.7:8080")
    );
    assert_eq!(r.header("access-control-allow-private-network"), None);
    let other = [
        ("origin", "http://203.0.113.9"),
        ("access-control-request-method", "GET"),
    ];
    let r = s.call("OPTIONS", "/configs", &other, None).await;
    assert_eq!(
        (r.status, r.header("access-control-allow-origin")),
        (204, None)
    );
}

#[tokio::test]
async fn proxies_in_config_order_with_global_history_and_fixed_members() {
    let s = start(SAMPLE).await;
    let v = s.get_json("/proxies").await;
    let names: Vec<&str> = v["proxies"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let order = [
        "DIRECT",
        "REJECT",
        "REJECT-DROP",
        "a",
        "b",
        "pick",
        "auto",
        "safe",
        "spread",
        "chain",
        "GLOBAL",
    ];
    assert_eq!(names, order);
    let p = &v["proxies"];
    let global = &p["GLOBAL"];
    assert_eq!(global["type"], "Selector");
    assert_eq!(
        global["all"],
        json!(["DIRECT", "REJECT", "a", "b", "pick", "auto", "safe", "spread", "chain"])
    );
    assert_eq!(
        global["now"], "a",
        "global mode kept its old default: the first proxy"
    );
    for name in order {
        let x = &p[name];
        assert_eq!(x["name"], name);
        assert!(x["history"].is_array() && x["alive"].is_boolean(), "{x}");
        assert!(x["udp"].is_boolean() && x["extra"].is_object(), "{x}");
    }
    assert_eq!(
        (p["a"]["type"].as_str(), p["a"]["udp"].as_bool()),
        (Some("Socks5"), Some(true))
    );
    assert_eq!(p["b"]["udp"], false);
    assert_eq!(p["pick"]["now"], "b");
    assert_eq!(p["pick"]["udp"], false, "through b");
    assert_eq!(p["auto"]["type"], "URLTest");
    assert_eq!(p["auto"]["testUrl"], "http://127.0.0.1:9/");
    assert_eq!(p["auto"]["fixed"], "");
    assert_eq!(p["spread"]["type"], "LoadBalance");
    assert!(p["spread"].get("now").is_none());
    assert_eq!(
        (p["chain"]["type"].as_str(), p["chain"]["all"].clone()),
        (Some("Relay"), json!(["a", "b"]))
    );
    assert_eq!(p["DIRECT"]["type"], "Direct");
    assert_eq!(p["pick"]["hidden"], false);
    assert_eq!(p["pick"]["icon"], "https://icons.example/p.svg");
    assert_eq!(p["auto"]["icon"], "");

    // Groups alone, in order; a proxy is no group.
    let g = s.get_json("/group").await;
    let groups: Vec<&str> = g["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        ["pick", "auto", "safe", "spread", "chain", "GLOBAL"]
    );
    assert_eq!(s.get_json("/group/pick").await["now"], "b");
    assert_eq!(s.get("/group/a").await.status, 404);
    let r = s.get("/proxies/nosuch").await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"message": "Resource not found"}))
    );
    assert_eq!(
        s.get_json("/proxies/pi%63k").await["name"],
        "pick",
        "names are URL-decoded"
    );

    // Select, fix, unfix.
    let s = &s;
    let put = |path: &'static str, body: &'static str| async move {
        s.call("PUT", path, &[], Some(body)).await
    };
    assert_eq!(put("/proxies/pick", r#"{"name":"a"}"#).await.status, 204);
    assert_eq!(s.get_json("/proxies/pick").await["now"], "a");
    assert_eq!(
        put("/proxies/GLOBAL", r#"{"name":"pick"}"#).await.status,
        204
    );
    let global_id = s.shared.outbounds.builtin_global().unwrap();
    let dst = tpgate_core::net::Destination::Addr("203.0.113.2:443".parse().unwrap());
    assert_eq!(
        s.shared.outbounds.pick(global_id, &dst).label,
        "GLOBAL/pick/a"
    );
    assert_eq!(put("/proxies/auto", r#"{"name":"b"}"#).await.status, 204);
    assert_eq!(s.get_json("/proxies/auto").await["fixed"], "b");
    assert_eq!(s.get_json("/proxies/auto").await["now"], "b");
    assert_eq!(
        s.call("DELETE", "/proxies/auto", &[], None).await.status,
        204
    );
    assert_eq!(s.get_json("/proxies/auto").await["fixed"], "");
    let r = s.call("DELETE", "/proxies/pick", &[], None).await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"message": "Body invalid"}))
    );
    let r = put("/proxies/chain", r#"{"name":"a"}"#).await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"message": "Must be a Selector"}))
    );
    assert_eq!(put("/proxies/pick", "not json").await.status, 400);
    let r = put("/proxies/pick", r#"{"name":"nobody"}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("Selector update error"));
    assert_eq!(put("/proxies/nosuch", r#"{"name":"a"}"#).await.status, 404);
}

#[tokio::test]
async fn delay_tests_are_recorded_in_the_history() {
    let s = start(SAMPLE).await;
    let url = format!("http://{}/generate_204", http_204().await);
    let enc = url.replace(':', "%3A").replace('/', "%2F");
    let r = s
        .get(&format!("/proxies/DIRECT/delay?url={enc}&timeout=2000"))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let ms = r.json()["delay"].as_u64().unwrap();
    assert!(ms >= 1);
    let d = s.get_json("/proxies/DIRECT").await;
    assert_eq!(d["history"].as_array().unwrap().len(), 1);
    assert_eq!(d["history"][0]["delay"], ms);
    assert!(d["history"][0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(d["alive"], true);

    // a's server refuses: 503, recorded as 0, not alive.
    let r = s
        .get(&format!("/proxies/a/delay?url={enc}&timeout=2000"))
        .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["message"], "An error occurred in the delay test");
    let a = s.get_json("/proxies/a").await;
    assert_eq!(
        (a["history"][0]["delay"].as_u64(), a["alive"].as_bool()),
        (Some(0), Some(false))
    );
    assert_eq!(
        s.get(&format!("/proxies/a/delay?url={enc}&timeout=x"))
            .await
            .status,
        400
    );
    assert_eq!(
        s.get("/proxies/a/delay?url=ftp%3A%2F%2Fx&timeout=100")
            .await
            .status,
        400
    );
    assert_eq!(
        s.get(&format!("/proxies/zz/delay?url={enc}")).await.status,
        404
    );

    // A whole group: only the members that answered.
    let r = s
        .get(&format!("/group/pick/delay?url={enc}&timeout=2000"))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["DIRECT"],
        "{v}"
    );
    assert_eq!(s.get_json("/proxies/b").await["alive"], false);
    let r = s
        .get(&format!("/group/chain/delay?url={enc}&timeout=2000"))
        .await;
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (504, Some("get delay: all proxies timeout"))
    );
    // The provider's view of a proxy and its health check.
    let r = s
        .get(&format!(
            "/providers/proxies/default/DIRECT/healthcheck?url={enc}&timeout=2000"
        ))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        s.get_json("/proxies/DIRECT").await["history"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}
