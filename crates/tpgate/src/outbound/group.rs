//! A proxy group's live state and how it chooses a member. Delays come from health checks
//! (`health`); a failed dial marks a member dead at once, so fallback and url-test move away
//! without waiting for the next check.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tpgate_core::config::{GroupDef, GroupKind, LbStrategy, Member, TargetId};
use tpgate_core::net::Destination;

/// Not measured yet: usable, ranked after every measured member.
pub(crate) const UNKNOWN: u32 = u32::MAX - 1;
/// Failed its last check or dial.
pub(crate) const DEAD: u32 = u32::MAX;
/// No member fixed (see `Group::fixed`).
const NOT_FIXED: usize = usize::MAX;

#[derive(Debug)]
pub(crate) struct Group {
    /// As configured; `def.members` are only the members written in the config, the
    /// current list (with providers' proxies) is [`Group::members`].
    pub(crate) def: GroupDef,
    /// The members now and, per member, the last measured delay in ms, or [`UNKNOWN`] /
    /// [`DEAD`]. Replaced whole when a proxy provider's list changes, so a flow reads one
    /// consistent snapshot and established connections are not touched.
    now: RwLock<Arc<Members>>,
    /// select: the chosen member; url-test: the current pick, kept within `tolerance`.
    current: AtomicUsize,
    /// url-test and fallback: a member the user fixed through the API (`PUT /proxies/{g}`),
    /// used while it is not known dead; [`NOT_FIXED`] otherwise.
    fixed: AtomicUsize,
    /// load-balance round-robin position.
    rr: AtomicUsize,
    /// Milliseconds since `born` of the last flow that used the group (for `lazy`).
    last_used: AtomicU64,
    born: Instant,
}

/// A group's members at one time, with their delays.
#[derive(Debug)]
pub(crate) struct Members {
    pub(crate) list: Vec<Member>,
    delays: Vec<AtomicU32>,
}

impl Members {
    fn new(list: Vec<Member>) -> Self {
        let delays = list.iter().map(|_| AtomicU32::new(UNKNOWN)).collect();
        Self { list, delays }
    }
}

impl Group {
    pub(crate) fn new(def: GroupDef) -> Self {
        let members = Members::new(def.members.clone());
        Self::with_members(def, members)
    }

