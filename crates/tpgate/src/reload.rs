//! Hot reload (`SIGHUP`, `tpgate reload`, `PUT /configs`): the config is read and checked
//! again; a bad one is refused with its `FILE:LINE:COL` lines and the running config stays.
//! A good one is swapped in for new flows (rules, proxies, groups, providers, sniffer
//! settings, the kernel-offloaded ranges) while established TCP connections and UDP flows
//! keep the rules and routes they started with. Each config generation's background tasks
//! (health checks, provider refreshes) end when the next one takes over.
//!
//! A changed `intercept` section (ports, marks, interfaces, bypass, `udp`, `ipv6`) is
//! applied too: new listeners are bound first (a busy port refuses the reload), the new
//! policy routing is added, the rules are replaced in one transaction, then what only the
//! old section used goes (see [`Installed::replace`], [`Listening`]). The DNS server's
//! listening address and the controller's address need a restart, and the log says so.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot, watch};
use tpgate_core::config::Config;
use tpgate_core::flow::Settings;
use tpgate_core::plan::Plan;
use tracing::{info, warn};

use crate::install::Installed;
use crate::listen::Listening;
use crate::outbound::{self, Outbounds};
use crate::relay::{HostIo, RoutingMark, Shared, SharedCell};
use crate::shutdown::{self, Shutdown, Trigger};

/// The config in force, as the controller reports it (`GET /configs`, rule providers).
pub(crate) struct ConfigCell(RwLock<Arc<Config>>);

impl ConfigCell {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        Arc::new(Self(RwLock::new(Arc::new(config))))
    }

    pub(crate) fn load(&self) -> Arc<Config> {
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn store(&self, config: Config) {
        match self.0.write() {
            Ok(mut c) => *c = Arc::new(config),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(config),
        }
    }
}

/// Reloads applied and refused since start, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct ReloadStats {
    pub(crate) applied: std::sync::atomic::AtomicU64,
    pub(crate) refused: std::sync::atomic::AtomicU64,
}

/// Where a reload reads the config from.
#[derive(Debug)]
pub(crate) enum Source {
    /// A file; `None`: the running config's.
    File(Option<PathBuf>),
    /// Config text (`PUT /configs` with `payload`); relative paths in it are taken from
    /// the running config's folder.
    Payload(String),
}

/// A reload asked for by the controller, answered with the refusal's lines.
pub(crate) struct Request {
    pub(crate) source: Source,
    pub(crate) reply: oneshot::Sender<Result<(), Vec<String>>>,
}

/// How the controller asks for reloads (the daemon's loop runs them one at a time).
pub(crate) type Requests = mpsc::Sender<Request>;

/// What the reloader changes besides the relay's tables.
pub(crate) struct Parts {
    pub(crate) listening: Listening,
    /// The plan the routing watcher restores.
    pub(crate) plan_tx: watch::Sender<Plan>,
    /// The LAN interfaces the link watcher reports on.
    pub(crate) lan_tx: watch::Sender<Vec<String>>,
    pub(crate) dns: Option<Arc<crate::dns::Dns>>,
    pub(crate) dns_access: Arc<crate::dns::Access>,
    pub(crate) config: Arc<ConfigCell>,
    pub(crate) stats: Arc<ReloadStats>,
    /// Where a generation's geodata downloads ask for the reload that reads them.
    pub(crate) requests: Requests,
}

/// What a reload replaces, and what it needs to build the next generation.
pub(crate) struct Reloader {
    /// The config file (`None`: the embedded default, nothing to re-read).
    path: Option<PathBuf>,
    cell: Arc<SharedCell>,
    plan: Plan,
    /// Ends the current generation's background tasks.
    generation: Trigger,
    /// The daemon's own stop, which ends every generation too.
    stop: Shutdown,
    parts: Parts,
}

