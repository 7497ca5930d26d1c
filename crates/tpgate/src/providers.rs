//! Rule providers' contents: `file` providers (and the cache of `http` ones) are read when
//! the config is loaded, so `tpgate check` reports a bad list with its own FILE:LINE:COL
//! before anything is applied; `http` providers are downloaded in the background, through a
//! marked DIRECT connection, at start when nothing is cached and then every `interval`, and
//! swapped in whole. A failed download keeps the previous set and is logged once per try.
//! Proxy providers (`proxy-providers`, type http) are downloaded the same way, size-limited,
//! written atomically to their `path`, and handed to the outbounds, which expand the
//! groups using them again; established connections keep their outbound.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use tpgate_core::config::subscription::SubscriptionInfo;
use tpgate_core::config::{
    Config, FileDiagnostic, ProviderSource, ProxyProvider, ProxySource, RuleProvider, Severity, Tls,
};
use tpgate_core::rules::{EntryError, RuleSet};
use tracing::{info, warn};

use crate::outbound::{Outbounds, TlsClient, Url};
use crate::shutdown::Shutdown;

/// Largest provider file accepted (big community lists are a few MiB).
const MAX_BODY: usize = 64 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one proxy provider download may take, headers and body (mihomo's
/// `DefaultHttpTimeout`): a subscription that stalls must not hold the refresh for long.
const PROXY_FETCH_TIMEOUT: Duration = Duration::from_secs(20);
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
        let text = match std::fs::read(&full) {
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
        match RuleSet::parse_bytes(p.behavior, p.format, &text) {
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

/// Update outcomes of one provider, for the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Updates {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// The last successful update.
    pub(crate) last_ok: Option<std::time::SystemTime>,
}

/// Outcomes by (`rule` or `proxy`, provider name), for the whole process: counters must
/// not restart when a reload replaces the providers.
static UPDATES: std::sync::Mutex<Vec<((&'static str, String), Updates)>> =
    std::sync::Mutex::new(Vec::new());

/// Records one update of a `kind` (`rule`, `proxy`) provider.
pub(crate) fn record_update(kind: &'static str, name: &str, ok: bool) {
    let mut all = UPDATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let i = match all.iter().position(|((k, n), _)| *k == kind && n == name) {
        Some(i) => i,
        None => {
            all.push(((kind, name.to_owned()), Updates::default()));
            all.len() - 1
        }
    };
    let u = &mut all[i].1;
    if ok {
        u.ok += 1;
        u.last_ok = Some(std::time::SystemTime::now());
    } else {
        u.failed += 1;
    }
}

/// Every provider's update outcomes so far.
pub(crate) fn updates() -> Vec<((&'static str, String), Updates)> {
    UPDATES.lock().map(|u| u.clone()).unwrap_or_default()
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
        let got = download(&p, &url, cache.as_deref(), &o).await;
        record_update("rule", &p.name, got.is_ok());
        wait = match got {
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
    let text = body.to_vec();
    let (set, _) = RuleSet::parse_bytes(p.behavior, p.format, &text).map_err(|errs| {
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
    fetch(url, o, &[], MAX_BODY, None)
        .await
        .map(|(body, _)| body)
}

/// [`get`] with extra request headers, a body limit, and optionally through the proxy or
/// group named `via` (a proxy provider's `proxy`) instead of DIRECT; also returns the
/// `subscription-userinfo` response header.
pub(crate) async fn fetch(
    url: &str,
    o: &Outbounds,
    headers: &[(String, String)],
    limit: usize,
    via: Option<&str>,
) -> anyhow::Result<(Bytes, Option<String>)> {
    let u = Url::parse(url).ok_or_else(|| anyhow::anyhow!("bad URL"))?;
    let dst = u.destination();
    let tcp: crate::outbound::BoxIo = match via {
        None => Box::new(o.connect_direct(&dst).await?),
        Some(name) => {
            let id = o
                .id_of(name)
                .ok_or_else(|| anyhow::anyhow!("no proxy or group `{name}` to download through"))?;
            let pick = o.pick(id, &dst);
            o.connect(&pick.exit, &dst)
                .await
                .map_err(|e| anyhow::anyhow!("through {}: {e}", pick.label))?
                .ok_or_else(|| anyhow::anyhow!("through {}: rejected", pick.label))?
        }
    };
    let io: crate::outbound::BoxIo = if u.https {
        let tls = Tls {
            alpn: Vec::new(),
            sni: Some(u.host.clone()),
            skip_cert_verify: false,
            fingerprint: None,
            reality: None,
        };
        TlsClient::new(&tls, &u.host)?.wrap(tcp).await?
    } else {
        tcp
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(u.path.as_str()).header(hyper::header::HOST, u.host_header());
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
    {
        // Subscriptions answer Clash YAML to clients that name themselves so.
        req = req.header(hyper::header::USER_AGENT, "clash.meta tpgate");
    }
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    if !resp.status().is_success() {
        anyhow::bail!("HTTP {}", resp.status());
    }
    let info = resp
        .headers()
        .get("subscription-userinfo")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the body (at most {limit} bytes): {e}"))?;
    Ok((body.to_bytes(), info))
}

/// Starts the download task of every http proxy provider: at start (the cache, if any, is
/// already in use) and every `interval`. A failed download keeps what the provider has.
pub(crate) fn spawn_proxy_refresh(
    config: &Config,
    outbounds: &Arc<Outbounds>,
    shutdown: &Shutdown,
) {
    for (k, p) in config.proxy_providers.iter().enumerate() {
        if let ProxySource::Http {
            url,
            path,
            header,
            proxy,
        } = &p.source
        {
            let job = ProxyJob {
                k,
                p: p.clone(),
                url: url.clone(),
                // Made absolute by `check::load_config`.
                cache: PathBuf::from(path),
                header: header.clone(),
                via: proxy.clone(),
            };
            let (o, stop) = (outbounds.clone(), shutdown.clone());
            tokio::spawn(async move { job.run(o, stop).await });
        } else if let (ProxySource::File { path }, Some(every)) = (&p.source, p.interval) {
            let (config, o, stop) = (config.clone(), outbounds.clone(), shutdown.clone());
            let path = PathBuf::from(path);
            tokio::spawn(async move { watch_file(config, k, path, every, o, stop).await });
        }
    }
}

/// `PUT /providers/proxies/{name}`: provider `k` of `config` is downloaded now (http) or
/// read again (file); the number of usable proxies it has. A failure keeps what it had.
pub(crate) async fn update_proxy_provider_now(
    config: &Config,
    k: usize,
    o: &Outbounds,
) -> anyhow::Result<usize> {
    let Some(p) = config.proxy_providers.get(k) else {
        anyhow::bail!("no proxy provider {k}");
    };
    match &p.source {
        ProxySource::Http {
            url,
            path,
            header,
            proxy,
        } => {
            let job = ProxyJob {
                k,
                p: p.clone(),
                url: url.clone(),
                cache: PathBuf::from(path),
                header: header.clone(),
                via: proxy.clone(),
            };
            job.once(o).await
        }
        ProxySource::File { path } => {
            let body = tokio::fs::read(path)
                .await
                .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
            let read = p.read(&body).map_err(|m| anyhow::anyhow!("{path}: {m}"))?;
            for w in &read.warnings {
                warn!(provider = %p.name, "{path}:{w}");
            }
            o.set_provided(k, &read.proxies)?;
            Ok(read.proxies.len())
        }
        ProxySource::Inline => Ok(o.provided_count(k)),
    }
}

/// A file proxy provider with `interval`: the file is read again every `interval` and the
/// provider updated when its content changed (a broken file keeps what it had, and says
/// why once per change).
async fn watch_file(
    config: Config,
    k: usize,
    path: PathBuf,
    every: Duration,
    o: Arc<Outbounds>,
    stop: Shutdown,
) {
    let name = config.proxy_providers[k].name.clone();
    let mut seen = tokio::fs::read(&path).await.ok();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.wait() => return,
        }
        let now = tokio::fs::read(&path).await.ok();
        if now == seen {
            continue;
        }
        seen = now;
        let got = update_proxy_provider_now(&config, k, &o).await;
        record_update("proxy", &name, got.is_ok());
        match got {
            Ok(n) => {
                info!(provider = %name, proxies = n, "proxy provider file {} changed: read again", path.display())
            }
            Err(e) => warn!(
                provider = %name,
                "proxy provider file {} changed but cannot be used: {e:#}; keeping the {} proxies it had",
                path.display(),
                o.provided_count(k)
            ),
        }
    }
}

struct ProxyJob {
    k: usize,
    p: ProxyProvider,
    url: String,
    cache: PathBuf,
    header: Vec<(String, String)>,
    /// The provider's `proxy`: what the download goes through (`None`: DIRECT).
    via: Option<String>,
}

impl ProxyJob {
    async fn run(self, o: Arc<Outbounds>, stop: Shutdown) {
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.wait() => return,
            }
            let name = &self.p.name;
            let got = self.once(&o).await;
            record_update("proxy", name, got.is_ok());
            wait = match got {
                Ok(n) => {
                    info!(provider = %name, proxies = n, "proxy provider updated from {}", self.url);
                    match self.p.interval {
                        Some(i) => i,
                        None => return,
                    }
                }
                Err(e) => {
                    let kept = o.provided_count(self.k);
                    warn!(
                        provider = %name,
                        "proxy provider download from {} failed: {e:#}; keeping the {kept} \
                         proxies it had (from {})",
                        self.url,
                        self.cache.display()
                    );
                    self.p.interval.unwrap_or(RETRY).min(RETRY)
                }
            };
        }
    }

    /// Downloads, reads, installs and caches; the number of usable proxies.
    async fn once(&self, o: &Outbounds) -> anyhow::Result<usize> {
        let limit = usize::try_from(self.p.size_limit).unwrap_or(usize::MAX);
        let download = fetch(&self.url, o, &self.header, limit, self.via.as_deref());
        let (body, info) = tokio::time::timeout(PROXY_FETCH_TIMEOUT, download)
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {PROXY_FETCH_TIMEOUT:?}"))??;
        let read = self.p.read(&body).map_err(|m| anyhow::anyhow!("{m}"))?;
        if read.proxies.is_empty() {
            // One line for the failed refresh, saying why: the first entries' problems.
            let why: Vec<&str> = read.warnings.iter().take(2).map(String::as_str).collect();
            if why.is_empty() {
                anyhow::bail!("no proxy tpgate can use in it");
            }
            anyhow::bail!("no proxy tpgate can use in it ({})", why.join("; "));
        }
        for w in &read.warnings {
            warn!(provider = %self.p.name, "{}:{w}", self.url);
        }
        if let Some(info) = info {
            o.set_subscription_info(&self.p.name, SubscriptionInfo::parse(&info));
        }
        o.set_provided(self.k, &read.proxies)?;
        let cache = self.cache.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&cache, &body)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(provider = %self.p.name, "cannot write the cache {}: {e}", self.cache.display())
            }
            Err(e) => warn!(provider = %self.p.name, "cannot write the cache: {e}"),
        }
        Ok(read.proxies.len())
    }
}

/// Writes `path` whole or not at all: a temporary file beside it, then a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A one-shot HTTP server on loopback answering `status` with `body` and a
    /// `subscription-userinfo` header.
    async fn serve_once(status: &'static str, body: &'static str) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 {status}\r\nsubscription-userinfo: upload=1; download=2; total=10; expire=99\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        });
        addr
    }

    fn setup(addr: std::net::SocketAddr, cache: &Path) -> (Arc<Outbounds>, ProxyJob) {
        let text = format!(
            "state-file: /dev/null/tpgate-state.json\nproxy-providers:\n  sub: {{type: http, url: 'http://{addr}/sub', path: {}}}\nproxy-groups:\n  - {{name: G, type: select, use: [sub]}}\n",
            cache.display()
        );
        let config = tpgate_core::config::load(&text).expect("config").config;
        let o = Outbounds::new(&config).expect("outbounds");
        let ProxySource::Http { url, header, .. } = &config.proxy_providers[0].source else {
            panic!("http provider")
        };
        let job = ProxyJob {
            k: 0,
            p: config.proxy_providers[0].clone(),
            url: url.clone(),
            cache: cache.to_path_buf(),
            header: header.clone(),
            via: None,
        };
        (o, job)
    }

    #[tokio::test]
    async fn a_download_fills_the_groups_and_the_cache_and_a_failure_keeps_them() {
        let dir = std::env::temp_dir().join(format!("tpgate-provider-{}", std::process::id()));
        let cache = dir.join("proxies/sub.yaml");
        let body = "ss://YWVzLTEyOC1nY206dGVzdA@192.0.2.1:8388#HK\nvmess://x\n";
        let addr = serve_once("200 OK", body).await;
        let (o, job) = setup(addr, &cache);
        let g = o.id_of("G").expect("group");
        let dst = tpgate_core::net::Destination::Addr("203.0.113.2:443".parse().expect("addr"));
        assert_eq!(
            o.pick(g, &dst).label,
            "G/REJECT",
            "nothing before the download"
        );
        assert_eq!(job.once(&o).await.expect("download"), 1);
        assert_eq!(o.pick(g, &dst).label, "G/HK");
        assert_eq!(std::fs::read_to_string(&cache).expect("cache"), body);
        let info = o.subscription_info("sub").expect("userinfo");
        assert_eq!((info.total, info.expire), (10, 99));
        // A failed download (HTTP 500, then garbage) keeps the proxies and the cache.
        let addr = serve_once("500 Oops", "").await;
        let (_, bad) = setup(addr, &cache);
        assert!(bad.once(&o).await.is_err());
        let addr = serve_once("200 OK", "hello").await;
        let (_, garbage) = setup(addr, &cache);
        assert!(garbage.once(&o).await.is_err());
        assert_eq!(o.pick(g, &dst).label, "G/HK");
        assert_eq!(std::fs::read_to_string(&cache).expect("cache"), body);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
