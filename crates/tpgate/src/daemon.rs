//! `tpgate run`: bind the listeners, install interception, serve until SIGINT/SIGTERM, and
//! take everything back.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tpgate_core::config::Config;
use tpgate_core::flow::Settings;
use tpgate_core::plan::Plan;
use tracing::{info, warn};

use crate::listen::Listening;
use crate::local_addrs::LocalAddrs;
use crate::outbound::Outbounds;
use crate::relay::registry::Registry;
use crate::relay::{self, RoutingMark, Shared, SharedCell};
use crate::reload::{ConfigCell, Parts, Reloader};
use crate::{install, shutdown};

/// `path`: the config file, re-read on SIGHUP (`None`: the embedded default).
pub(crate) async fn run(config: Config, path: Option<std::path::PathBuf>) -> Result<()> {
    // Before anything changes (listeners with SO_REUSEPORT could even share a running
    // instance's port): a second instance must leave the running one's state alone.
    let _instance = crate::instance::InstanceLock::acquire()?;
    let (plan, geoip) = plan_for(&config)?;
    if !plan.offload.direct.is_empty() {
        info!(
            ranges = plan.offload.direct.ranges().len(),
            "offload-direct: flows to destinations DIRECT by address alone are forwarded by the kernel (counted, not listed)"
        );
        if !plan.lan_interfaces.is_empty() {
            check_masquerade();
        }
    }
    check_sysctls(&plan);
    raise_fd_limit();
    let listeners = crate::listen::bind(&plan)?;
    let api = bind_controller(&config).await?;
    // Bound before interception is installed: a busy DNS port fails the start cleanly.
    let dns = match (config.dns.enable, config.dns.listen) {
        (true, Some(addr)) => Some((
            crate::dns::Dns::new(&config.dns, config.routing_mark, &config.state_file)?,
            crate::dns::bind(addr, config.routing_mark)?,
        )),
        _ => None,
    };
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let outbounds = Outbounds::new(&config)?;
    let dns_access = Arc::new(crate::dns::Access::new(
        config.dns.allow_wan,
        config.intercept.lan_interfaces.clone(),
    ));
    let mut installed = install::install(&plan).await?;

    let io = relay::HostIo {
        local: LocalAddrs::new(),
        geoip,
        dns: dns.as_ref().map(|(d, _)| d.clone()),
    };
    let engine = crate::reload::engine_for(&config, &outbounds);
    let shared = Arc::new(Shared {
        engine,
        settings: Settings {
            tproxy_port: config.tproxy_port,
            sniffer: config.sniffer.clone(),
        },
        outbounds: outbounds.clone(),
        routing_mark: RoutingMark(config.routing_mark),
        io: Arc::new(io),
        registry: Registry::new(),
        limits: relay::limits::Limits::new(&config.limits, open_files_limit()),
    });
    let dns_server = dns.as_ref().map(|(d, _)| d.clone());
    crate::privileges::report(shared.engine.needs_process());
    let (trigger, stop) = shutdown::channel();
    let dns_tables = dns.as_ref().map(|(d, _)| d.clone());
    let cell = SharedCell::new(shared.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let nat = relay::udp::NatTable::new(&cell, crate::listen::acceptors());
    let mut listening = Listening::new(cell.clone(), nat.clone(), stop.clone());
    listening.start(listeners);
    tasks.spawn(nat.clone().sweep(stop.clone()));
    tasks.spawn(relay::gauge::trim_memory(stop.clone()));
    if let Some((d, sockets)) = dns {
        tasks.spawn(crate::dns::serve(
            sockets,
            d.clone(),
            dns_access.clone(),
            stop.clone(),
        ));
        tasks.spawn(d.persist(stop.clone()));
    }
    outbounds.warm_up();
    let (plan_tx, plan_rx) = tokio::sync::watch::channel(plan.clone());
    let (lan_tx, lan_rx) = tokio::sync::watch::channel(plan.lan_interfaces.clone());
    {
        let stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = install::lan_watch::run(lan_rx, stop).await {
                warn!("lan interface watcher stopped: {e:#}");
            }
        });
    }
    {
        let stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = install::watch::run(plan_rx, stop).await {
                warn!("routing watcher stopped: {e:#}");
            }
        });
    }
    if let Some(guard) = installed.iptables_guard() {
        tasks.spawn(install::watch::iptables(guard, stop.clone()));
    }
    let config_cell = ConfigCell::new(config.clone());
    let reload_stats = Arc::new(crate::reload::ReloadStats::default());
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<crate::reload::Request>(4);
    let mut reloader = Reloader::new(
        path.clone(),
        cell.clone(),
        plan.clone(),
        &config,
        (
            stop.clone(),
            Parts {
                listening,
                plan_tx,
                lan_tx,
                dns: dns_tables,
                dns_access: dns_access.clone(),
                config: config_cell.clone(),
                stats: reload_stats.clone(),
                requests: reload_tx.clone(),
            },
        ),
    );
    if api.tcp.is_some() || api.unix.is_some() {
        let ui = config.controller.ui.as_ref().map(|ui| {
            let dir = std::path::Path::new(ui);
            match &config.controller.ui_name {
                Some(name) => dir.join(name),
                None => dir.to_path_buf(),
            }
        });
        match (&ui, &config.controller.ui_url) {
            (Some(dir), Some(url)) if !dir.join("index.html").is_file() => {
                let (dir, url, o, stop) =
                    (dir.clone(), url.clone(), outbounds.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        r = crate::dashboard::fetch(&dir, &url, &o) => match r {
                            Ok(n) => info!("external-ui: {n} files from {url} in {}", dir.display()),
                            Err(e) => warn!("external-ui: downloading {url}: {e:#}"),
                        },
                        () = stop.wait() => {}
                    }
                });
            }
            (Some(dir), None) if !dir.is_dir() => {
                warn!(
                    "external-ui: {} is not a directory; /ui/ will answer 404",
                    dir.display()
                );
            }
            _ => {}
        }
        let cx = crate::controller::Context {
            config: config_cell.clone(),
            reload: Some(reload_tx.clone()),
            config_path: path.clone(),
            cell: cell.clone(),
            dns: dns_server,
            ui,
            metrics: crate::controller::Metrics {
                dns_access: Some(dns_access.clone()),
                nat: Some(nat.clone()),
                reloads: Some(reload_stats.clone()),
            },
        };
        let api_state = crate::controller::Api::new(cx, stop.clone());
        tasks.spawn(crate::controller::serve(api, api_state));
    }
    info!(
        port = plan.tproxy_port,
        local = plan.local,
        lan = ?plan.lan_interfaces,
        udp = plan.udp,
        ipv6 = plan.ipv6,
        "ready: intercepting"
    );

    loop {
        tokio::select! {
            _ = sigterm.recv() => break info!("SIGTERM: stopping"),
            _ = sigint.recv() => break info!("SIGINT: stopping"),
            _ = sighup.recv() => {
                info!("SIGHUP: reloading the config");
                let _ = reloader.reload(&mut installed, crate::reload::Source::File(None)).await;
            }
            Some(req) = reload_rx.recv() => {
                info!("reload asked for by the controller");
                let res = reloader.reload(&mut installed, req.source).await;
                let _ = req.reply.send(res);
            }
        }
    }
    trigger.fire();
    // Interception goes first, so no new flow is sent to listeners that are closing.
    let res = installed.teardown().await;
    while tasks.join_next().await.is_some() {}
    if let Some(path) = &config.controller.unix {
        let _ = std::fs::remove_file(path);
    }
    match &res {
        Ok(()) => info!("interception removed"),
        Err(e) => warn!("teardown incomplete: {e:#}; run `tpgate down`"),
    }
    res
}

