//! tpgate's iptables chains: applied with `iptables-restore --noflush` (and `ip6tables-`)
//! of the variant the system uses, one transaction per table; read back with
//! `iptables-save`. iptables has no `owner` flag, so chains outlive a killed daemon: an
//! earlier instance's chains are replaced at start, [`Chains`] removes them on teardown and
//! on drop, and `tpgate down` removes them from both variants.
//!
//! Without an owner flag, the chain `TPGATE_PID_<pid>` records which process installed the
//! chains: a second `run` and `down` refuse to touch the chains of a tpgate that is alive.
//!
//! The two variants are two rule sets in the kernel (x_tables and nf_tables), both
//! evaluated; tpgate refuses to start in one while its chains exist in the other, so the
//! same packet is never handled twice.

use std::fmt;
use std::io::{ErrorKind, Write as _};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};
use tpgate_core::config::IptablesVariant;
use tpgate_core::plan::{ipt_remove, ipt_replace, Family, IptState, Plan};
use tracing::{debug, info, warn};

/// Seconds `iptables-restore` waits for the xtables lock another program holds.
const LOCK_WAIT: &str = "10";

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// One iptables implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    Nft,
    Legacy,
}

impl Variant {
    const ALL: [Self; 2] = [Self::Nft, Self::Legacy];

    fn other(self) -> Self {
        match self {
            Self::Nft => Self::Legacy,
            Self::Legacy => Self::Nft,
        }
    }

    /// `iptables-nft-save`, `ip6tables-legacy-restore`...
    fn binary(self, family: Family, tool: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let v = match self {
            Self::Nft => "nft",
            Self::Legacy => "legacy",
        };
        format!("{base}-{v}-{tool}")
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nft => "iptables-nft",
            Self::Legacy => "iptables-legacy",
        })
    }
}

/// Why iptables-legacy cannot be used by this process: it is not root. `*-legacy-save`
/// lists the tables from `/proc/net/ip(6)_tables_names` and `*-legacy-restore` takes the
/// xtables lock `/run/xtables.lock`, both root's alone (iptables-nft needs neither).
#[derive(Debug, thiserror::Error)]
#[error(
    "iptables-legacy needs root: its table list {path} and the xtables lock \
     /run/xtables.lock are root's alone; use `iptables-variant: nft` or `backend: nftables`, \
     or run tpgate as root"
)]
struct LegacyNeedsRoot {
    path: &'static str,
}

/// Fails with [`LegacyNeedsRoot`] when this process may not read the legacy table list.
fn legacy_readable(family: Family) -> Result<(), LegacyNeedsRoot> {
    let path = match family {
        Family::V4 => "/proc/net/ip_tables_names",
        Family::V6 => "/proc/net/ip6_tables_names",
    };
    match std::fs::File::open(path) {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(LegacyNeedsRoot { path }),
        _ => Ok(()),
    }
}

/// Logs that a variant's rules could not be read: a warning, except for iptables-legacy
/// without root, which cannot have been used by this user (said once, at info).
fn unreadable(variant: Variant, e: &anyhow::Error) {
    if e.downcast_ref::<LegacyNeedsRoot>().is_some() {
        info!(
            "iptables-legacy rules not checked ({e}); if a tpgate running as root used \
             iptables-legacy here, run `tpgate down` as root"
        );
    } else {
        warn!("cannot read the {variant} rules: {e:#}");
    }
}

/// tpgate's chains of one family as `<variant>-save` shows them; `None` when the variant's
/// binaries are not installed.
fn state(variant: Variant, family: Family) -> Result<Option<IptState>> {
    if variant == Variant::Legacy {
        legacy_readable(family)?;
    }
    let bin = variant.binary(family, "save");
    let out = match Command::new(&bin).stdin(Stdio::null()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("running {bin}")),
    };
    if !out.status.success() {
        bail!("{bin} failed: {}", stderr(&out));
    }
    Ok(Some(IptState::parse(&String::from_utf8_lossy(&out.stdout))))
}

/// Both families' states, when the variant is installed.
fn states(variant: Variant) -> Result<Option<[IptState; 2]>> {
    let (Some(v4), Some(v6)) = (state(variant, Family::V4)?, state(variant, Family::V6)?) else {
        return Ok(None);
    };
    Ok(Some([v4, v6]))
}

