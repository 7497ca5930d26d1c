//! Admission of new flows against the `limits`: how many are live in all and per client
//! address, and whether one more may start. Also which refusals are worth a log line, so a
//! flood of refused flows makes a few lines, not one per flow.
//!
//! Deliberately not here: locks, clocks and counters of refusals by network (the relay's
//! `limits` module holds this behind a mutex and passes the time in).

use std::collections::HashMap;
use std::net::IpAddr;

/// Why a new flow was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Over {
    /// `max-connections`: the gateway holds as many flows as it may.
    Total,
    /// `per-source`: this client address holds as many as one address may.
    PerSource,
}

impl Over {
    /// The metrics' `reason` label and the key the log names.
    pub fn label(self) -> &'static str {
        match self {
            Self::Total => "max-connections",
            Self::PerSource => "per-source",
        }
    }
}

/// Live flows against their caps. Every [`Caps::admit`] that succeeds is matched by one
/// [`Caps::release`] of the same address when the flow ends.
#[derive(Debug)]
pub struct Caps {
    max: usize,
    per_source: usize,
    live: usize,
    /// Live flows per client address; an address with none has no entry, so the map is
    /// as large as the number of addresses with live flows (at most `max`).
    by_source: HashMap<IpAddr, usize>,
}

impl Caps {
    pub fn new(max: u32, per_source: u32) -> Self {
        Self {
            max: max as usize,
            per_source: per_source as usize,
            live: 0,
            by_source: HashMap::new(),
        }
    }

    /// New caps (a reload): flows already live stay, even over them; new ones are checked
    /// against these.
    pub fn set(&mut self, max: u32, per_source: u32) {
        self.max = max as usize;
        self.per_source = per_source as usize;
    }

    /// One more flow from `src`, or why not.
    pub fn admit(&mut self, src: IpAddr) -> Result<(), Over> {
        self.admit_from(src, false)
    }

    /// Like [`Self::admit`]; `own` (this machine's own traffic, one source address for
    /// everything it opens) is held to the total only.
    pub fn admit_from(&mut self, src: IpAddr, own: bool) -> Result<(), Over> {
        if self.live >= self.max {
            return Err(Over::Total);
        }
        let n = self.by_source.entry(src).or_insert(0);
        if *n >= self.per_source && !own {
            return Err(Over::PerSource);
        }
        *n += 1;
        self.live += 1;
        Ok(())
    }

    /// A flow admitted from `src` ended.
    pub fn release(&mut self, src: IpAddr) {
        if let Some(n) = self.by_source.get_mut(&src) {
            *n -= 1;
            self.live = self.live.saturating_sub(1);
            if *n == 0 {
                self.by_source.remove(&src);
            }
        }
    }

    /// Live flows in all.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Live flows from `src`.
    pub fn from(&self, src: IpAddr) -> usize {
        self.by_source.get(&src).copied().unwrap_or(0)
    }
}

/// Addresses remembered for throttling; beyond, refusals share one entry (a flood from
/// spoofed addresses must not grow the map without bound).
const MAX_REMEMBERED: usize = 1024;

/// Which refusals get a log line: the first from an address, then at most one per `every_ms`
/// from it, saying how many were refused since the last line.
#[derive(Debug)]
pub struct RefusalLog {
    every_ms: u64,
    /// Per address (`None`: the shared entry): when its last line was, and refusals since.
    last: HashMap<Option<IpAddr>, (u64, u64)>,
}

impl RefusalLog {
    pub fn new(every_ms: u64) -> Self {
        Self {
            every_ms,
            last: HashMap::new(),
        }
    }

