//! The command line: parses arguments, loads the config and hands it to `daemon` (run),
//! `install` (down), `doctor` or the plan renderer; maps errors to exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::{daemon, doctor, geoip, install, instance, providers};
use clap::{Parser, Subcommand};
use tpgate_core::config::{self, Config, LogLevel};
use tpgate_core::plan::render_text;

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
    /// both variants, policy rules, routes). Idempotent. Refuses while a tpgate runs in this
    /// network namespace, unless --force.
    Down(DownArgs),
    /// Ask the running tpgate of this network namespace to re-read its config (SIGHUP): a
    /// bad config is refused with FILE:LINE:COL in its log and the running one stays.
    Reload,
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

#[derive(clap::Args)]
struct DownArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// While a tpgate runs in this network namespace: stop it (SIGTERM, SIGKILL after
    /// 10 s), so its interception is removed, then remove any leftovers.
    #[arg(long)]
    force: bool,
}

/// The `tpgate` binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Check { config, strict } => crate::check::run(&config, strict),
        Command::Plan(c) => load(c.config.as_deref())
            .map(|(cfg, warnings)| {
                for w in warnings {
                    eprintln!("{w}");
                }
                daemon::plan_for(&cfg).map(|(plan, _)| {
                    print!("{}", render_text(&plan));
                    for name in &plan.lan_interfaces {
                        if nix::net::if_::if_nametoindex(name.as_str()).is_err() {
                            println!(
                                "note: lan interface {name} does not exist here (yet): its \
                                 traffic is intercepted as soon as it appears"
                            );
                        }
                    }
                    ExitCode::SUCCESS
                })
            })
            .and_then(|r| r),
        Command::Run(c) => match load(c.config.as_deref()) {
            Ok((cfg, warnings)) => {
                init_logging(cfg.log_level);
                for w in warnings {
                    tracing::warn!("{w}");
                }
                runtime()
                    .and_then(|rt| rt.block_on(daemon::run(cfg, c.config.clone())))
                    .map(|()| ExitCode::SUCCESS)
            }
            Err(e) => Err(e),
        },
        Command::Doctor(a) => match a.config.as_deref().map(|p| load(Some(p))).transpose() {
            Ok(cfg) => doctor::run(&a, cfg.as_ref().map(|(c, _)| c)),
            Err(e) => Err(e),
        },
        Command::Reload => reload().map(|()| ExitCode::SUCCESS),
        Command::Down(d) => {
            init_logging(LogLevel::Info);
            runtime()
                .and_then(|rt| rt.block_on(down(d.force)))
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

impl ConfigErrors {
    pub(crate) fn lines(&self) -> &[String] {
        &self.0
    }
}

/// Loads and validates; warnings come back formatted like errors.
pub(crate) fn load(path: Option<&Path>) -> Result<(Config, Vec<String>)> {
    let (name, text) = match path {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => ("<default>".to_string(), DEFAULT_CONFIG.to_string()),
    };
    load_text(&name, &text, path)
}

/// Loads and validates `text`, called `name` in the messages; relative paths in it are
/// taken from `path`'s folder (`PUT /configs` with a `payload` uses the running config's).
pub(crate) fn load_text(
    name: &str,
    text: &str,
    path: Option<&Path>,
) -> Result<(Config, Vec<String>)> {
    let (config, warnings) = match load_all(name, text, path) {
        Ok(loaded) => loaded,
        Err(errors) => return Err(ConfigErrors(printed(&errors)).into()),
    };
    Ok((config, printed(&warnings)))
}

/// The config in `text` (read from `path`, called `name`), the rule providers' files and the
/// geo databases it names; the warnings of all of them, or the errors.
fn load_all(
    name: &str,
    text: &str,
    path: Option<&Path>,
) -> Result<(Config, Vec<config::FileDiagnostic>), Vec<config::FileDiagnostic>> {
    use config::{FileDiagnostic, Severity};
    let of_config = |severity, ds: &[config::Diagnostic]| -> Vec<FileDiagnostic> {
        ds.iter()
            .map(|d| FileDiagnostic::of_config(name, severity, d))
            .collect()
    };
    let mut l = crate::check::load_config(text, path, false)
        .into_loaded()
        .map_err(|errs| of_config(Severity::Error, &errs))?;
    let mut warnings = of_config(Severity::Warning, &l.warnings);
    if let Some(ui) = &mut l.config.controller.ui {
        // Relative to the config file's folder, like the providers' paths.
        *ui = providers::config_dir(path).join(&*ui).display().to_string();
    }
    warnings.extend(providers::load_local(&mut l.config, path)?);
    let geo = geoip::check(&mut l.config, path).and_then(|w| {
        let site = geoip::load_geosite(&mut l.config, path)?;
        Ok(w.into_iter().chain(site))
    });
    match geo {
        Ok(w) => warnings.extend(w.map(|w| FileDiagnostic::general(Severity::Warning, w))),
        Err(e) => {
            return Err(vec![FileDiagnostic::general(
                Severity::Error,
                format!("{e:#}"),
            )])
        }
    }
    Ok((l.config, warnings))
}

/// Each diagnostic as `tpgate check` prints it (`FILE:LINE:COL: [warning: ]message`).
fn printed(diagnostics: &[config::FileDiagnostic]) -> Vec<String> {
    diagnostics.iter().map(ToString::to_string).collect()
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logging(level: LogLevel) {
    crate::logs::init(level);
}

/// `tpgate reload`: SIGHUP to the instance that holds this namespace's lock.
fn reload() -> Result<()> {
    let holder = match instance::InstanceLock::acquire() {
        Ok(_free) => anyhow::bail!("no tpgate is running in this network namespace"),
        Err(instance::LockError::Held { holder, .. }) => holder,
        Err(e) => return Err(e.into()),
    };
    let Some(pid) = holder.pid else {
        anyhow::bail!("the running tpgate has not written its pid yet; try again");
    };
    let pid = i32::try_from(pid).context("pid out of range")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("signalling tpgate (pid {pid})"))?;
    eprintln!("asked tpgate (pid {pid}) to reload; its log says whether the config was taken");
    Ok(())
}

async fn down(force: bool) -> Result<()> {
    // Held while removing, so a `run` starting meanwhile fails instead of installing
    // while its rules are being removed.
    let _instance = match instance::InstanceLock::acquire() {
        Ok(lock) => lock,
        Err(instance::LockError::Held { holder, path }) if force => {
            instance::take_over(holder, &path)?
        }
        Err(e) => return Err(e.into()),
    };
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