/// The rule engine of `config`, with the `GLOBAL` group's choice for global mode.
pub(crate) fn engine_for(config: &Config, outbounds: &Outbounds) -> tpgate_core::rules::RuleEngine {
    match outbounds.builtin_global() {
        Some(global) => config
            .rule_engine()
            .with_global(tpgate_core::rules::Verdict::Proxy(global)),
        None => config.rule_engine(),
    }
}

impl Reloader {
    /// Starts the first generation's background tasks for `outbounds`.
    pub(crate) fn new(
        path: Option<PathBuf>,
        cell: Arc<SharedCell>,
        plan: Plan,
        config: &Config,
        (stop, parts): (Shutdown, Parts),
    ) -> Self {
        let outbounds = cell.load().outbounds.clone();
        let generation = start_generation(config, &outbounds, &stop, (&path, &parts.requests));
        Self {
            path,
            cell,
            plan,
            generation,
            stop,
            parts,
        }
    }

    /// Re-reads the config and swaps it in. When it is refused, nothing changed and the
    /// error holds the lines that say why (each also logged).
    pub(crate) async fn reload(
        &mut self,
        installed: &mut Installed,
        source: Source,
    ) -> Result<(), Vec<String>> {
        let res = self.try_reload(installed, source).await;
        let counter = match res {
            Ok(()) => &self.parts.stats.applied,
            Err(_) => &self.parts.stats.refused,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(lines) = &res {
            for l in lines {
                warn!("{l}");
            }
            warn!("reload refused: the running config stays");
        }
        res
    }

    async fn try_reload(
        &mut self,
        installed: &mut Installed,
        source: Source,
    ) -> Result<(), Vec<String>> {
        let one = |s: String| vec![s];
        let loaded = match source {
            Source::File(Some(p)) => {
                safe_path(&p, self.path.as_deref()).map_err(one)?;
                crate::cli::load(Some(&p))
            }
            Source::File(None) => match self.path.clone() {
                Some(p) => crate::cli::load(Some(&p)),
                None => {
                    return Err(one(
                        "running the embedded default config: there is no file to re-read \
                         (give a path or a payload)"
                            .into(),
                    ))
                }
            },
            Source::Payload(text) => crate::cli::load_text("payload", &text, self.path.as_deref()),
        };
        let (config, warnings) =
            loaded.map_err(|e| match e.downcast_ref::<crate::cli::ConfigErrors>() {
                Some(errors) => errors.lines().to_vec(),
                None => vec![format!("{e:#}")],
            })?;
        for w in warnings {
            warn!("{w}");
        }
        let (plan, geoip) = crate::daemon::plan_for(&config).map_err(|e| one(format!("{e:#}")))?;
        let outbounds = Outbounds::new(&config).map_err(|e| one(format!("outbounds: {e}")))?;
        let old_config = self.parts.config.load();
        for (what, changed) in [
            (
                "dns (its listening address and upstreams)",
                old_config.dns.listen != config.dns.listen
                    || old_config.dns.enable != config.dns.enable,
            ),
            (
                "external-controller",
                old_config.external_controller != config.external_controller,
            ),
            (
                "external-controller-unix",
                old_config.controller.unix != config.controller.unix,
            ),
        ] {
            if changed {
                warn!("reload: `{what}` changed; that takes effect at the next start");
            }
        }
        if same_interception(&self.plan, &plan) {
            if let Err(e) = installed.update_offload(&plan) {
                warn!("reload: the offloaded ranges stay as they were: {e:#}");
            }
        } else {
            self.replace_interception(installed, &plan).await?;
        }
        let old = self.cell.load();
        let io = HostIo {
            local: crate::local_addrs::LocalAddrs::new(),
            geoip,
            dns: self.parts.dns.clone(),
        };
        outbounds.warm_up();
        let next = Arc::new(Shared {
            engine: engine_for(&config, &outbounds),
            settings: Settings {
                tproxy_port: config.tproxy_port,
                sniffer: config.sniffer.clone(),
            },
            outbounds: outbounds.clone(),
            routing_mark: RoutingMark(config.routing_mark),
            io: Arc::new(io),
            registry: old.registry.clone(),
            limits: old.limits.clone(),
        });
        old.limits.set(&config.limits);
        self.cell.store(next);
        let generation = start_generation(
            &config,
            &outbounds,
            &self.stop,
            (&self.path, &self.parts.requests),
        );
        std::mem::replace(&mut self.generation, generation).fire();
        self.plan = plan;
        info!(
            rules = config.rules.len(),
            proxies = config.proxies.len(),
            groups = config.groups.len(),
            "config reloaded: new flows follow it, established ones keep going"
        );
        self.parts.config.store(config);
        Ok(())
    }

    /// Applies a changed intercept section: listeners, policy routing and rules, in the
    /// order that leaves no packet unintercepted or undeliverable.
    async fn replace_interception(
        &mut self,
        installed: &mut Installed,
        plan: &Plan,
    ) -> Result<(), Vec<String>> {
        let bound = self
            .parts
            .listening
            .bind_missing(plan)
            .map_err(|e| vec![format!("reload: {e:#}")])?;
        // Nothing points at the new listeners yet; they serve as soon as the rules do.
        self.parts.listening.start(bound);
        self.parts.plan_tx.send_replace(plan.clone());
        if let Err(e) = installed.replace(&self.plan, plan).await {
            self.parts.plan_tx.send_replace(self.plan.clone());
            self.parts.listening.retire_unwanted(&self.plan);
            return Err(vec![format!(
                "reload: the intercept section could not be applied: {e:#}"
            )]);
        }
        self.parts.listening.retire_unwanted(plan);
        self.parts.dns_access.set_lan(plan.lan_interfaces.clone());
        self.parts.lan_tx.send_replace(plan.lan_interfaces.clone());
        info!(
            port = plan.tproxy_port,
            local = plan.local,
            lan = ?plan.lan_interfaces,
            udp = plan.udp,
            ipv6 = plan.ipv6,
            "reload: interception replaced in one transaction"
        );
        Ok(())
    }
}

/// A path given through the API must be absolute and inside the running config's folder
/// or one of `SAFE_PATHS` (colon-separated, mihomo's variable): the controller must not
/// become a way to read any file on the machine.
fn safe_path(path: &std::path::Path, config: Option<&std::path::Path>) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("path {} is not an absolute path", path.display()));
    }
    let real = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut allowed: Vec<PathBuf> = std::env::var("SAFE_PATHS")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    if let Some(dir) = config.and_then(std::path::Path::parent) {
        allowed.push(dir.to_path_buf());
    }
    let inside = allowed
        .iter()
        .any(|dir| std::fs::canonicalize(dir).is_ok_and(|d| real.starts_with(d)));
    if inside {
        Ok(())
    } else {
        Err(format!(
            "path {} is not in the config's folder or SAFE_PATHS",
            path.display()
        ))
    }
}

/// Whether two plans intercept the same way (everything but the offloaded ranges).
fn same_interception(a: &Plan, b: &Plan) -> bool {
    let strip = |p: &Plan| Plan {
        offload: Default::default(),
        ..p.clone()
    };
    strip(a) == strip(b)
}

/// Health checks, provider refreshes and geodata downloads of one config generation, until
/// the returned trigger fires or the daemon stops.
fn start_generation(
    config: &Config,
    outbounds: &Arc<Outbounds>,
    stop: &Shutdown,
    (path, requests): (&Option<PathBuf>, &Requests),
) -> Trigger {
    let (trigger, generation) = shutdown::channel();
    let both = shutdown::either(generation, stop.clone());
    outbound::spawn_health_checks(outbounds, &both);
    crate::providers::spawn_refresh(config, outbounds, &both);
    crate::providers::spawn_proxy_refresh(config, outbounds, &both);
    crate::geodata::spawn(config, path.clone(), outbounds, requests.clone(), both);
    trigger
}
