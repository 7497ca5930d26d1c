//! `external-ui-url`: the dashboard is downloaded once, when the `external-ui` folder has no
//! `index.html` yet, over a marked DIRECT connection (following a few redirects, as release
//! links have them), and its zip unpacked there (a single top folder such as `dist/` is
//! stripped). A folder that exists with other files in it is never overwritten.
//!
//! Deliberately not here: serving the files (`controller::ui`), updating a dashboard that is
//! already there (`POST /upgrade/ui` answers 501).

use std::io::Cursor;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use tpgate_core::config::Tls;

use crate::outbound::{BoxIo, Outbounds, TlsClient, Url};

/// Largest archive accepted (dashboards are a few MiB).
const MAX_ZIP: usize = 64 << 20;
const MAX_REDIRECTS: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(120);

/// Downloads and unpacks `url` into `dir` unless `dir` already holds a dashboard;
/// returns how many files were written (0: there was one already).
pub(crate) async fn fetch(dir: &Path, url: &str, o: &Outbounds) -> Result<usize> {
    if dir.join("index.html").is_file() {
        return Ok(0);
    }
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} exists without index.html; not overwriting it (empty it, or unpack the \
             dashboard there yourself)",
            dir.display()
        );
    }
    let zip = tokio::time::timeout(TIMEOUT, get(url, o))
        .await
        .map_err(|_| anyhow!("download timed out"))??;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || unpack(&zip, &dir)).await?
}

/// GET `url` over a marked DIRECT connection, following redirects.
async fn get(url: &str, o: &Outbounds) -> Result<Bytes> {
    let mut url = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let u = Url::parse(&url).ok_or_else(|| anyhow!("`{url}` is not an http(s) URL"))?;
        let tcp = o.connect_direct(&u.destination()).await?;
        let io: BoxIo = if u.https {
            let tls = Tls {
                alpn: Vec::new(),
                sni: Some(u.host.clone()),
                skip_cert_verify: false,
                fingerprint: None,
                reality: None,
            };
            TlsClient::new(&tls, &u.host)?.wrap(Box::new(tcp)).await?
        } else {
            Box::new(tcp)
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get(u.path.as_str())
            .header(hyper::header::HOST, u.host_header())
            .header(hyper::header::USER_AGENT, "tpgate")
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        if resp.status().is_redirection() {
            let to = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| anyhow!("HTTP {} without Location", resp.status()))?;
            url = resolve(&u, to);
            continue;
        }
        if !resp.status().is_success() {
            bail!("HTTP {}", resp.status());
        }
        let body = Limited::new(resp.into_body(), MAX_ZIP)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the body: {e}"))?;
        return Ok(body.to_bytes());
    }
    bail!("more than {MAX_REDIRECTS} redirects")
}

/// A redirect's `Location` against the URL that answered it.
fn resolve(base: &Url, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let scheme = if base.https { "https" } else { "http" };
    let path = if location.starts_with('/') {
        location.to_owned()
    } else {
        let dir = base.path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    format!("{scheme}://{}{path}", base.host_header())
}

/// Unpacks `zip` into `dir` (through a temporary folder beside it, renamed at the end).
fn unpack(zip: &[u8], dir: &Path) -> Result<usize> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).context("not a zip archive")?;
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    for i in 0..archive.len() {
        let f = archive.by_index(i)?;
        if let Some(name) = f.enclosed_name().filter(|_| !f.is_dir()) {
            files.push((i, name));
        }
    }
    let top = common_top(files.iter().map(|(_, n)| n.as_path()));
    let tmp = dir.with_extension("unpacking");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for (i, name) in &files {
        let rel = top
            .as_ref()
            .and_then(|t| name.strip_prefix(t).ok())
            .unwrap_or(name);
        let out = tmp.join(rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut f = archive.by_index(*i)?;
        let mut w = std::fs::File::create(&out)?;
        std::io::copy(&mut f, &mut w)?;
    }
    if !tmp.join("index.html").is_file() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!("the archive has no index.html");
    }
    // `fetch` made sure `dir` is absent or empty.
    let _ = std::fs::remove_dir(dir);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("moving into {}", dir.display()))?;
    Ok(files.len())
}

/// The one folder every file lies in (`dist/` of `dist/index.html`, ...), if there is one.
fn common_top<'a>(names: impl Iterator<Item = &'a Path>) -> Option<PathBuf> {
    let mut top: Option<PathBuf> = None;
    for n in names {
        let mut parts = n.components();
        let (Some(Component::Normal(first)), Some(_)) = (parts.next(), parts.next()) else {
            return None;
        };
        match &top {
            Some(t) if t.as_os_str() != first => return None,
            Some(_) => {}
            None => top = Some(PathBuf::from(first)),
        }
    }
    top
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    fn archive(files: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, text) in files {
            w.start_file(*name, opts).unwrap();
            w.write_all(text.as_bytes()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// Answers `/latest` with a redirect to `/dash.zip`, which is `zip`.
    async fn server(zip: Vec<u8>) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let zip = zip.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let head = if req.starts_with("GET /latest ") {
                        "HTTP/1.1 302 Found\r\nLocation: /dash.zip\r\nContent-Length: 0\r\n\r\n"
                            .to_owned()
                    } else {
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", zip.len())
                    };
                    let _ = s.write_all(head.as_bytes()).await;
                    if !req.starts_with("GET /latest ") {
                        let _ = s.write_all(&zip).await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn downloaded_once_following_a_redirect_and_unpacked_without_its_top_folder() {
        let zip = archive(&[
            ("dist/index.html", "<html>z</html>"),
            ("dist/assets/app.js", "1"),
            ("../evil", "x"),
        ]);
        let addr = server(zip).await;
        let config = tpgate_core::config::load("").unwrap().config;
        let o = Outbounds::new(&config).unwrap();
        let root = std::env::temp_dir().join(format!("tpgate-dash-{}", std::process::id()));
        let dir = root.join("ui/zashboard");
        let url = format!("http://{addr}/latest");
        assert_eq!(fetch(&dir, &url, &o).await.unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(dir.join("index.html")).unwrap(),
            "<html>z</html>"
        );
        assert!(dir.join("assets/app.js").is_file());
        assert!(!root.join("ui/evil").exists() && !root.join("evil").exists());
        assert_eq!(fetch(&dir, &url, &o).await.unwrap(), 0, "once");
        // A folder with other files is left alone.
        let other = root.join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("notes.txt"), "mine").unwrap();
        assert!(fetch(&other, &url, &o).await.is_err());
        assert!(other.join("notes.txt").is_file());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn archives_without_a_dashboard_and_redirect_targets() {
        let dir = std::env::temp_dir().join(format!("tpgate-dash-bad-{}", std::process::id()));
        assert!(unpack(&archive(&[("readme.txt", "x")]), &dir).is_err());
        assert!(!dir.exists());
        assert!(unpack(b"not a zip", &dir).is_err());
        let base = Url::parse("https://example.org/a/b.zip").unwrap();
        assert_eq!(resolve(&base, "/c.zip"), "https://example.org/c.zip");
        assert_eq!(resolve(&base, "c.zip"), "https://example.org/a/c.zip");
        assert_eq!(resolve(&base, "http://x/y"), "http://x/y");
        let top = common_top([Path::new("d/a"), Path::new("d/b/c")].into_iter());
        assert_eq!(top, Some(PathBuf::from("d")));
        assert_eq!(
            common_top([Path::new("a"), Path::new("d/b")].into_iter()),
            None
        );
    }
}
