//! Keeps tpgate's policy routing in place while it runs. Network managers remove routing
//! rules they did not create (systemd-networkd does by default), and a user may run
//! `ip rule flush`: without the fwmark rule and the `local` route, marked packets are
//! forwarded instead of delivered to tpgate. The watcher listens to rtnetlink rule and route
//! events and restores what disappeared, within a second, logging the first time.
//!
//! The nftables table needs no watching: with the `owner` flag the kernel refuses other
//! programs' attempts to delete or flush it, and `nft flush ruleset` leaves it alone.
//! iptables chains have no such protection: [`iptables`] checks them every second and puts
//! them back.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::rule::RuleAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{AsyncSocket as _, SocketAddr};
use tpgate_core::plan::{Plan, ROUTE_PROTO};
use tracing::{debug, warn};

use crate::shutdown::Shutdown;

/// rtnetlink multicast groups, as the legacy bitmask of `bind` (group n is bit n-1):
/// RTNLGRP_IPV4_ROUTE (7), RTNLGRP_IPV4_RULE (8), RTNLGRP_IPV6_ROUTE (11), RTNLGRP_IPV6_RULE (19).
const GROUPS: u32 = (1 << 6) | (1 << 7) | (1 << 10) | (1 << 18);
/// A burst of deletions (a flush) is answered once.
const SETTLE: Duration = Duration::from_millis(100);
/// After the first report, at most one log line per this period while others keep deleting.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// `plan`: the plan in force (a reload that changes the intercept section sends the next
/// one before it swaps anything).
pub(crate) async fn run(
    plan: tokio::sync::watch::Receiver<Plan>,
    shutdown: Shutdown,
) -> Result<()> {
    let (mut conn, _handle, mut events) =
        rtnetlink::new_connection().context("opening rtnetlink")?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, GROUPS))
        .context("subscribing to routing events")?;
    tokio::spawn(conn);
    let mut last_log: Option<Instant> = None;
    let mut restored = 0u64;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            () = shutdown.wait() => return Ok(()),
        };
        let Some((msg, _)) = ev else { return Ok(()) };
        if !is_our_deletion(&msg.payload) {
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, events.next()).await {}
        if shutdown.is_fired() {
            return Ok(());
        }
        let current = plan.borrow().clone();
        match super::routing::add_missing(&current).await {
            Ok(0) => {}
            Ok(n) => {
                restored += 1;
                if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    warn!(
                        objects = n,
                        incidents = restored,
                        "another program removed tpgate's policy routing; restored it"
                    );
                    last_log = Some(Instant::now());
                }
            }
            Err(e) => warn!("could not restore policy routing: {e:#}"),
        }
    }
}

fn is_our_deletion(p: &NetlinkPayload<RouteNetlinkMessage>) -> bool {
    let ours = RouteProtocol::from(ROUTE_PROTO);
    match p {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRule(r)) => {
            r.attributes.contains(&RuleAttribute::Protocol(ours))
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(r)) => r.header.protocol == ours,
        other => {
            debug!("routing event ignored: {other:?}");
            false
        }
    }
}

/// How often the iptables chains are checked (a firewall reload is noticed within this).
const IPT_EVERY: Duration = Duration::from_secs(1);

/// Keeps the iptables backend's chains in place until shutdown.
pub(crate) async fn iptables(guard: super::iptables::Guard, shutdown: Shutdown) {
    let guard = std::sync::Arc::new(guard);
    let mut last_log: Option<Instant> = None;
    let mut restored = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep(IPT_EVERY) => {}
            () = shutdown.wait() => return,
        }
        let g = guard.clone();
        let fixed = tokio::task::spawn_blocking(move || g.reassert()).await;
        if shutdown.is_fired() {
            return;
        }
        match fixed {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => {
                restored += 1;
                if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    warn!(
                        incidents = restored,
                        "another program removed tpgate's iptables rules; restored them"
                    );
                    last_log = Some(Instant::now());
                }
            }
            Ok(Err(e)) => warn!("could not check tpgate's iptables rules: {e:#}"),
            Err(e) => warn!("iptables watcher task failed: {e}"),
        }
    }
}
