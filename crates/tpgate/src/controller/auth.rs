//! Who may call the API. CORS comes first and answers a browser's preflight itself (never
//! 401: a preflight carries no credentials), with mihomo's defaults: every origin unless
//! `external-controller-cors.allow-origins` lists some, methods GET POST PUT PATCH DELETE,
//! headers Content-Type and Authorization, `Access-Control-Allow-Private-Network` when
//! asked and allowed, max age 300. Then the secret: `Authorization: Bearer <secret>`, or
//! `?token=<secret>` (a browser's WebSocket cannot send headers), URL-decoded, compared in
//! constant time.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tpgate_core::config::Cors;

use super::{error, Api};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const HEADERS: [&str; 2] = ["content-type", "authorization"];

/// CORS in front of everything (authentication included).
pub(super) async fn cors(State(api): State<Api>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let allowed = origin
        .as_deref()
        .filter(|o| origin_allowed(&api.cors, o))
        .map(|o| allow_origin_value(&api.cors, o));
    if req.method() == Method::OPTIONS {
        return preflight(&api.cors, req.headers(), allowed.as_deref());
    }
    let mut resp = next.run(req).await;
    if let Some(value) = allowed.and_then(|v| HeaderValue::from_str(&v).ok()) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// Any OPTIONS request: 204, with the CORS answer when it is an allowed preflight.
fn preflight(cors: &Cors, req: &HeaderMap, allowed: Option<&str>) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    for v in [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ] {
        h.append(header::VARY, HeaderValue::from_static(v));
    }
    let method = req
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .map(str::to_ascii_uppercase);
    let (Some(origin), Some(method)) = (allowed, method) else {
        return resp;
    };
    if !METHODS.contains(&method.as_str()) {
        return resp;
    }
    let asked: Vec<String> = req
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if asked.iter().any(|a| !HEADERS.contains(&a.as_str())) {
        return resp;
    }
    let set = |h: &mut HeaderMap, name, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    set(h, header::ACCESS_CONTROL_ALLOW_METHODS, &method);
    if !asked.is_empty() {
        set(h, header::ACCESS_CONTROL_ALLOW_HEADERS, &asked.join(", "));
    }
    set(h, header::ACCESS_CONTROL_MAX_AGE, "300");
    let private = req
        .get("access-control-request-private-network")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if private && cors.allow_private_network {
        h.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    resp
}

/// `*`, an exact origin (case-insensitive, no trailing slash), or a pattern with one `*`
/// (`http://*.example.com`).
fn origin_allowed(cors: &Cors, origin: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    cors.allow_origins.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.split_once('*') {
            _ if pattern == "*" => true,
            Some((pre, post)) => {
                origin.len() >= pre.len() + post.len()
                    && origin.starts_with(pre)
                    && origin.ends_with(post)
            }
            None => pattern == origin,
        }
    })
}

/// `*` when every origin is allowed (as mihomo answers), else the origin itself.
fn allow_origin_value(cors: &Cors, origin: &str) -> String {
    if cors.allow_origins.iter().any(|p| p == "*") {
        "*".to_owned()
    } else {
        origin.to_owned()
    }
}

/// The secret, when one is set.
pub(super) async fn authenticate(State(api): State<Api>, req: Request, next: Next) -> Response {
    let Some(secret) = api.secret.as_deref() else {
        return next.run(req).await;
    };
    if authorized(secret, req.headers(), req.uri()) {
        next.run(req).await
    } else {
        error(StatusCode::UNAUTHORIZED, "Unauthorized")
    }
}

fn authorized(secret: &str, headers: &HeaderMap, uri: &http::Uri) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|b| same(b.as_bytes(), secret.as_bytes())) {
        return true;
    }
    // Form decoding (`+` is a space, as browsers' URLSearchParams and mihomo read it), and
    // plain percent-decoding for a token typed by hand with a literal `+`.
    let raw = uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    let form = Query::<HashMap<String, String>>::try_from_uri(uri)
        .ok()
        .and_then(|Query(q)| q.get("token").cloned());
    let plain = raw.and_then(percent_decode);
    [form, plain]
        .iter()
        .flatten()
        .fold(false, |ok, t| same(t.as_bytes(), secret.as_bytes()) | ok)
}

/// `%XX` escapes decoded, `+` kept; `None` when malformed or not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Equal, in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter().cycle())
        .fold(a.len() ^ b.len(), |d, (x, y)| d | usize::from(x ^ y));
    diff == 0 && !b.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_url_decoded_and_compared_whole() {
        let secret = "a+b/c=";
        let ok = |q: &str| {
            let uri: http::Uri = format!("/traffic?{q}").parse().unwrap();
            authorized(secret, &HeaderMap::new(), &uri)
        };
        assert!(ok("token=a%2Bb%2Fc%3D"), "URLSearchParams' encoding");
        assert!(ok("x=1&token=a%2Bb/c%3D"));
        assert!(ok("token=a+b/c="), "typed by hand");
        assert!(!ok("token=a%20b/c="));
        assert!(!ok("token=a%2Bb%2Fc"));
        assert!(!ok("token=a%2Bb%2Fc%3D%3D"));
        assert!(!ok("token="));
        assert!(!ok("token=%ZZ"));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a+b/c="),
        );
        assert!(authorized(secret, &h, &"/".parse().unwrap()));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a+b/c"),
        );
        assert!(!authorized(secret, &h, &"/".parse().unwrap()));
        assert!(same(b"x", b"x") && !same(b"", b"") && !same(b"xy", b"x"));
    }

    #[test]
    fn origins() {
        let cors = Cors {
            allow_origins: vec![
                "http://192.0.2.7:8080".into(),
                "https://*.example.com".into(),
            ],
            allow_private_network: false,
        };
        assert!(origin_allowed(&cors, "http://192.0.2.7:8080"));
        assert!(origin_allowed(&cors, "HTTPS://dash.example.com"));
        assert!(!origin_allowed(&cors, "https://example.org"));
        assert!(!origin_allowed(&cors, "http://192.0.2.7:8081"));
        assert_eq!(
            allow_origin_value(&cors, "http://192.0.2.7:8080"),
            "http://192.0.2.7:8080"
        );
        assert!(origin_allowed(&Cors::default(), "null"));
        assert_eq!(allow_origin_value(&Cors::default(), "http://x"), "*");
    }
}
