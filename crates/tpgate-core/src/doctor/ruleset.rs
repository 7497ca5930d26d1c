//! The snapshot's rulesets of both worlds read into one list of [`Chain`]s: every
//! `iptables-save` dump and the `nft -j` ruleset, each through its own parser. Kept apart
//! from `model`, which the parsers build on, so the model never imports them.

use std::collections::HashSet;

use super::model::{Chain, Fam};
use super::{iptables, nft_json, IptVariant, Snapshot};
use crate::plan::Family;

/// Every chain of the snapshot. nftables tables that iptables-nft manages are skipped when
/// an iptables-nft dump covers them, so no rule is counted twice.
pub(super) fn load(snap: &Snapshot) -> (Vec<Chain>, Vec<String>) {
    let mut notes = Vec::new();
    let mut chains = Vec::new();
    let mut ipt_nft_tables: HashSet<(bool, String)> = HashSet::new();
    for d in &snap.iptables {
        let parsed = iptables::parse(d);
        if d.variant == IptVariant::Nft {
            for c in &parsed {
                ipt_nft_tables.insert((
                    d.family == Family::V6,
                    c.origin.rsplit(' ').next().unwrap_or("").to_owned(),
                ));
            }
        }
        chains.extend(parsed);
    }
    if let Some(json) = &snap.nft_json {
        match nft_json::parse(json) {
            Ok(nft) => chains.extend(nft.into_iter().filter(|c| {
                let table = c.origin.rsplit(' ').next().unwrap_or("");
                match c.fam {
                    Fam::V4 => !ipt_nft_tables.contains(&(false, table.to_owned())),
                    Fam::V6 => !ipt_nft_tables.contains(&(true, table.to_owned())),
                    Fam::Both => true,
                }
            })),
            Err(e) => notes.push(format!("nft -j list ruleset output unreadable: {e}")),
        }
    }
    (chains, notes)
}
