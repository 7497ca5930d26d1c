//! Applying a [`Plan`] to the kernel and taking it back: the interception rules (an
//! nftables table owned by the daemon's libnftables context, or iptables chains) and the
//! tagged policy-routing rules and routes.

mod iptables;
pub(crate) mod lan_watch;
mod nft;
mod routing;
pub(crate) mod watch;

use anyhow::{Context as _, Result};
use tpgate_core::config::Backend;
use tpgate_core::plan::Plan;
use tracing::{debug, info, warn};

pub(crate) use iptables::remove_chains;
pub(crate) use nft::remove_table;
pub(crate) use routing::remove_tagged;

/// The interception rules, by backend.
enum Rules {
    Nft(nft::OwnedTable),
    Iptables(iptables::Chains),
}

/// The backend a plan's `backend` stands for on this machine.
enum Chosen {
    Nft,
    Iptables(iptables::Variant),
}

/// Everything `run` installed. Dropping it without [`Installed::teardown`] still removes the
/// rules (the kernel deletes the owned table when the nft context closes; the iptables
/// chains are removed by their drop); routes need the teardown.
pub(crate) struct Installed {
    rules: Rules,
}

/// `auto`: nftables when the kernel accepts an nftables command from this process.
fn nftables_usable() -> bool {
    match tpgate_sys::Nft::new().and_then(|mut nft| nft.run("list tables")) {
        Ok(_) => true,
        Err(e) => {
            debug!(error = %e, "nftables not usable");
            false
        }
    }
}

fn choose(plan: &Plan) -> Result<Chosen> {
    let iptables = || iptables::choose(plan.iptables_variant).map(Chosen::Iptables);
    let chosen = match plan.backend {
        Backend::Nftables => Chosen::Nft,
        Backend::Iptables => iptables()?,
        Backend::Auto if nftables_usable() => Chosen::Nft,
        Backend::Auto => iptables()?,
    };
    match &chosen {
        Chosen::Nft => {
            info!("interception backend: nftables");
            // A dead iptables instance's chains would TPROXY the same packets a second time
            // (or drop them); a live one's make this start fail.
            let stale = remove_chains().context("tpgate's iptables chains are in place")?;
            if stale > 0 {
                warn!(
                    chains = stale,
                    "removed iptables chains left by an earlier tpgate"
                );
            }
        }
        Chosen::Iptables(v) => info!("interception backend: {v}"),
    }
    Ok(chosen)
}

/// Installs routing first and the interception rules last, so interception starts only
/// when packets it marks can be delivered. On failure, what was installed is removed again.
pub(crate) async fn install(plan: &Plan) -> Result<Installed> {
    let chosen = choose(plan).context("choosing the interception backend")?;
    remove_tagged()
        .await
        .context("removing stale policy routing")?;
    routing::add(plan)
        .await
        .context("installing policy routing")?;
    let rules = match chosen {
        Chosen::Nft => nft::OwnedTable::create(plan)
            .map(Rules::Nft)
            .context("installing the nftables table"),
        Chosen::Iptables(variant) => iptables::Chains::install(plan, variant)
            .map(Rules::Iptables)
            .context("installing the iptables chains"),
    };
    match rules {
        Ok(rules) => Ok(Installed { rules }),
        Err(e) => {
            if let Err(e2) = remove_tagged().await {
                tracing::warn!(error = %e2, "could not remove policy routing after a failed install");
            }
            Err(e)
        }
    }
}

impl Installed {
    /// For the iptables backend, what keeps its chains in place (see [`watch::iptables`]);
    /// nftables needs none: its owned table cannot be removed by others.
    pub(crate) fn iptables_guard(&self) -> Option<iptables::Guard> {
        match &self.rules {
            Rules::Nft(_) => None,
            Rules::Iptables(c) => Some(c.guard()),
        }
    }

    /// A reload whose intercept section changed: `old` is replaced by `new`. The new policy
    /// routing goes in first, then the rules are swapped in one transaction (nftables) or
    /// one `iptables-restore` per family, then routing that only `old` used goes. A marked
    /// packet finds its route at every moment and no packet passes unintercepted. The
    /// routing watcher must follow `new` before this (it would restore `old`'s objects).
    pub(crate) async fn replace(&mut self, old: &Plan, new: &Plan) -> Result<()> {
        routing::add_missing(new)
            .await
            .context("adding the new policy routing")?;
        let swapped = match &mut self.rules {
            Rules::Nft(t) => t.replace(new).context("replacing the nftables table"),
            // iptables-save/-restore are processes that may wait for the xtables lock: off
            // the worker, so the relays it runs keep moving (the daemon's runtime is
            // multi-threaded).
            Rules::Iptables(c) => tokio::task::block_in_place(|| c.replace(new))
                .context("replacing the iptables chains"),
        };
        if let Err(e) = swapped {
            // The old rules are still in force: take back what was added for the new ones.
            if let Err(e2) = routing::remove_unlisted(old).await {
                warn!("could not remove the new policy routing after a failed swap: {e2:#}");
            }
            return Err(e);
        }
        let gone = routing::remove_unlisted(new)
            .await
            .context("removing the old policy routing")?;
        debug!(objects = gone, "old policy routing removed");
        Ok(())
    }

    /// Replaces the kernel-offloaded DIRECT ranges (a reload), in one transaction; the
    /// iptables backend offloads nothing.
    pub(crate) fn update_offload(&mut self, plan: &Plan) -> Result<()> {
        match &mut self.rules {
            Rules::Nft(t) => t.update_offload(plan),
            Rules::Iptables(_) => Ok(()),
        }
    }

    /// Removes the interception rules and the policy routing.
    pub(crate) async fn teardown(self) -> Result<()> {
        let r1 = match self.rules {
            Rules::Nft(t) => t.delete().context("deleting the nftables table"),
            Rules::Iptables(c) => c.remove().context("removing the iptables chains"),
        };
        let r2 = remove_tagged().await;
        r1?;
        r2.context("removing policy routing")?;
        Ok(())
    }
}
