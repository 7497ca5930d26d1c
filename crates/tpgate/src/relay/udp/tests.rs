use super::*;
use crate::relay::limits::Limits;

/// Caps no test here reaches.
fn slot() -> Slot {
    static LIMITS: std::sync::OnceLock<Arc<Limits>> = std::sync::OnceLock::new();
    let l = tpgate_core::config::Limits {
        max_connections: Some(1 << 20),
        per_source: Some(1 << 20),
        udp_table_size: None,
    };
    LIMITS
        .get_or_init(|| Limits::new(&l, 65_536))
        .admit(tpgate_core::net::Network::Udp, key(0).0.ip())
        .expect("under the caps")
}

fn flow(last: u64) -> Flow {
    Flow {
        out: FlowOut::Drop,
        replier: None,
        reg: None,
        last: Arc::new(AtomicU64::new(last)),
        idle: IDLE,
        _live: LIVE.enter(),
        _slot: slot(),
    }
}

fn decider() -> Decider {
    let (src, dst) = key(1);
    Shared::decider(tpgate_core::net::Network::Udp, src, dst)
}

fn key(i: u16) -> Key {
    (
        SocketAddr::from(([198, 51, 100, 2], i)),
        SocketAddr::from(([203, 0, 113, 2], 53)),
    )
}

#[test]
fn a_full_table_evicts_the_least_recently_active_flows() {
    let mut flows = HashMap::new();
    // Activity clocks in a scrambled order, so eviction cannot rely on insertion order.
    for i in 0..1000u16 {
        let last = u64::from(i) * 7919 % 1000;
        flows.insert(key(i), flow(last));
    }
    evict(&mut flows, 1000);
    let kept: Vec<u64> = flows
        .values()
        .map(|f| f.last.load(Ordering::Relaxed))
        .collect();
    let evicted: Vec<u64> = (0..1000).filter(|t| !kept.contains(t)).collect();
    assert!(
        (1000 / 8..=1000 / 8 + 1).contains(&evicted.len()),
        "about an eighth evicted: {}",
        evicted.len()
    );
    let newest_evicted = evicted.iter().max().copied().unwrap_or(0);
    let oldest_kept = kept.iter().min().copied().unwrap_or(0);
    assert!(
        newest_evicted < oldest_kept,
        "every evicted flow was less recently active than every kept one \
         ({newest_evicted} vs {oldest_kept})"
    );
}

#[test]
fn held_datagrams_are_bounded_and_sniffing_ends_on_non_quic() {
    let mut p = Pending {
        decider: decider(),
        sniffer: None,
        held: Vec::new(),
    };
    for i in 0..100u8 {
        assert_eq!(p.hold(&[i]), None, "not sniffing: only held");
    }
    assert_eq!(p.held.len(), MAX_HELD);
    assert_eq!(p.held[0].as_ref(), &[0u8]);
    let mut s = Pending {
        decider: decider(),
        sniffer: Some(QuicSniffer::new()),
        held: Vec::new(),
    };
    assert_eq!(s.hold(b"plain text, not a QUIC Initial"), Some(None));
    assert_eq!(s.held.len(), 1, "the datagram is kept to be sent on");
}

#[test]
fn sniffing_what_was_held_before_it_started() {
    let mut p = Pending {
        decider: decider(),
        sniffer: None,
        held: Vec::new(),
    };
    p.hold(b"held before the decider asked for a name");
    assert_eq!(p.sniff_held(), None, "not sniffing yet");
    p.sniffer = Some(QuicSniffer::new());
    assert_eq!(
        p.sniff_held(),
        Some(None),
        "held non-QUIC ends sniffing at once"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_flows_are_swept_after_their_own_timeouts_and_active_ones_stay() {
    let nat = Nat::new(SharedCell::new(crate::relay::tests::shared(
        &["MATCH,DIRECT"],
        Arc::default(),
        1,
    )));
    let (dns, quiet, busy) = (key(1), key(2), key(3));
    {
        let mut flows = nat.flows.lock().unwrap();
        let now = nat.now_ms();
        for (k, idle) in [(dns, IDLE_DNS), (quiet, IDLE), (busy, IDLE)] {
            let mut f = flow(now);
            f.idle = idle;
            flows.insert(k, f);
        }
    }
    let live = |k: &Key| nat.flows.lock().unwrap().contains_key(k);
    let touch = || {
        let now = nat.now_ms();
        if let Some(f) = nat.flows.lock().unwrap().get(&busy) {
            f.last.store(now, Ordering::Relaxed);
        }
    };
    let (trigger, stop) = crate::shutdown::channel();
    let sweeper = tokio::spawn(nat.clone().sweep(stop));
    // Past the DNS timeout (10 s) and a sweep (every 2 s): only the DNS flow is gone.
    for _ in 0..13 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        touch();
    }
    assert!(!live(&dns) && live(&quiet) && live(&busy));
    // Past the ordinary timeout (60 s): the quiet flow is gone, the busy one stays.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        touch();
    }
    assert!(!live(&quiet), "idle for more than {IDLE:?}: swept");
    assert!(live(&busy), "active every second: kept");
    trigger.fire();
    sweeper.await.unwrap();
}