/// Feeds `script` to `<variant>-restore --noflush`.
fn restore(variant: Variant, family: Family, script: &str) -> Result<()> {
    let bin = variant.binary(family, "restore");
    debug!("{bin} --noflush:\n{script}");
    let mut child = Command::new(&bin)
        .args(["--noflush", "--wait", LOCK_WAIT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {bin} (is the iptables package installed?)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .with_context(|| format!("writing to {bin}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {bin}"))?;
    if !out.status.success() {
        bail!("{bin} --noflush rejected the rules: {}", stderr(&out));
    }
    Ok(())
}

fn stderr(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if text.is_empty() {
        format!("exit status {}", out.status)
    } else {
        text
    }
}

/// A live tpgate other than this process that owns chains in `states`.
fn live_owner(states: &[IptState]) -> Option<u32> {
    let me = std::process::id();
    states
        .iter()
        .flat_map(IptState::owners)
        .filter(|&pid| pid != me)
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "tpgate")
        })
}

/// Fails when a live tpgate owns chains in this variant.
fn refuse_live_owner(variant: Variant, states: &[IptState], what: &str) -> Result<()> {
    if let Some(pid) = live_owner(states) {
        bail!("tpgate's chains in {variant} belong to a running tpgate (pid {pid}); {what}");
    }
    Ok(())
}

/// The variant to use: the configured one, or the one the system's firewall uses (the
/// one that holds rules, else the one `iptables` points to). Fails when tpgate's chains
/// are in the other variant.
pub(super) fn choose(wanted: IptablesVariant) -> Result<Variant> {
    // A variant whose rules cannot be read (its kernel side missing) cannot be used, and
    // cannot hold chains either.
    if wanted == IptablesVariant::Legacy {
        legacy_readable(Family::V4)?;
    }
    let read = |v: Variant| {
        states(v).unwrap_or_else(|e| {
            unreadable(v, &e);
            None
        })
    };
    let (nft, legacy) = (read(Variant::Nft), read(Variant::Legacy));
    let variant = match wanted {
        IptablesVariant::Nft => Variant::Nft,
        IptablesVariant::Legacy => Variant::Legacy,
        IptablesVariant::Auto => {
            let rules = |s: &Option<[IptState; 2]>| {
                s.as_ref()
                    .map_or(0, |s| s.iter().map(|f| f.foreign_rules).sum::<usize>())
            };
            match (nft.is_some(), legacy.is_some()) {
                (false, false) => {
                    bail!("neither iptables-nft nor iptables-legacy is usable (apt-get install iptables)")
                }
                (true, false) => Variant::Nft,
                (false, true) => Variant::Legacy,
                (true, true) => match (rules(&nft), rules(&legacy)) {
                    (n, 0) if n > 0 => Variant::Nft,
                    (0, l) if l > 0 => Variant::Legacy,
                    _ => default_variant(),
                },
            }
        }
    };
    let (mine, theirs) = match variant {
        Variant::Nft => (&nft, &legacy),
        Variant::Legacy => (&legacy, &nft),
    };
    if mine.is_none() {
        bail!(
            "{variant} is not usable: {} is missing or failed",
            variant.binary(Family::V4, "save")
        );
    }
    for (v, states) in [(Variant::Nft, &nft), (Variant::Legacy, &legacy)] {
        if let Some(states) = states {
            refuse_live_owner(v, states, "stop that process first")?;
        }
    }
    if let Some(states) = theirs {
        let names: Vec<String> = states.iter().flat_map(IptState::chain_names).collect();
        if !names.is_empty() {
            bail!(
                "tpgate's chains exist in {} ({}), but this instance uses {variant}; \
                 mixing both would handle packets twice. Stop the other instance or run \
                 `tpgate down`, or set intercept.iptables-variant to match",
                variant.other(),
                names.join(", ")
            );
        }
    }
    Ok(variant)
}

/// The variant `iptables` (the alternatives link) runs, from `iptables -V`:
/// `iptables v1.8.9 (nf_tables)` or `(legacy)`; nft when it cannot be told.
fn default_variant() -> Variant {
    match Command::new("iptables")
        .arg("-V")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("legacy") => Variant::Legacy,
        Ok(_) => Variant::Nft,
        Err(e) => {
            debug!("iptables -V: {e}; using iptables-nft");
            Variant::Nft
        }
    }
}

/// tpgate's chains in one variant, installed while this value lives; dropping it without
/// [`Chains::remove`] removes them too (a failed start or an error return).
pub(super) struct Chains {
    variant: Variant,
    removed: bool,
    /// What the chains should be, shared with the [`Guard`]; locked while either changes
    /// them, so a watcher never puts back a plan a reload just replaced.
    wanted: Arc<Mutex<Wanted>>,
}

/// The plan the chains follow and the `(chains, jumps)` per family it installed.
struct Wanted {
    plan: Plan,
    counts: [(usize, usize); 2],
}