    fn with_members(def: GroupDef, members: Members) -> Self {
        Self {
            def,
            now: RwLock::new(Arc::new(members)),
            current: AtomicUsize::new(0),
            fixed: AtomicUsize::new(NOT_FIXED),
            rr: AtomicUsize::new(0),
            last_used: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    pub(crate) fn is_relay(&self) -> bool {
        self.def.kind == GroupKind::Relay
    }

    pub(crate) fn is_select(&self) -> bool {
        self.def.kind == GroupKind::Select
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn touch(&self) {
        self.last_used
            .store(self.now_ms().max(1), Ordering::Relaxed);
    }

    /// Milliseconds since `born` of the last use; 0 = never used.
    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// The members now.
    pub(crate) fn members(&self) -> Arc<Members> {
        self.now
            .read()
            .map_or_else(|e| e.into_inner().clone(), |m| m.clone())
    }

    /// Replaces the members (a provider changed): delays and the selection carry over to
    /// the members that stay, by identity.
    pub(crate) fn set_members(&self, list: Vec<Member>) {
        let old = self.members();
        if old.list == list {
            return;
        }
        let selected = old.list.get(self.current.load(Ordering::Relaxed)).copied();
        let new = Members::new(list);
        for (i, m) in new.list.iter().enumerate() {
            if let Some(j) = old.list.iter().position(|o| o == m) {
                new.delays[i].store(old.delays[j].load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        let keep = selected
            .and_then(|m| new.list.iter().position(|n| *n == m))
            .unwrap_or(0);
        self.current.store(keep, Ordering::Relaxed);
        match self.now.write() {
            Ok(mut g) => *g = Arc::new(new),
            Err(e) => *e.into_inner() = Arc::new(new),
        }
    }

    #[cfg(test)]
    pub(crate) fn set_delay(&self, i: usize, ms: u32) {
        self.members().set_delay(i, ms);
    }

    #[cfg(test)]
    pub(crate) fn mark_dead(&self, i: usize) {
        self.set_delay(i, DEAD);
    }

    /// Marks `m` dead, wherever it is now in the list.
    /// A health check of `m` outside the group (its proxy provider's) measured `ms`.
    pub(crate) fn set_member_delay(&self, m: Member, ms: u32) {
        let now = self.members();
        for (i, x) in now.list.iter().enumerate() {
            if *x == m {
                now.set_delay(i, ms);
            }
        }
    }

    pub(crate) fn mark_member_dead(&self, m: Member) {
        let now = self.members();
        if let Some(i) = now.list.iter().position(|x| *x == m) {
            now.set_delay(i, DEAD);
        }
    }

    /// The member index in use now (what `now` shows in the API): the member the next flow
    /// would get. For url-test that is the health checks' latest verdict even before any
    /// flow asked (mihomo's `now` too); asking never advances round-robin.
    pub(crate) fn current(&self) -> usize {
        let any = Destination::Domain(String::new(), 0);
        match self.def.kind {
            GroupKind::LoadBalance(LbStrategy::RoundRobin) => {
                let live = self.live();
                live[self.rr.load(Ordering::Relaxed) % live.len()]
            }
            _ => self.choose(&any),
        }
    }

    /// The members not known dead, in order; every member when all are dead (a flow then
    /// tries one rather than failing without a try). Never empty for a group with members.
    fn live(&self) -> Vec<usize> {
        let now = self.members();
        let n = now.list.len().max(1);
        let live: Vec<usize> = (0..n).filter(|&i| now.delay(i) != DEAD).collect();
        if live.is_empty() {
            (0..n).collect()
        } else {
            live
        }
    }

    /// Whether the user may choose the member (`PUT /proxies/{group}`): select groups
    /// choose by it; url-test and fallback keep it as a fixed choice until it is cleared.
    pub(crate) fn is_selectable(&self) -> bool {
        matches!(
            self.def.kind,
            GroupKind::Select | GroupKind::UrlTest { .. } | GroupKind::Fallback
        )
    }

    /// The member fixed through the API (url-test, fallback), if any.
    pub(crate) fn fixed(&self) -> Option<usize> {
        Some(self.fixed.load(Ordering::Relaxed)).filter(|&i| i < self.members().list.len())
    }

    /// Makes member `i` the selection of a select group.
    pub(crate) fn select_index(&self, i: usize) {
        if i < self.members().list.len() {
            self.current.store(i, Ordering::Relaxed);
        }
    }

    /// Forgets the fixed member: the group chooses by its checks again.
    pub(crate) fn unfix(&self) {
        self.fixed.store(NOT_FIXED, Ordering::Relaxed);
    }

    /// Makes `name` the selection (url-test, fallback: the fixed member); false when no
    /// member has that name.
    pub(crate) fn select_by_name(
        &self,
        name: &str,
        names: impl Fn(TargetId) -> Option<String>,
    ) -> bool {
        let found = self.members().list.iter().position(|m| match m {
            Member::Direct => name == "DIRECT",
            Member::Reject => name == "REJECT",
            Member::Target(id) => names(*id).as_deref() == Some(name),
        });
        match found {
            Some(i)
                if matches!(
                    self.def.kind,
                    GroupKind::UrlTest { .. } | GroupKind::Fallback
                ) =>
            {
                self.fixed.store(i, Ordering::Relaxed);
                true
            }
            Some(i) => {
                self.current.store(i, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Which member serves a flow to `dst` now.
    pub(crate) fn choose(&self, dst: &Destination) -> usize {
        let now = self.members();
        now.choose(self, dst)
    }
}

impl Members {
    pub(crate) fn delay(&self, i: usize) -> u32 {
        self.delays
            .get(i)
            .map_or(DEAD, |d| d.load(Ordering::Relaxed))
    }

    pub(crate) fn set_delay(&self, i: usize, ms: u32) {
        if let Some(d) = self.delays.get(i) {
            d.store(ms, Ordering::Relaxed);
        }
    }

    /// Which member of this snapshot serves a flow to `dst` for group `g`.
    pub(crate) fn choose(&self, g: &Group, dst: &Destination) -> usize {
        let n = self.list.len();
        if n == 0 {
            return 0;
        }
        let alive = |i: &usize| self.delay(*i) != DEAD;
        if let Some(i) = g.fixed().filter(alive) {
            return i;
        }
        match g.def.kind {
            GroupKind::Select | GroupKind::Relay => g.current.load(Ordering::Relaxed).min(n - 1),
            GroupKind::Fallback => (0..n).find(alive).unwrap_or(0),
            GroupKind::UrlTest { tolerance } => {
                let Some(best) = (0..n).filter(alive).min_by_key(|&i| self.delay(i)) else {
                    return g.current.load(Ordering::Relaxed).min(n - 1);
                };
                let cur = g.current.load(Ordering::Relaxed).min(n - 1);
                let tol = u32::try_from(tolerance.as_millis()).unwrap_or(u32::MAX);
                let (dc, db) = (self.delay(cur), self.delay(best));
                if dc != DEAD && dc <= db.saturating_add(tol) {
                    cur
                } else {
                    g.current.store(best, Ordering::Relaxed);
                    best
                }
            }
            GroupKind::LoadBalance(strategy) => {
                let live = g.live();
                match strategy {
                    LbStrategy::RoundRobin => {
                        live[g.rr.fetch_add(1, Ordering::Relaxed) % live.len()]
                    }
                    // Rendezvous hashing: a destination stays on its member while that member
                    // lives, and only its own destinations move when it dies.
                    LbStrategy::ConsistentHashing => {
                        let key = host_key(dst);
                        live.into_iter()
                            .max_by_key(|&i| {
                                let mut h = DefaultHasher::new();
                                (&key, i).hash(&mut h);
                                h.finish()
                            })
                            .unwrap_or(0)
                    }
                }
            }
        }
    }
}

/// The part of a destination that load-balancing hashes: the host, not the port, so one
/// site's connections share an upstream.
fn host_key(dst: &Destination) -> String {
    match dst {
        Destination::Addr(a) => a.ip().to_string(),
        Destination::Domain(d, _) => d.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn group(kind: GroupKind, n: u32) -> Group {
        Group::new(GroupDef::new(
            "g",
            kind,
            (0..n).map(|i| Member::Target(TargetId(i))).collect(),
        ))
    }

    fn dst(i: u8) -> Destination {
        Destination::Addr(std::net::SocketAddr::from(([203, 0, 113, i], 443)))
    }

    #[test]
    fn fallback_takes_the_first_live_member_and_returns() {
        let g = group(GroupKind::Fallback, 3);
        assert_eq!(g.choose(&dst(1)), 0);
        g.mark_dead(0);
        assert_eq!(g.choose(&dst(1)), 1);
        g.mark_dead(1);
        assert_eq!(g.choose(&dst(1)), 2);
        g.set_delay(0, 30);
        assert_eq!(g.choose(&dst(1)), 0);
    }

    #[test]
    fn url_test_prefers_the_fastest_but_respects_tolerance() {
        let g = group(
            GroupKind::UrlTest {
                tolerance: Duration::from_millis(50),
            },
            2,
        );
        g.set_delay(0, 100);
        g.set_delay(1, 80);
        assert_eq!(g.choose(&dst(1)), 0, "within tolerance: stay");
        g.set_delay(1, 20);
        assert_eq!(g.choose(&dst(1)), 1, "better by more than tolerance: move");
        g.set_delay(0, 10);
        assert_eq!(g.choose(&dst(1)), 1, "sticky again within tolerance");
        g.mark_dead(1);
        assert_eq!(g.choose(&dst(1)), 0, "dead current: move");
    }

    #[test]
    fn consistent_hashing_is_stable_and_spreads() {
        let g = group(GroupKind::LoadBalance(LbStrategy::ConsistentHashing), 2);
        let picks: Vec<usize> = (1..=40).map(|i| g.choose(&dst(i))).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");
        for i in 1..=40 {
            assert_eq!(g.choose(&dst(i)), picks[usize::from(i) - 1]);
        }
        // Killing member 1 moves only its destinations.
        g.mark_dead(1);
        for i in 1..=40u8 {
            assert_eq!(g.choose(&dst(i)), 0);
        }
    }

    #[test]
    fn url_test_current_follows_the_checks_before_any_flow() {
        let g = group(
            GroupKind::UrlTest {
                tolerance: Duration::from_millis(50),
            },
            2,
        );
        assert_eq!(g.current(), 0, "nothing measured: the first member");
        g.set_delay(0, 900);
        g.set_delay(1, 5);
        assert_eq!(
            g.current(),
            1,
            "the API shows the faster member without traffic"
        );
        assert_eq!(g.choose(&dst(1)), 1);
        g.set_delay(0, 5);
        g.set_delay(1, 900);
        assert_eq!(g.current(), 0);
    }

    #[test]
    fn asking_round_robin_for_its_current_member_does_not_advance_it() {
        let g = group(GroupKind::LoadBalance(LbStrategy::RoundRobin), 2);
        for _ in 0..3 {
            assert_eq!(g.current(), 0);
        }
        assert_eq!(g.choose(&dst(1)), 0);
        assert_eq!(g.current(), 1);
        assert_eq!(g.choose(&dst(1)), 1);
        assert_eq!(g.choose(&dst(1)), 0);
    }

    #[test]
    fn round_robin_cycles_over_live_members() {
        let g = group(GroupKind::LoadBalance(LbStrategy::RoundRobin), 3);
        g.mark_dead(1);
        let picks: Vec<usize> = (0..4).map(|_| g.choose(&dst(1))).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
    }

    #[test]
    fn a_fixed_member_wins_while_alive_and_unfixing_returns_to_the_checks() {
        let g = group(GroupKind::Fallback, 3);
        let names = |id: TargetId| ["a", "b", "c"].get(id.0 as usize).map(|s| (*s).to_owned());
        assert!(g.is_selectable());
        assert!(g.select_by_name("c", names));
        assert_eq!((g.fixed(), g.choose(&dst(1))), (Some(2), 2));
        g.mark_dead(2);
        assert_eq!(g.choose(&dst(1)), 0, "a dead fixed member is passed over");
        g.set_delay(2, 10);
        g.unfix();
        assert_eq!((g.fixed(), g.choose(&dst(1))), (None, 0));
        assert!(!g.select_by_name("x", names));
        assert!(!group(GroupKind::Relay, 2).is_selectable());
    }
}
