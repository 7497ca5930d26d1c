//! Geodata downloads (`geox-url`): the country database (`geox-url.mmdb`, read by `GEOIP`
//! rules) and the geosite list (`geox-url.geosite`, read by `GEOSITE` rules and DNS
//! `geosite:` entries). tpgate fetches a file only when the config gives its URL: at start
//! when the file is missing, on `POST /configs/geo`, and every `geo-update-interval` with
//! `geo-auto-update`. Each download goes over a marked DIRECT connection, is checked (a
//! database that does not open, or a list that does not parse, is refused and the old file
//! stays), written atomically, and followed by a reload, which reads the new files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tpgate_core::config::Config;
use tracing::{info, warn};

use crate::outbound::Outbounds;
use crate::reload::{Request, Requests, Source};
use crate::shutdown::Shutdown;

/// The largest geodata file accepted (a full geosite.dat is about 10 MB).
const MAX_SIZE: usize = 128 << 20;
/// One download, headers to last byte.
const TIMEOUT: Duration = Duration::from_secs(180);
/// After a failed download at start, the next try.
const RETRY: Duration = Duration::from_secs(300);

/// One geodata file tpgate reads, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GeoFile {
    /// `mmdb`, `geoip` (geoip.dat, `geodata-mode`) or `geosite`, as in `geox-url`.
    pub(crate) kind: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) url: String,
}

/// The files `config` uses that have a URL (paths as the loader resolved them).
pub(crate) fn wanted(config: &Config, config_path: Option<&Path>) -> Vec<GeoFile> {
    let base = crate::providers::config_dir(config_path);
    let mut out = Vec::new();
    let (kind, url, default) = if config.geox.geodata_mode {
        ("geoip", &config.geox.geoip, "GeoIP.dat")
    } else {
        ("mmdb", &config.geox.mmdb, "Country.mmdb")
    };
    if let (Some(url), true) = (url, crate::geoip::uses_geoip(config)) {
        let path = base.join(config.geoip_path.as_deref().unwrap_or(default));
        out.push(GeoFile {
            kind,
            path,
            url: url.clone(),
        });
    }
    if let (Some(url), true) = (&config.geox.asn, crate::geoip::uses_asn(config)) {
        let path = base.join(config.asn_path.as_deref().unwrap_or("ASN.mmdb"));
        out.push(GeoFile {
            kind: "asn",
            path,
            url: url.clone(),
        });
    }
    if let (Some(url), true) = (&config.geox.geosite, crate::geoip::uses_geosite(config)) {
        let path = base.join(config.geosite_path.as_deref().unwrap_or("GeoSite.dat"));
        out.push(GeoFile {
            kind: "geosite",
            path,
            url: url.clone(),
        });
    }
    out
}

/// Checks that `data` is a usable file of `kind`.
fn check(kind: &str, data: &[u8], scratch: &Path) -> Result<()> {
    match kind {
        "mmdb" | "asn" => {
            // The reader opens files: the scratch copy is what becomes the new file.
            std::fs::write(scratch, data)
                .with_context(|| format!("writing {}", scratch.display()))?;
            crate::geoip::GeoIp::open(scratch).map(|_| ())
        }
        "geoip" => tpgate_core::rules::geoip_dat_categories(data, &[])
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e}")),
        _ => tpgate_core::rules::geosite_sets(data, &[])
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("not a geosite list: {e}")),
    }
}

/// Downloads `f`, checks it and puts it in place; the bytes written.
pub(crate) async fn download(f: &GeoFile, o: &Outbounds) -> Result<usize> {
    let (body, _) = tokio::time::timeout(
        TIMEOUT,
        crate::providers::fetch(&f.url, o, &[], MAX_SIZE, None),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out after {}s", TIMEOUT.as_secs()))??;
    let (kind, path) = (f.kind, f.path.clone());
    let n = body.len();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut scratch = path.as_os_str().to_owned();
        scratch.push(".check");
        let scratch = PathBuf::from(scratch);
        let checked = check(kind, &body, &scratch);
        let _ = std::fs::remove_file(&scratch);
        checked?;
        crate::providers::write_atomically(&path, &body)
            .with_context(|| format!("writing {}", path.display()))
    })
    .await
    .context("the writer task failed")??;
    Ok(n)
}

/// Downloads the files of `config` (only the missing ones with `missing_only`); how many
/// were replaced. Every file is tried; the error lists the ones that failed.
pub(crate) async fn update(
    config: &Config,
    config_path: Option<&Path>,
    o: &Outbounds,
    missing_only: bool,
) -> Result<usize, Vec<String>> {
    let mut done = 0;
    let mut failed = Vec::new();
    for f in wanted(config, config_path) {
        if missing_only && f.path.exists() {
            continue;
        }
        match download(&f, o).await {
            Ok(n) => {
                info!(
                    file = f.kind,
                    bytes = n,
                    "geodata: {} downloaded from {}",
                    f.path.display(),
                    f.url
                );
                crate::providers::record_update("geodata", f.kind, true);
                done += 1;
            }
            Err(e) => {
                crate::providers::record_update("geodata", f.kind, false);
                failed.push(format!(
                    "geodata: {} from {}: {e:#}",
                    f.path.display(),
                    f.url
                ));
            }
        }
    }
    if failed.is_empty() {
        Ok(done)
    } else {
        Err(failed)
    }
}

/// Asks the daemon to reload (reading the new files); waits for its answer.
async fn reload(requests: &Requests) {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let source = Source::File(None);
    if requests.send(Request { source, reply }).await.is_ok() {
        let _ = answer.await;
    }
}

/// At start, the missing files are downloaded (retried until they are there); with
/// `geo-auto-update`, every file again every `geo-update-interval`. Each round that
/// replaced a file is followed by a reload.
pub(crate) fn spawn(
    config: &Config,
    config_path: Option<PathBuf>,
    outbounds: &Arc<Outbounds>,
    requests: Requests,
    stop: Shutdown,
) {
    if wanted(config, config_path.as_deref()).is_empty() {
        return;
    }
    let (config, o) = (config.clone(), outbounds.clone());
    tokio::spawn(async move {
        let mut missing_only = true;
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.wait() => return,
            }
            let missing = wanted(&config, config_path.as_deref())
                .iter()
                .any(|f| !f.path.exists());
            if !missing_only || missing {
                match update(&config, config_path.as_deref(), &o, missing_only).await {
                    Ok(0) => {}
                    Ok(_) => reload(&requests).await,
                    Err(lines) => {
                        for l in &lines {
                            warn!("{l}");
                        }
                        if missing_only {
                            wait = RETRY;
                            continue;
                        }
                    }
                }
            }
            if !config.geox.auto_update {
                return;
            }
            missing_only = false;
            wait = config.geox.interval;
        }
    });
}
