//! Rule providers' contents: `file` providers (and the cache of `http` ones) are read when
//! the config is loaded, so `tpgate check` reports a bad list with its own FILE:LINE:COL
//! before anything is applied; `http` providers are downloaded in the background, through a
//! marked DIRECT connection, at start when nothing is cached and then every `interval`, and
//! swapped in whole. A failed download keeps the previous set and is logged once per try.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use tpgate_core::config::{Config, FileDiagnostic, ProviderSource, RuleProvider, Severity, Tls};
use tpgate_core::rules::{EntryError, RuleSet};
use tracing::{info, warn};

use crate::outbound::{Outbounds, TlsClient, Url};
use crate::shutdown::Shutdown;

/// Largest provider file accepted (big community lists are a few MiB).
const MAX_BODY: usize = 64 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Retry period after a failed download when no `interval` is set.
const RETRY: Duration = Duration::from_secs(300);

/// Makes relative provider paths relative to the config file's directory (mihomo's rule),
/// then loads every file provider and every http provider's cache. Returns the warnings, or
/// the errors; each names the provider's file and, when it is about one entry, its position.
pub(crate) fn load_local(
    config: &mut Config,
    config_path: Option<&Path>,
) -> Result<Vec<FileDiagnostic>, Vec<FileDiagnostic>> {
    let base = config_dir(config_path);
    let (mut warnings, mut errors) = (Vec::new(), Vec::new());
    for p in &mut config.rule_providers {
        let (file, required) = match &mut p.source {
            ProviderSource::File { path } => (path, true),
            ProviderSource::Http {
                path: Some(path), ..
            } => (path, false),
            ProviderSource::Http { path: None, .. } | ProviderSource::Inline => continue,
        };
        let full = base.join(&*file);
        *file = full.display().to_string();
        let text = match std::fs::read_to_string(&full) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                errors.push(FileDiagnostic::in_file(
                    full.display().to_string(),
                    Severity::Error,
                    format!("rule provider `{}`: {e}", p.name),
                ));
                continue;
            }
        };
        let entry = |severity, e: &EntryError, message: String| {
            FileDiagnostic::at(
                full.display().to_string(),
                (e.line, e.col),
                severity,
                message,
            )
        };
        match RuleSet::parse(p.behavior, p.format, &text) {
            Ok((set, w)) => {
                warnings.extend(
                    w.iter()
                        .map(|w| entry(Severity::Warning, w, w.message.clone())),
                );
                p.handle.replace(set);
            }
            Err(errs) if required => {
                errors.extend(
                    errs.iter()
                        .map(|e| entry(Severity::Error, e, e.message.clone())),
                );
            }
            // A broken cache is downloaded again.
            Err(errs) => warnings.push(entry(
                Severity::Warning,
                &errs[0],
                format!(
                    "{}: cached rule provider `{}` unreadable, will download again",
                    errs[0].message, p.name
                ),
            )),
        }
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(errors)
    }
}

/// The directory relative paths in a config are read from: the config file's own (mihomo's
/// rule), or the working directory for the embedded default.
pub(crate) fn config_dir(config_path: Option<&Path>) -> PathBuf {
    config_path
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Starts the refresh task of every http provider.
pub(crate) fn spawn_refresh(config: &Config, outbounds: &Arc<Outbounds>, shutdown: &Shutdown) {
    for p in &config.rule_providers {
        if let ProviderSource::Http { url, path } = &p.source {
            let (p, o, stop) = (p.clone(), outbounds.clone(), shutdown.clone());
            let (url, path) = (url.clone(), path.clone());
            tokio::spawn(async move { refresh_loop(p, url, path, o, stop).await });
        }
    }
}

async fn refresh_loop(
    p: RuleProvider,
    url: String,
    cache: Option<String>,
    o: Arc<Outbounds>,
    stop: Shutdown,
) {
    let loaded = !p.handle.current().is_empty();
    let mut wait = if loaded {
        p.interval.unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    };
    loop {
        if wait == Duration::MAX {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.wait() => return,
        }
        wait = match download(&p, &url, cache.as_deref(), &o).await {
            Ok(n) => {
                info!(provider = %p.name, entries = n, "rule provider updated from {url}");
                p.interval.unwrap_or(Duration::MAX)
            }
            Err(e) => {
                warn!(provider = %p.name, "rule provider download from {url} failed: {e}");
                p.interval.unwrap_or(RETRY).min(RETRY)
            }
        };
    }
}

/// Loads provider `p` again now (the controller's `PUT /providers/rules/{name}`): an http
/// provider is downloaded (and cached), a file provider read again, an inline one is
/// already current. Returns the entry count; on failure the previous set stays.
pub(crate) async fn update_now(p: &RuleProvider, o: &Outbounds) -> anyhow::Result<usize> {
    match &p.source {
        ProviderSource::Http { url, path } => download(p, url, path.as_deref(), o).await,
        ProviderSource::File { path } => {
            let text = tokio::fs::read_to_string(path).await?;
            let (set, _) = RuleSet::parse(p.behavior, p.format, &text).map_err(|errs| {
                let first = errs.first().map(ToString::to_string).unwrap_or_default();
                anyhow::anyhow!("{path}:{first}")
            })?;
            let n = set.len();
            p.handle.replace(set);
            Ok(n)
        }
        ProviderSource::Inline => Ok(p.handle.current().len()),
    }
}

/// Downloads, parses, installs, and caches one provider; returns its entry count.
async fn download(
    p: &RuleProvider,
    url: &str,
    cache: Option<&str>,
    o: &Outbounds,
) -> anyhow::Result<usize> {
    let body = tokio::time::timeout(FETCH_TIMEOUT, get(url, o))
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))??;
    let text = String::from_utf8(body.to_vec()).map_err(|_| anyhow::anyhow!("not UTF-8 text"))?;
    let (set, _) = RuleSet::parse(p.behavior, p.format, &text).map_err(|errs| {
        anyhow::anyhow!("line {}:{}: {}", errs[0].line, errs[0].col, errs[0].message)
    })?;
    let n = set.len();
    p.handle.replace(set);
    if let Some(path) = cache {
        let path = PathBuf::from(path);
        let written = tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, text)
        })
        .await;
        if let Ok(Err(e)) = written {
            warn!(provider = %p.name, "cannot write the cache: {e}");
        }
    }
    Ok(n)
}

/// GET `url` over a marked DIRECT connection (TLS for https), following no redirects.
async fn get(url: &str, o: &Outbounds) -> anyhow::Result<Bytes> {
    let u = Url::parse(url).ok_or_else(|| anyhow::anyhow!("bad URL"))?;
    let tcp = o.connect_direct(&u.destination()).await?;
    let io: crate::outbound::BoxIo = if u.https {
        let tls = Tls {
            sni: Some(u.host.clone()),
            skip_cert_verify: false,
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
    if !resp.status().is_success() {
        anyhow::bail!("HTTP {}", resp.status());
    }
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?;
    Ok(body.to_bytes())
}
