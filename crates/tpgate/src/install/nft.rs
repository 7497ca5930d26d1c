//! tpgate's nftables table, created with the `owner` flag through a libnftables context
//! that lives as long as the daemon.

use anyhow::{bail, Result};
use tpgate_core::plan::{render_nft, render_offload_update, Plan, NFT_FAMILY, NFT_TABLE};
use tpgate_sys::{Nft, NftError};

/// The table, alive while this value (and its netlink socket) is.
pub(super) struct OwnedTable {
    nft: Nft,
}

impl OwnedTable {
    pub(super) fn create(plan: &Plan) -> Result<Self> {
        let mut nft = Nft::new()?;
        // A table of that name that we cannot delete belongs to a live tpgate.
        if let Err(e) = nft.run(&format!("list table {NFT_FAMILY} {NFT_TABLE}")) {
            tracing::debug!(error = %e, "no previous table");
        } else if let Err(e) = nft.run(&format!("delete table {NFT_FAMILY} {NFT_TABLE}")) {
            bail!("table {NFT_FAMILY} {NFT_TABLE} exists and cannot be removed (is another tpgate running?): {e}");
        }
        nft.run(&render_nft(plan))?;
        Ok(Self { nft })
    }

    /// Swaps the offloaded ranges for `plan`'s in one transaction (the sets exist whenever
    /// `offload-direct` is on).
    pub(super) fn update_offload(&mut self, plan: &Plan) -> Result<()> {
        if plan.offload_enabled {
            self.nft.run(&render_offload_update(plan))?;
        }
        Ok(())
    }

    /// Replaces the whole table with `plan`'s (a reload that changed the intercept section)
    /// in one transaction: no packet sees a moment without interception.
    pub(super) fn replace(&mut self, plan: &Plan) -> Result<()> {
        let script = format!(
            "delete table {NFT_FAMILY} {NFT_TABLE}\n{}",
            render_nft(plan)
        );
        self.nft.run(&script)?;
        Ok(())
    }

    pub(super) fn delete(mut self) -> Result<()> {
        self.nft
            .run(&format!("delete table {NFT_FAMILY} {NFT_TABLE}"))?;
        Ok(())
    }
}

/// `down`: removes a table left by an instance (an owned table of a dead process is already
/// gone). Returns whether there was one.
pub(crate) fn remove_table() -> Result<bool> {
    let mut nft = Nft::new()?;
    if nft
        .run(&format!("list table {NFT_FAMILY} {NFT_TABLE}"))
        .is_err()
    {
        return Ok(false);
    }
    match nft.run(&format!("delete table {NFT_FAMILY} {NFT_TABLE}")) {
        Ok(_) => Ok(true),
        Err(NftError::NotPermitted(msg) | NftError::Busy(msg)) => {
            bail!("table {NFT_FAMILY} {NFT_TABLE} is owned by a running tpgate; stop that process instead ({msg})")
        }
        Err(e) => Err(e.into()),
    }
}
