//! `external-ui`: a dashboard's static files at `/ui/`, without authentication (the page
//! itself asks for the secret, as with mihomo). A path that names no file gets
//! `index.html` (single-page dashboards route in the browser); nothing outside the folder is
//! ever served.

use std::path::{Component, Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::{not_found, Api};

/// The `/ui` routes, or none without `external-ui`.
pub(super) fn router(dir: Option<PathBuf>) -> Router<Api> {
    match dir {
        Some(_) => Router::new()
            .route("/ui", get(|| async { Redirect::temporary("/ui/") }))
            .route("/ui/", get(file))
            .route("/ui/{*path}", get(file)),
        None => Router::new(),
    }
}

async fn file(State(api): State<Api>, req: Request) -> Response {
    let Some(dir) = api.ui.clone() else {
        return not_found();
    };
    let path = req.uri().path().strip_prefix("/ui").unwrap_or_default();
    let Some(rel) = safe_relative(path) else {
        return not_found();
    };
    let wanted = dir.join(&rel);
    let target = match tokio::fs::metadata(&wanted).await {
        Ok(m) if m.is_file() => wanted,
        Ok(m) if m.is_dir() => wanted.join("index.html"),
        // A dashboard's own route (`/ui/#/proxies` never gets here, `/ui/proxies` does).
        _ if Path::new(&rel).extension().is_none() => dir.join("index.html"),
        _ => return not_found(),
    };
    match tokio::fs::read(&target).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&target))], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// The request path as a path inside the folder: percent-decoded, no `..`, no root.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    let mut out = PathBuf::new();
    for c in Path::new(&decoded).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.contains('\0'))
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        assert_eq!(
            safe_relative("/assets/a.js"),
            Some(PathBuf::from("assets/a.js"))
        );
        assert_eq!(safe_relative("/"), Some(PathBuf::new()));
        assert_eq!(safe_relative("/a%20b.css"), Some(PathBuf::from("a b.css")));
        assert_eq!(safe_relative("/../etc/passwd"), None);
        assert_eq!(safe_relative("/a/%2e%2e/%2e%2e/x"), None);
        assert_eq!(safe_relative("/%00"), None);
        assert_eq!(
            content_type(Path::new("x/index.html")),
            "text/html; charset=utf-8"
        );
    }
}
