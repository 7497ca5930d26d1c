//! The last delay measurements of each proxy and group, as mihomo keeps them for the API's
//! `history` and `alive`: health checks and the API's delay tests both record here.
//! Deliberately not here: choosing members (groups keep their own per-member delays).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

/// How many measurements are kept per name (mihomo's `defaultHistoriesNum`).
pub(crate) const KEPT: usize = 10;

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delay {
    pub(crate) time: SystemTime,
    /// Milliseconds; 0 means the test failed (mihomo's convention).
    pub(crate) ms: u16,
}

/// Measurements by proxy or group name.
#[derive(Debug, Default)]
pub(crate) struct Histories {
    by_name: Mutex<HashMap<String, VecDeque<Delay>>>,
}

impl Histories {
    /// Records a test of `name`: its delay, or `None` when it failed.
    pub(crate) fn record(&self, name: &str, ms: Option<u32>) {
        let ms = ms.map_or(0, |ms| u16::try_from(ms).unwrap_or(u16::MAX).max(1));
        let d = Delay {
            time: SystemTime::now(),
            ms,
        };
        let Ok(mut all) = self.by_name.lock() else {
            return;
        };
        let h = all.entry(name.to_owned()).or_default();
        h.push_back(d);
        while h.len() > KEPT {
            h.pop_front();
        }
    }

    /// Oldest first.
    pub(crate) fn of(&self, name: &str) -> Vec<Delay> {
        self.by_name
            .lock()
            .ok()
            .and_then(|all| all.get(name).map(|h| h.iter().copied().collect()))
            .unwrap_or_default()
    }

    /// Whether the last test succeeded; true before any test (mihomo starts alive).
    pub(crate) fn alive(&self, name: &str) -> bool {
        self.of(name).last().is_none_or(|d| d.ms > 0)
    }

    /// The last successful delay, if the last test succeeded.
    pub(crate) fn last(&self, name: &str) -> Option<u16> {
        self.of(name).last().map(|d| d.ms).filter(|&ms| ms > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_oldest_first_and_failures_are_zero() {
        let h = Histories::default();
        assert!(h.alive("a") && h.of("a").is_empty());
        for ms in 1..=12 {
            h.record("a", Some(ms));
        }
        let got: Vec<u16> = h.of("a").iter().map(|d| d.ms).collect();
        assert_eq!(got, (3..=12).collect::<Vec<u16>>());
        h.record("a", None);
        assert!(!h.alive("a"));
        assert_eq!(h.last("a"), None);
        h.record("a", Some(100_000));
        assert_eq!(h.last("a"), Some(u16::MAX));
        assert_eq!(h.of("a").len(), KEPT);
    }
}
