//! What several checks share, found once: the TPROXY rules and the OUTPUT marks that feed
//! them ([`Halves`]), and where policy routing sends a marked packet. Both `checks_rules`
//! and `checks_routing` build on it, so neither imports the other.

use super::model::{Fam, Hook, Placed};
use super::{IpRule, Snapshot};
use crate::net::Mark;
use crate::plan::Family;

/// The TPROXY rules and the OUTPUT marks that feed them, found once for every check.
pub(super) struct Halves<'a, 'b> {
    pub(super) tproxy: Vec<&'b Placed<'a>>,
    /// OUTPUT rules setting a non-zero mark that is meant to loop traffic back for TPROXY.
    pub(super) output_marks: Vec<(&'b Placed<'a>, Mark)>,
}

impl<'a, 'b> Halves<'a, 'b> {
    pub(super) fn find(snap: &Snapshot, flat: &'b [Placed<'a>]) -> Self {
        let tproxy: Vec<&Placed<'a>> = flat
            .iter()
            .filter(|p| p.hook == Hook::Prerouting && p.rule.tproxy().is_some())
            .collect();
        let tproxy_marks: Vec<Mark> = tproxy
            .iter()
            .filter_map(|p| p.rule.tproxy().and_then(|(_, m)| m))
            .collect();
        let output_marks = flat
            .iter()
            .filter(|p| p.hook == Hook::Output)
            .filter_map(|p| p.rule.set_mark().filter(|m| m.value != 0).map(|m| (p, m)))
            .filter(|(p, m)| {
                tproxy_marks.iter().any(|t| t.matches(m.value))
                    || snap
                        .expect
                        .as_ref()
                        .is_some_and(|e| e.fwmark.matches(m.value))
                    || routed_to_lo(snap, p.fam, m.value)
            })
            .collect();
        Self {
            tproxy,
            output_marks,
        }
    }
}

/// The `fwmark` rule of `family` meant for `mark`: the one whose table delivers locally,
/// else the one for the configured table, else the first a packet with `mark` takes.
pub(super) fn fwmark_rule(snap: &Snapshot, family: Family, mark: u32) -> Option<&IpRule> {
    let mut rules: Vec<&IpRule> = snap
        .rules
        .iter()
        .flatten()
        .filter(|r| r.family == family && r.fwmark.is_some() && !r.not && r.takes(mark))
        .collect();
    rules.sort_by_key(|r| r.priority);
    let want = snap.expect.as_ref().map(|e| e.table.0);
    rules
        .iter()
        .find(|r| table_is_local(snap, family, &r.table))
        .or_else(|| {
            rules
                .iter()
                .find(|r| want.is_some() && r.table_id() == want)
        })
        .or_else(|| rules.first())
        .copied()
}

pub(super) fn table_is_local(snap: &Snapshot, family: Family, table: &str) -> bool {
    snap.routes
        .iter()
        .any(|r| r.family == family && r.table == table && r.is_local_default_lo())
}

/// Whether a packet with `mark` is routed to a table that delivers it locally via lo.
pub(super) fn routed_to_lo(snap: &Snapshot, fam: Fam, mark: u32) -> bool {
    fam.families()
        .iter()
        .any(|&f| fwmark_rule(snap, f, mark).is_some_and(|r| table_is_local(snap, f, &r.table)))
}
