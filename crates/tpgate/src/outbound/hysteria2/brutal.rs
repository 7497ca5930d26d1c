//! Hysteria's "Brutal" congestion control as a quinn controller: once the server has told
//! its receive rate and the user gave `up`, the client sends at that rate whatever the
//! losses, its window one round trip's worth of the rate divided by the share of packets
//! acknowledged over the last seconds (so losses are made up for, not backed off from).
//! Before that (and when the server says `auto`), it is quinn's Cubic.
//!
//! quinn paces from the window and the round trip, so the window is the rate times the
//! round trip (Hysteria's own client doubles it and paces separately).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, CubicConfig};
use quinn_proto::RttEstimator;
use tpgate_core::proto::hysteria2::{brutal_window, AckRate};

/// Builds controllers that turn Brutal when `rate` (bytes per second) is set.
pub(super) struct Factory {
    pub(super) rate: Arc<AtomicU64>,
}

impl ControllerFactory for Factory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        let cubic = Arc::new(CubicConfig::default()).build(now, current_mtu);
        Box::new(Brutal {
            rate: self.rate.clone(),
            fallback: cubic,
            acks: AckRate::default(),
            srtt_ms: 0,
            mtu: current_mtu,
        })
    }
}

struct Brutal {
    rate: Arc<AtomicU64>,
    fallback: Box<dyn Controller>,
    acks: AckRate,
    srtt_ms: u64,
    mtu: u16,
}

impl Brutal {
    fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }
}

impl Controller for Brutal {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.fallback.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.srtt_ms = rtt.get().as_millis().try_into().unwrap_or(u64::MAX);
        self.acks.ack(now, bytes);
        self.fallback.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest: Option<u64>,
    ) {
        self.fallback
            .on_end_acks(now, in_flight, app_limited, largest);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        persistent: bool,
        lost_bytes: u64,
    ) {
        self.acks.loss(now, lost_bytes);
        self.fallback
            .on_congestion_event(now, sent, persistent, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = new_mtu;
        self.fallback.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        match self.rate() {
            0 => self.fallback.window(),
            rate => brutal_window(rate, self.srtt_ms, self.acks.rate(Instant::now()), self.mtu),
        }
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Self {
            rate: self.rate.clone(),
            fallback: self.fallback.clone_box(),
            acks: self.acks.clone(),
            srtt_ms: self.srtt_ms,
            mtu: self.mtu,
        })
    }

    fn initial_window(&self) -> u64 {
        self.fallback.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}
