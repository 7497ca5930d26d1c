//! Counts live TCP connections and UDP flows, and gives freed heap memory back to the
//! kernel once many of them have ended, so a gateway's memory returns to its baseline after
//! a burst instead of staying at its peak.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tracing::debug;

use crate::shutdown::Shutdown;

/// Every relay's connections and flows.
pub(crate) static LIVE: Gauge = Gauge::new();

/// How many connections must have ended since the last trim to trim again.
const TRIM_AFTER: usize = 1024;
const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Gauge {
    live: AtomicUsize,
    /// The most seen at once since the last trim.
    peak: AtomicUsize,
}

/// One live connection or flow; ends when dropped.
#[derive(Debug)]
pub(crate) struct Live(&'static Gauge);

impl Gauge {
    pub(crate) const fn new() -> Self {
        Self {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    pub(crate) fn enter(&'static self) -> Live {
        let n = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
        Live(self)
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Whether enough has ended since the last trim; if so, starts counting anew.
    fn should_trim(&self) -> bool {
        let (live, peak) = (self.live(), self.peak.load(Ordering::Relaxed));
        if peak.saturating_sub(live) < TRIM_AFTER {
            return false;
        }
        self.peak.store(live, Ordering::Relaxed);
        true
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Until shutdown: every few seconds, trims the heap when many connections have ended.
pub(crate) async fn trim_memory(shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = shutdown.wait() => return,
        }
        if LIVE.should_trim() {
            debug!(
                live = LIVE.live(),
                "many connections ended: returning free memory"
            );
            let _ = tokio::task::spawn_blocking(tpgate_sys::release_free_memory).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_many_have_ended_and_counts_anew() {
        static G: Gauge = Gauge::new();
        let mut held: Vec<Live> = (0..TRIM_AFTER + 10).map(|_| G.enter()).collect();
        assert_eq!(G.live(), TRIM_AFTER + 10);
        assert!(!G.should_trim(), "nothing ended yet");
        held.truncate(20);
        assert!(!G.should_trim(), "fewer than TRIM_AFTER ended");
        held.truncate(5);
        assert!(G.should_trim());
        assert!(!G.should_trim(), "counted anew from the current level");
        drop(held);
        assert_eq!(G.live(), 0);
    }
}