    /// A refusal from `src` at `now_ms`: `Some(n)` when it is to be logged, `n` counting
    /// it and those not logged before it; `None` to stay quiet.
    pub fn note(&mut self, src: IpAddr, now_ms: u64) -> Option<u64> {
        let every = self.every_ms;
        if self.last.len() >= MAX_REMEMBERED && !self.last.contains_key(&Some(src)) {
            self.last
                .retain(|_, (at, _)| now_ms.saturating_sub(*at) < every);
        }
        let key = if self.last.len() < MAX_REMEMBERED || self.last.contains_key(&Some(src)) {
            Some(src)
        } else {
            None
        };
        match self.last.get_mut(&key) {
            Some((at, quiet)) if now_ms.saturating_sub(*at) < every => {
                *quiet += 1;
                None
            }
            Some((at, quiet)) => {
                let n = *quiet + 1;
                (*at, *quiet) = (now_ms, 0);
                Some(n)
            }
            None => {
                self.last.insert(key, (now_ms, 0));
                Some(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, last])
    }

    #[test]
    fn one_source_gets_its_cap_and_others_still_get_in() {
        let mut c = Caps::new(10, 4);
        for _ in 0..4 {
            c.admit(ip(2)).unwrap();
        }
        assert_eq!(c.admit(ip(2)), Err(Over::PerSource));
        assert_eq!((c.live(), c.from(ip(2))), (4, 4), "a refusal holds nothing");
        for _ in 0..4 {
            c.admit(ip(3)).unwrap();
        }
        c.admit(ip(4)).unwrap();
        c.admit(ip(5)).unwrap();
        assert_eq!(
            c.admit(ip(6)),
            Err(Over::Total),
            "the total is checked first"
        );
        c.release(ip(2));
        assert_eq!(c.admit(ip(6)), Ok(()), "a freed slot goes to whoever comes");
        assert_eq!(c.admit(ip(2)), Err(Over::Total));
    }

    #[test]
    fn this_machines_own_traffic_is_held_to_the_total_only() {
        let mut c = Caps::new(4, 1);
        c.admit_from(ip(2), true).unwrap();
        c.admit_from(ip(2), true).unwrap();
        assert_eq!(
            c.admit(ip(2)),
            Err(Over::PerSource),
            "the same address from the LAN"
        );
        c.admit(ip(3)).unwrap();
        c.admit_from(ip(2), true).unwrap();
        assert_eq!(c.admit_from(ip(2), true), Err(Over::Total));
    }

    #[test]
    fn releases_free_slots_and_forget_idle_addresses() {
        let mut c = Caps::new(3, 3);
        c.admit(ip(2)).unwrap();
        c.admit(ip(2)).unwrap();
        c.release(ip(2));
        c.release(ip(2));
        assert_eq!((c.live(), c.by_source.len()), (0, 0));
        c.release(ip(2));
        c.release(ip(9));
        assert_eq!(c.live(), 0, "a stray release does not go below zero");
        for _ in 0..3 {
            c.admit(ip(9)).unwrap();
        }
    }

    #[test]
    fn lower_caps_keep_live_flows_and_refuse_new_ones() {
        let mut c = Caps::new(10, 10);
        for _ in 0..6 {
            c.admit(ip(2)).unwrap();
        }
        c.set(10, 2);
        assert_eq!(c.admit(ip(2)), Err(Over::PerSource));
        assert_eq!(c.from(ip(2)), 6, "live flows stay");
        c.admit(ip(3)).unwrap();
        c.set(7, 2);
        assert_eq!(c.admit(ip(4)), Err(Over::Total));
        for _ in 0..5 {
            c.release(ip(2));
        }
        c.admit(ip(4)).unwrap();
        c.admit(ip(2)).unwrap();
        assert_eq!(
            c.admit(ip(2)),
            Err(Over::PerSource),
            "one left and one new make 2"
        );
        assert_eq!(Over::Total.label(), "max-connections");
        assert_eq!(Over::PerSource.label(), "per-source");
    }

    #[test]
    fn a_flood_is_logged_once_per_interval_per_source_with_its_count() {
        let mut l = RefusalLog::new(5000);
        assert_eq!(l.note(ip(2), 0), Some(1));
        let quiet = (1..1000).filter_map(|t| l.note(ip(2), t)).count();
        assert_eq!(quiet, 0);
        assert_eq!(
            l.note(ip(3), 10),
            Some(1),
            "another source has its own line"
        );
        assert_eq!(
            l.note(ip(2), 5000),
            Some(1000),
            "the 999 unlogged and this one"
        );
        assert_eq!(l.note(ip(2), 5001), None);
        assert_eq!(l.note(ip(2), 20_000), Some(2));
    }

    #[test]
    fn spoofed_sources_share_one_entry_beyond_the_bound() {
        let mut l = RefusalLog::new(5000);
        let lines = (0..100_000u32)
            .filter_map(|i| l.note(IpAddr::from(i.to_be_bytes()), u64::from(i) / 100))
            .count();
        assert!(l.last.len() <= MAX_REMEMBERED + 1, "{}", l.last.len());
        // The first MAX_REMEMBERED addresses, then the shared entry once per interval
        // (100,000 notes over 1000 ms), with refreshes of old entries in between.
        assert!(lines <= 2 * MAX_REMEMBERED + 1, "{lines}");
    }
}