/// The plan of `config` and the GeoIP database its rules need (opened once: `GEOIP,CC`
/// rules read it per flow, and `GEOIP,CC,DIRECT` ones are expanded into ranges for the
/// kernel offload).
pub(crate) fn plan_for(config: &Config) -> Result<(Plan, Option<crate::geoip::GeoIp>)> {
    let geoip = crate::geoip::GeoIp::load(config)?;
    let plan = match &geoip {
        Some(g) => Plan::with_countries(config, &|cc| Some(g.ranges(cc))),
        None => Plan::new(config),
    };
    Ok((plan, geoip))
}

/// Offloaded LAN flows leave with the client's own address: without a masquerade or SNAT
/// rule on the way out, replies from the internet cannot find a private LAN.
fn check_masquerade() {
    let ruleset = tpgate_sys::Nft::new()
        .and_then(|mut n| n.run("list ruleset"))
        .unwrap_or_default();
    let iptables = ["iptables-save", "iptables-legacy-save"]
        .iter()
        .filter_map(|t| {
            std::process::Command::new(t)
                .args(["-t", "nat"])
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .collect::<String>();
    let text = format!("{ruleset}\n{iptables}");
    if !(text.contains("masquerade")
        || text.contains("MASQUERADE")
        || text.contains("snat")
        || text.contains("SNAT"))
    {
        warn!(
            "offload-direct: LAN flows to offloaded destinations are forwarded with the client's own address, \
             and no masquerade or SNAT rule was found; add one on the WAN side \
             (nft: `oifname \"WAN\" masquerade` in a nat postrouting chain), route the LAN, \
             or set `intercept.offload-direct: false`"
        );
    }
}

/// The controller's listeners (TCP and unix socket), bound before anything is installed so
/// a busy port is a clean startup error.
async fn bind_controller(config: &Config) -> Result<crate::controller::Listeners> {
    let mut out = crate::controller::Listeners::default();
    if let Some(addr) = config.external_controller {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding external-controller on {addr}"))?;
        info!("external controller on http://{addr}");
        out.tcp = Some(l);
    }
    if let Some(path) = &config.controller.unix {
        use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
        let path = std::path::Path::new(path);
        // A socket file left by an earlier run would make the bind fail.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("creating {} for external-controller-unix", dir.display())
            })?;
        }
        let l = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding external-controller-unix on {}", path.display()))?;
        // No secret on the socket (mihomo's rule): only root and its group may open it.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("chmod {}", path.display()))?;
        info!("external controller on unix:{}", path.display());
        out.unix = Some(l);
    }
    Ok(out)
}

/// Every relayed TCP connection holds two descriptors and every UDP flow one: the usual
/// soft limit of 1024 would cap a gateway at a few hundred connections. Raise the soft
/// limit to the hard one (systemd's default hard limit is 524288).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!("open files limit raised from {soft} to {hard}"),
            Err(e) => warn!("cannot raise the open files limit from {soft}: {e}"),
        },
        Ok((soft, _)) if soft < 65_536 => warn!(
            "the open files limit is {soft}: at most about {} TCP connections; raise it \
             (LimitNOFILE= in the unit, ulimit -n)",
            soft / 2
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot read the open files limit: {e}"),
    }
}

/// The open-files limit in force (after [`raise_fd_limit`]); the default
/// `limits.max-connections` follows it.
fn open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

fn check_sysctls(plan: &Plan) {
    for s in &plan.sysctls {
        let path = format!("/proc/sys/{}", s.key.replace('.', "/"));
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == s.want => {}
            Ok(v) => warn!(
                "sysctl {} is {} (want {}): {}; tpgate does not change it",
                s.key,
                v.trim(),
                s.want,
                s.why
            ),
            Err(e) => warn!("cannot read sysctl {}: {e}", s.key),
        }
    }
}
