//! `tpgate check`: every error and every warning of a config as `FILE:LINE:COL`, in
//! document order (a config with errors still shows its warnings), then the summary a
//! user moving a mihomo config over needs. Also the file access the core's loader gets
//! (proxy providers' files and caches, relative to the config's directory).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use tpgate_core::config::{self, Files, Options, ProxySource, Report};

use crate::{geoip, providers};

/// Reads the files a config names, relative to its directory.
struct ConfigFiles {
    base: PathBuf,
}

impl Files for ConfigFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(self.base.join(path)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Loads `text` (the config at `path`, `None` for the embedded default) with file access.
pub(crate) fn load_config(text: &str, path: Option<&Path>, strict: bool) -> Report {
    let files = ConfigFiles {
        base: providers::config_dir(path),
    };
    let mut report = config::load_with(
        text,
        &Options {
            strict,
            files: Some(&files),
        },
    );
    // The daemon writes http providers' caches where the config's directory says.
    if let Some(c) = report.config.as_mut() {
        for p in &mut c.proxy_providers {
            if let ProxySource::Http { path, .. } = &mut p.source {
                *path = files.base.join(&*path).display().to_string();
            }
        }
    }
    report
}

/// `tpgate check -c FILE [--strict]`: exit 0 valid, 2 invalid.
pub(crate) fn run(path: &Path, strict: bool) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    let mut report = load_config(&text, Some(path), strict);
    let mut lines: Vec<((usize, usize), String)> = report
        .warnings
        .iter()
        .map(|d| {
            (
                (d.line, d.col),
                format!("{name}:{}:{}: warning: {}", d.line, d.col, d.message),
            )
        })
        .chain(
            report
                .errors
                .iter()
                .map(|d| ((d.line, d.col), format!("{name}:{d}"))),
        )
        .collect();
    lines.sort_by_key(|(at, _)| *at);
    for (_, l) in &lines {
        eprintln!("{l}");
    }
    let mut failed = !report.errors.is_empty();
    if let Some(cfg) = report.config.as_mut() {
        // What only the daemon's side can read: rule provider files, geo databases.
        match providers::load_local(cfg, Some(path)) {
            Ok(w) => w.iter().for_each(|w| eprintln!("{w}")),
            Err(errs) => {
                errs.iter().for_each(|e| eprintln!("{e}"));
                failed = true;
            }
        }
        match geoip::check(cfg, Some(path)) {
            Ok(Some(w)) => eprintln!("warning: {w}"),
            Ok(None) => {}
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
        match geoip::load_geosite(cfg, Some(path)) {
            Ok(Some(w)) => eprintln!("warning: {w}"),
            Ok(None) => {}
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    for l in report.summary.lines() {
        println!("summary: {l}");
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