impl Chains {
    /// Replaces any chains an earlier instance left in this variant with the plan's.
    pub(super) fn install(plan: &Plan, variant: Variant) -> Result<Self> {
        let chains = Self {
            variant,
            removed: false,
            wanted: Arc::new(Mutex::new(Wanted {
                plan: plan.clone(),
                counts: [(0, 0); 2],
            })),
        };
        for family in FAMILIES {
            let old = state(variant, family)?.unwrap_or_default();
            if !old.is_empty() {
                warn!(
                    chains = ?old.chain_names(),
                    "replacing tpgate chains left by an earlier instance in {variant}"
                );
            }
            if let Some(script) = ipt_replace(plan, family, &old, Some(std::process::id())) {
                // On failure, drop removes what the first family installed.
                restore(variant, family, &script)?;
            }
        }
        info!("iptables rules installed with {variant}");
        chains.lock().counts = counts(variant)?;
        Ok(chains)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Wanted> {
        self.wanted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the chains with `plan`'s (a reload that changed the intercept section):
    /// one `iptables-restore` per family, each one transaction.
    pub(super) fn replace(&mut self, plan: &Plan) -> Result<()> {
        let mut wanted = self.lock();
        for family in FAMILIES {
            let old = state(self.variant, family)?.unwrap_or_default();
            if let Some(script) = ipt_replace(plan, family, &old, Some(std::process::id())) {
                restore(self.variant, family, &script)?;
            }
        }
        wanted.plan = plan.clone();
        wanted.counts = counts(self.variant)?;
        Ok(())
    }

    /// What a watcher needs to put the chains back.
    pub(super) fn guard(&self) -> Guard {
        Guard {
            variant: self.variant,
            wanted: self.wanted.clone(),
        }
    }

    pub(super) fn remove(mut self) -> Result<()> {
        self.removed = true;
        remove_variant(self.variant).map(|_| ())
    }
}

impl Drop for Chains {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = remove_variant(self.variant) {
                warn!("could not remove tpgate's iptables chains: {e:#}; run `tpgate down`");
            }
        }
    }
}

/// Puts tpgate's chains back when another program removed some: iptables has no owner
/// flag, so a firewall reload (`iptables-restore` without `--noflush`, `nft flush ruleset`
/// under iptables-nft, firewalld, ufw) silently takes them away.
pub(crate) struct Guard {
    variant: Variant,
    wanted: Arc<Mutex<Wanted>>,
}

/// `(chains, jumps)` of tpgate's per family, as installed now.
fn counts(variant: Variant) -> Result<[(usize, usize); 2]> {
    let mut out = [(0, 0); 2];
    for (i, family) in FAMILIES.into_iter().enumerate() {
        out[i] = state(variant, family)?.unwrap_or_default().counts();
    }
    Ok(out)
}

impl Guard {
    /// Re-installs where fewer chains or jumps are found than were installed; returns
    /// whether it did.
    pub(crate) fn reassert(&self) -> Result<bool> {
        let wanted = self
            .wanted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut fixed = false;
        for (i, family) in FAMILIES.into_iter().enumerate() {
            let now = state(self.variant, family)?.unwrap_or_default();
            if now.counts() == wanted.counts[i] {
                continue;
            }
            if let Some(script) = ipt_replace(&wanted.plan, family, &now, Some(std::process::id()))
            {
                restore(self.variant, family, &script)?;
                fixed = true;
            }
        }
        Ok(fixed)
    }
}

/// Removes tpgate's chains and jumps from both families of one variant; returns how many
/// chains there were.
fn remove_variant(variant: Variant) -> Result<usize> {
    let mut removed = 0;
    for family in FAMILIES {
        let Some(old) = state(variant, family)? else {
            continue;
        };
        if let Some(script) = ipt_remove(&old) {
            restore(variant, family, &script)
                .with_context(|| format!("removing tpgate's chains from {variant}"))?;
            removed += old.chain_names().len();
        }
    }
    Ok(removed)
}

/// `down`, and the nftables backend's start: removes tpgate's chains from both variants
/// (whichever are installed); returns how many chains were removed. Refuses, changing
/// nothing, while a tpgate that installed them is alive. A variant whose rules cannot be
/// read (its kernel side missing) is skipped with a warning: it cannot hold chains.
pub(crate) fn remove_chains() -> Result<usize> {
    let mut found = Vec::new();
    for variant in Variant::ALL {
        match states(variant) {
            Ok(Some(states)) => {
                refuse_live_owner(variant, &states, "stop that process instead")?;
                found.push((variant, states));
            }
            Ok(None) => debug!("{variant} is not installed"),
            Err(e) => unreadable(variant, &e),
        }
    }
    let mut removed = 0;
    for (variant, states) in found {
        for (family, old) in FAMILIES.into_iter().zip(states) {
            if let Some(script) = ipt_remove(&old) {
                restore(variant, family, &script)
                    .with_context(|| format!("removing tpgate's chains from {variant}"))?;
                removed += old.chain_names().len();
            }
        }
    }
    Ok(removed)
}
