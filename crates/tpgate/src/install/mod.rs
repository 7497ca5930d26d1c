//! Applying a [`Plan`] to the kernel and taking it back: the nftables table (owned by the
//! daemon's libnftables context) and the tagged policy-routing rules and routes.

mod nft;
mod routing;
pub(crate) mod watch;

use anyhow::{Context as _, Result};
use tpgate_core::plan::Plan;

pub(crate) use nft::remove_table;
pub(crate) use routing::remove_tagged;

/// Everything `run` installed. Dropping it without [`Installed::teardown`] still removes the
/// table (the kernel does, when the nft context closes); routes need the teardown.
pub(crate) struct Installed {
    nft: nft::OwnedTable,
}

/// Installs routing first and the nftables table last, so interception starts only when
/// packets it marks can be delivered. On failure, what was installed is removed again.
pub(crate) async fn install(plan: &Plan) -> Result<Installed> {
    remove_tagged()
        .await
        .context("removing stale policy routing")?;
    routing::add(plan)
        .await
        .context("installing policy routing")?;
    match nft::OwnedTable::create(plan) {
        Ok(nft) => Ok(Installed { nft }),
        Err(e) => {
            if let Err(e2) = remove_tagged().await {
                tracing::warn!(error = %e2, "could not remove policy routing after a failed install");
            }
            Err(e).context("installing the nftables table")
        }
    }
}

impl Installed {
    /// Removes the table and the policy routing.
    pub(crate) async fn teardown(self) -> Result<()> {
        let r1 = self.nft.delete();
        let r2 = remove_tagged().await;
        r1.context("deleting the nftables table")?;
        r2.context("removing policy routing")?;
        Ok(())
    }
}