#[tokio::test]
async fn new_flows_over_the_per_source_cap_are_dropped_and_others_still_get_in() {
    let shared = crate::relay::tests::shared(&["MATCH,REJECT"], Arc::default(), 1);
    shared.limits.set(&tpgate_core::config::Limits {
        max_connections: Some(100),
        per_source: Some(3),
        udp_table_size: Some(4),
    });
    let limits = shared.limits.clone();
    let nat = Nat::new(SharedCell::new(shared));
    let other = SocketAddr::from(([198, 51, 100, 3], 4000));
    let dst = key(0).1;
    {
        let mut flows = nat.flows.lock().unwrap();
        for i in 1..=10u16 {
            let (src, dst) = key(i);
            assert!(nat.forward(&mut flows, src, dst, b"x", 0).is_none());
        }
        assert_eq!(flows.len(), 3, "the flooding source holds its cap");
        let (src, _) = key(1);
        nat.forward(&mut flows, src, dst, b"again", 0);
        assert_eq!(flows.len(), 3, "an existing flow's datagram is no new flow");
        nat.forward(&mut flows, other, dst, b"y", 0);
        assert!(flows.contains_key(&(other, dst)), "another source gets in");
        let next = SocketAddr::from(([198, 51, 100, 4], 4000));
        nat.forward(&mut flows, next, dst, b"z", 0);
        assert!(
            flows.contains_key(&(next, dst)) && flows.len() <= 4,
            "a full table makes room by evicting, within udp-table-size: {}",
            flows.len()
        );
    }
    let refused: u64 = limits
        .refused()
        .iter()
        .filter(|(n, _, _)| *n == tpgate_core::net::Network::Udp)
        .map(|r| r.2)
        .sum();
    assert_eq!(refused, 7);
    nat.flows.lock().unwrap().clear();
    assert_eq!(
        limits.live(),
        0,
        "flows leaving the table give their slots back"
    );
}

#[tokio::test]
async fn each_shard_holds_its_share_of_the_table_and_the_table_sums_them() {
    let shared = crate::relay::tests::shared(&["MATCH,REJECT"], Arc::default(), 1);
    shared.limits.set(&tpgate_core::config::Limits {
        max_connections: Some(1000),
        per_source: Some(1000),
        udp_table_size: Some(10),
    });
    let cell = SharedCell::new(shared);
    let table = NatTable::new(&cell, 4);
    assert!(
        Arc::ptr_eq(&table.shard(1), &table.shard(5)),
        "listener i uses shard i % 4"
    );
    for i in 0..4 {
        let shard = table.shard(i);
        let mut flows = shard.flows.lock().unwrap();
        for n in 0..10u16 {
            let (src, dst) = key(100 * i as u16 + n);
            shard.forward(&mut flows, src, dst, b"x", u64::from(n));
            assert!(
                flows.len() <= 3,
                "shard {i}: within 10 / 4 flows, rounded up: {}",
                flows.len()
            );
        }
    }
    let held = table.len();
    assert!((4..=12).contains(&held), "the whole table: {held} flows");
    for i in 0..4 {
        table.shard(i).flows.lock().unwrap().clear();
    }
    assert_eq!(table.len(), 0);
}
