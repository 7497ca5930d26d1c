//! The command line: parses arguments, loads the config and hands it to `daemon` (run),
//! `install` (down), `doctor` or the plan renderer; maps errors to exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::{daemon, doctor, geoip, install, providers};
use clap::{Parser, Subcommand};
use tpgate_core::config::{Config, LogLevel};
use tpgate_core::plan::{render_text, Plan};

/// The embedded default: intercept this machine's own TCP/UDP, relay everything DIRECT.
const DEFAULT_CONFIG: &str = include_str!("default.yaml");

#[derive(Parser)]
#[command(
    name = "tpgate",
    version,
    about = "Transparent-proxy gateway: TPROXY interception for a LAN and for this machine, Clash-style rules.",
    after_help = "Examples:
  sudo tpgate run                     intercept this machine's own traffic, everything DIRECT
  sudo tpgate run -c /etc/tpgate.yaml intercept as configured (e.g. a LAN on br-lan)
  tpgate check -c config.yaml         validate a config; errors as FILE:LINE:COL
  tpgate plan -c config.yaml          print the nftables ruleset and routing it would install
  sudo tpgate down                    remove what a crashed instance left behind
  sudo scripts/demo.sh                see it work in a throwaway namespace lab"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install interception and serve until SIGINT/SIGTERM, then remove everything.
    Run(ConfigArg),
    /// Validate a config: exit 0, or 2 with FILE:LINE:COL per problem; warnings always,
    /// then a summary (usable proxies, skipped types, empty groups, downloads at start).
    Check {
        #[arg(short, long)]
        config: PathBuf,
        /// Unknown keys are errors, not warnings.
        #[arg(long)]
        strict: bool,
    },
    /// Print what `run` would install; change nothing.
    Plan(ConfigArg),
    /// Remove whatever a tpgate instance may have left (nftables table, iptables chains of
    /// both variants, policy rules, routes). Idempotent.
    Down(ConfigArg),
    /// Explain what is wrong with this machine's TPROXY setup (whoever wrote it) and how
    /// to fix it; read-only. Exit 0 healthy, 1 problems found, 2 usage or config error.
    Doctor(doctor::DoctorArgs),
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Config file (YAML, Clash/mihomo keys). Without it, the embedded default.
    #[arg(short, long)]
    config: Option<PathBuf>,
}

/// The `tpgate` binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Check { config, strict } => crate::check::run(&config, strict),
        Command::Plan(c) => load(c.config.as_deref()).map(|(cfg, warnings)| {
            for w in warnings {
                eprintln!("{w}");
            }
            print!("{}", render_text(&Plan::new(&cfg)));
            ExitCode::SUCCESS
        }),
        Command::Run(c) => match load(c.config.as_deref()) {
            Ok((cfg, warnings)) => {
                init_logging(cfg.log_level);
                for w in warnings {
                    tracing::warn!("{w}");
                }
                runtime()
                    .and_then(|rt| rt.block_on(daemon::run(cfg)))
                    .map(|()| ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
        Command::Doctor(a) => match a.config.as_deref().map(|p| load(Some(p))).transpose() {
            Ok(cfg) => doctor::run(&a, cfg.as_ref().map(|(c, _)| c)),
            Err(e) => Err(e),
        },
        Command::Down(_) => {
            init_logging(LogLevel::Info);
            runtime()
                .and_then(|rt| rt.block_on(down()))
                .map(|()| ExitCode::SUCCESS)
        }
    };
    match res {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<ConfigErrors>() {
            Some(ConfigErrors(lines)) => {
                for l in lines {
                    eprintln!("{l}");
                }
                ExitCode::from(2)
            }
            None => {
                eprintln!("tpgate: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Config problems, already formatted as `FILE:LINE:COL: message`.
#[derive(Debug, thiserror::Error)]
#[error("invalid config")]
pub(crate) struct ConfigErrors(pub(crate) Vec<String>);

/// Loads and validates; warnings come back formatted like errors.
pub(crate) fn load(path: Option<&Path>) -> Result<(Config, Vec<String>)> {
    let (name, text) = match path {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => ("<default>".to_string(), DEFAULT_CONFIG.to_string()),
    };
    match crate::check::load_config(&text, path, false).into_loaded() {
        Ok(mut l) => {
            let mut warnings: Vec<String> = l
                .warnings
                .iter()
                .map(|d| format!("{name}:{}:{}: warning: {}", d.line, d.col, d.message))
                .collect();
            match providers::load_local(&mut l.config, path) {
                Ok(w) => warnings.extend(w.into_iter().map(|w| with_warning(&w))),
                Err(errs) => return Err(ConfigErrors(errs).into()),
            }
            let geo = geoip::check(&mut l.config, path).and_then(|w| {
                let site = geoip::load_geosite(&mut l.config, path)?;
                Ok(match (w, site) {
                    (Some(a), Some(b)) => Some(format!("{a}\nwarning: {b}")),
                    (a, b) => a.or(b),
                })
            });
            match geo {
                Ok(Some(w)) => warnings.push(format!("warning: {w}")),
                Ok(None) => {}
                Err(e) => return Err(ConfigErrors(vec![format!("{e:#}")]).into()),
            }
            Ok((l.config, warnings))
        }
        Err(errs) => Err(ConfigErrors(errs.iter().map(|d| format!("{name}:{d}")).collect()).into()),
    }
}

/// `PATH:LINE:COL: message` -> `PATH:LINE:COL: warning: message`.
pub(crate) fn with_warning(w: &str) -> String {
    let mut parts = w.splitn(4, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(p), Some(l), Some(c), Some(m)) => format!("{p}:{l}:{c}: warning:{m}"),
        _ => format!("warning: {w}"),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logging(level: LogLevel) {
    use tracing_subscriber::EnvFilter;
    let default = match level {
        LogLevel::Silent => "off",
        LogLevel::Error => "error",
        LogLevel::Warning => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    let filter = EnvFilter::try_from_env("TPGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

async fn down() -> Result<()> {
    let table = install::remove_table()?;
    let chains = install::remove_chains()?;
    let routes = install::remove_tagged().await?;
    if table || chains > 0 || routes > 0 {
        tracing::info!(
            table,
            iptables_chains = chains,
            routing_objects = routes,
            "removed tpgate leftovers"
        );
    } else {
        tracing::info!("nothing to remove");
    }
    Ok(())
}
