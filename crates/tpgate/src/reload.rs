//! Hot reload (`SIGHUP`, `tpgate reload`): the config file is read and checked again; a
//! bad one is refused with its `FILE:LINE:COL` lines and the running config stays. A good
//! one is swapped in for new flows (rules, proxies, groups, providers, sniffer settings, the
//! kernel-offloaded ranges) while established TCP connections and UDP flows keep the
//! rules and routes they started with. Each config generation's background tasks (health
//! checks, provider refreshes) end when the next one takes over.
//!
//! Not here yet: changes to the `intercept` section other than the offloaded ranges
//! (ports, marks, interfaces, bypass), the DNS server's settings and the controller's
//! address take effect at the next start, and the log says so.

use std::path::PathBuf;
use std::sync::Arc;

use tpgate_core::config::Config;
use tpgate_core::flow::Settings;
use tpgate_core::plan::Plan;
use tracing::{info, warn};

use crate::install::Installed;
use crate::outbound::{self, Outbounds};
use crate::relay::{HostIo, Shared, SharedCell};
use crate::shutdown::{self, Shutdown, Trigger};

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
    /// The DNS server's tables (kept across reloads: its settings need a restart).
    dns: Option<Arc<crate::dns::Dns>>,
}

impl Reloader {
    /// Starts the first generation's background tasks for `outbounds`.
    pub(crate) fn new(
        path: Option<PathBuf>,
        cell: Arc<SharedCell>,
        plan: Plan,
        config: &Config,
        (stop, dns): (Shutdown, Option<Arc<crate::dns::Dns>>),
    ) -> Self {
        let outbounds = cell.load().outbounds.clone();
        let generation = start_generation(config, &outbounds, &stop);
        Self {
            path,
            cell,
            plan,
            generation,
            stop,
            dns,
        }
    }

    /// Re-reads the config and swaps it in; false when it was refused (and nothing
    /// changed).
    pub(crate) async fn reload(&mut self, installed: &mut Installed) -> bool {
        let Some(path) = self.path.clone() else {
            info!("reload: running the embedded default config; nothing to re-read");
            return false;
        };
        let (config, warnings) = match crate::cli::load(Some(&path)) {
            Ok(loaded) => loaded,
            Err(e) => {
                match e.downcast_ref::<crate::cli::ConfigErrors>() {
                    Some(errors) => errors.lines().iter().for_each(|l| warn!("{l}")),
                    None => warn!("{e:#}"),
                }
                warn!("reload refused: the running config stays");
                return false;
            }
        };
        for w in warnings {
            warn!("{w}");
        }
        let (plan, geoip) = match crate::daemon::plan_for(&config) {
            Ok(p) => p,
            Err(e) => {
                warn!("reload refused ({e:#}): the running config stays");
                return false;
            }
        };
        let outbounds = match Outbounds::new(&config) {
            Ok(o) => o,
            Err(e) => {
                warn!("reload refused: outbounds: {e}; the running config stays");
                return false;
            }
        };
        if !same_interception(&self.plan, &plan) {
            warn!(
                "reload: the intercept section (ports, marks, interfaces, bypass, udp, ipv6) changed; \
                 that takes effect at the next start; rules, proxies and groups are applied now"
            );
        }
        if let Err(e) = installed.update_offload(&plan) {
            warn!("reload: the offloaded ranges stay as they were: {e:#}");
        }
        let old = self.cell.load();
        let io = HostIo {
            local: crate::local_addrs::LocalAddrs::new(),
            geoip,
            dns: self.dns.clone(),
        };
        outbounds.warm_up();
        let next = Arc::new(Shared {
            engine: config.rule_engine(),
            settings: Settings {
                tproxy_port: old.settings.tproxy_port,
                sniffer: config.sniffer.clone(),
            },
            outbounds: outbounds.clone(),
            routing_mark: old.routing_mark,
            io: Arc::new(io),
            registry: old.registry.clone(),
        });
        self.cell.store(next);
        let generation = start_generation(&config, &outbounds, &self.stop);
        std::mem::replace(&mut self.generation, generation).fire();
        self.plan = Plan {
            offload: plan.offload,
            ..self.plan.clone()
        };
        info!(
            rules = config.rules.len(),
            proxies = config.proxies.len(),
            groups = config.groups.len(),
            "config reloaded: new flows follow it, established ones keep going"
        );
        true
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

/// Health checks and provider refreshes of one config generation, until the returned
/// trigger fires or the daemon stops.
fn start_generation(config: &Config, outbounds: &Arc<Outbounds>, stop: &Shutdown) -> Trigger {
    let (trigger, generation) = shutdown::channel();
    let both = shutdown::either(generation, stop.clone());
    outbound::spawn_health_checks(outbounds, &both);
    crate::providers::spawn_refresh(config, outbounds, &both);
    crate::providers::spawn_proxy_refresh(config, outbounds, &both);
    trigger
}
