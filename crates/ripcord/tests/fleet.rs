//! A simulated fleet: breakers on several instances sharing one MemoryStore.
//! Virtual time only (paused tokio clock, TokioClock everywhere).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ripcord::store::{Fleet, MemoryStore, StateStore};
use ripcord::{
    Backoff, CircuitBreaker, CircuitBreakerBuilder, Event, EventKind, Outcome, State, TokioClock,
    Window,
};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

struct Instance {
    fleet: Fleet,
    breaker: CircuitBreaker,
    events: Arc<Mutex<Vec<Event>>>,
}

fn template(clock: TokioClock) -> CircuitBreakerBuilder {
    CircuitBreaker::builder("payments")
        .failure_rate(0.5)
        .minimum_calls(10)
        .window(Window::time(10 * SEC))
        .open_for(Backoff::fixed(5 * SEC))
        .half_open_calls(2)
        .clock(clock)
        .seed(3)
}

fn fleet(store: &MemoryStore, n: usize, pubsub: bool) -> Vec<Instance> {
    fleet_with(store, n, pubsub, 0)
}

fn fleet_with(store: &MemoryStore, n: usize, pubsub: bool, quorum: u32) -> Vec<Instance> {
    let clock = TokioClock::new();
    (0..n)
        .map(|i| {
            let fleet = Fleet::builder(store.clone())
                .instance(&format!("i{i}"))
                .pubsub(pubsub)
                .quorum(quorum)
                .build()
                .unwrap();
            let events = Arc::new(Mutex::new(Vec::new()));
            let e = events.clone();
            let breaker = template(clock)
                .fleet(&fleet)
                .on_event(move |ev| e.lock().unwrap().push(ev.clone()))
                .build()
                .unwrap();
            Instance {
                fleet,
                breaker,
                events,
            }
        })
        .collect()
}

async fn settle() {
    // Let the sync tasks run: one sync interval of virtual time.
    tokio::time::sleep(100 * MS).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn record(b: &CircuitBreaker, o: Outcome) -> bool {
    match b.try_acquire() {
        Ok(p) => {
            p.record(o);
            true
        }
        Err(_) => false,
    }
}

#[tokio::test(start_paused = true)]
async fn failures_spread_across_instances_trip_all_of_them() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let fleet = fleet(&store, 5, true);
    settle().await;
    // Each instance sees 1 failure and 1 success: 50 % fleet-wide, but only 2
    // calls locally (< minimum 10): no instance could trip alone.
    for inst in &fleet {
        record(&inst.breaker, Outcome::Success);
        record(&inst.breaker, Outcome::Failure);
    }
    assert!(fleet.iter().all(|i| i.breaker.state() == State::Closed));
    // Windows reach the store at the next sync; the others' shares come back
    // with the one after (each instance syncs on its own schedule).
    settle().await;
    settle().await;
    record(&fleet[0].breaker, Outcome::Failure); // 11 calls fleet-wide, 6 failed
    assert_eq!(
        fleet[0].breaker.state(),
        State::Open,
        "judged on the fleet window"
    );
    for _ in 0..10 {
        tokio::task::yield_now().await; // pub/sub, no sync interval needed
    }
    for (i, inst) in fleet.iter().enumerate() {
        assert_eq!(inst.breaker.state(), State::Open, "instance {i}");
        assert!(
            !record(&inst.breaker, Outcome::Success),
            "instance {i} rejects"
        );
    }
    let views = store.list().await.unwrap();
    assert_eq!((views[0].state, views[0].epoch), (State::Open, 1));
}

#[tokio::test(start_paused = true)]
async fn without_pubsub_a_trip_reaches_every_instance_within_a_sync_interval() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let fleet = fleet(&store, 5, false);
    settle().await;
    fleet[2].breaker.force_open();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    settle().await;
    settle().await;
    for inst in &fleet {
        assert_eq!(inst.breaker.state(), State::ForcedOpen);
    }
}

#[tokio::test(start_paused = true)]
async fn the_whole_fleet_sends_exactly_half_open_calls_probes_per_period() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let fleet = fleet(&store, 5, true);
    settle().await;
    for period in 0..5 {
        // Trip (or re-trip) from instance 0.
        if fleet[0].breaker.state() == State::Closed {
            for _ in 0..20 {
                record(&fleet[0].breaker, Outcome::Failure);
            }
        }
        settle().await;
        assert!(
            fleet.iter().all(|i| i.breaker.state() == State::Open),
            "period {period}"
        );
        tokio::time::sleep(5 * SEC).await;
        // Every instance hammers the dependency while half-open; count probes.
        let mut probes = 0;
        for _round in 0..20 {
            for inst in &fleet {
                if let Ok(p) = inst.breaker.try_acquire() {
                    probes += 1;
                    // Keep the probe in flight: its verdict would end the period.
                    std::mem::forget(p);
                }
            }
            settle().await;
        }
        assert_eq!(probes, 2, "period {period}: fleet-wide probe budget");
        // Re-open everywhere for the next period.
        let _ = fleet[1]
            .fleet
            .override_state("payments", State::Closed, None, "test")
            .await;
        settle().await;
    }
}

#[tokio::test(start_paused = true)]
async fn probe_verdicts_close_the_breaker_everywhere() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let fleet = fleet(&store, 3, true);
    settle().await;
    for _ in 0..20 {
        record(&fleet[0].breaker, Outcome::Failure);
    }
    settle().await;
    tokio::time::sleep(5 * SEC).await;
    let mut successes = 0;
    for _ in 0..20 {
        for inst in &fleet {
            if record(&inst.breaker, Outcome::Success) {
                successes += 1;
            }
        }
        settle().await;
    }
    assert!(successes >= 2);
    for inst in &fleet {
        assert_eq!(inst.breaker.state(), State::Closed);
    }
    let v = &store.list().await.unwrap()[0];
    assert_eq!(
        (v.state, v.epoch),
        (State::Closed, 3),
        "open, half-open, closed once each"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_instance_starts_in_the_fleets_state() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let first = fleet(&store, 1, true);
    settle().await;
    first[0].breaker.force_open();
    settle().await;
    let late = fleet(&store, 1, true);
    late[0].fleet.sync_now().await;
    assert_eq!(late[0].breaker.state(), State::ForcedOpen);
}

#[tokio::test(start_paused = true)]
async fn overrides_apply_fleet_wide_lapse_and_are_audited() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let fleet = fleet(&store, 3, true);
    settle().await;
    let view = fleet[0]
        .fleet
        .override_state("payments", State::ForcedOpen, Some(30 * SEC), "alice")
        .await
        .unwrap();
    assert_eq!(view.override_expires_in, Some(30 * SEC));
    settle().await;
    for inst in &fleet {
        assert_eq!(inst.breaker.state(), State::ForcedOpen);
        let audit: Vec<_> = inst
            .events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::FleetOverride {
                    to,
                    actor,
                    expires_in,
                    ..
                } => Some((*to, actor.clone(), *expires_in)),
                _ => None,
            })
            .collect();
        assert_eq!(
            audit,
            vec![(State::ForcedOpen, "alice".to_string(), Some(30 * SEC))]
        );
    }
    tokio::time::sleep(30 * SEC).await;
    settle().await;
    for inst in &fleet {
        assert_eq!(inst.breaker.state(), State::Closed, "override lapsed");
    }
}

#[tokio::test(start_paused = true)]
async fn store_outage_degrades_then_rejoins_without_waiting_calls() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let fleet = fleet(&store, 2, true);
    settle().await;
    store.set_down(true);
    settle().await;
    assert!(fleet[0].fleet.is_degraded());
    let degraded = |i: &Instance| {
        i.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::StoreDegraded { degraded: true, .. }))
            .count()
    };
    assert_eq!(degraded(&fleet[0]), 1);
    // Calls decide locally: instance 0 trips alone on its own failures.
    for _ in 0..10 {
        assert!(record(&fleet[0].breaker, Outcome::Failure));
    }
    assert_eq!(fleet[0].breaker.state(), State::Open);
    settle().await; // its transition cannot reach the store
    assert_eq!(fleet[1].breaker.state(), State::Closed);
    store.set_down(false);
    settle().await;
    settle().await;
    assert!(!fleet[0].fleet.is_degraded());
    // Re-joins the fleet's state (closed: the store never saw the local trip),
    // with one transition, not a burst.
    assert_eq!(fleet[0].breaker.state(), State::Closed);
    let transitions = fleet[0]
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Transition { .. }))
        .count();
    assert_eq!(transitions, 2, "local trip, then back to the fleet's state");
}

#[tokio::test(start_paused = true)]
async fn store_round_trips_scale_with_time_not_calls() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let fleet = fleet(&store, 5, true);
    settle().await;
    let before = store.operations();
    // 100 000 successful calls over 2 s of virtual time.
    for step in 0..20 {
        for inst in &fleet {
            for _ in 0..1_000 {
                record(&inst.breaker, Outcome::Success);
            }
        }
        let _ = step;
        tokio::time::sleep(100 * MS).await;
    }
    let ops = store.operations() - before;
    // 5 instances × 20 sync intervals, plus a little slack for the initial sync.
    assert!(ops <= 5 * 21, "{ops} store operations for 100 000 calls");
    assert!(ops >= 5 * 15, "syncs must actually run: {ops}");
}

#[tokio::test(start_paused = true)]
async fn without_a_quorum_only_the_instance_that_sees_failures_opens() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let fleet = fleet_with(&store, 5, true, 3);
    settle().await;
    // Instance 0 has a broken network path: it alone sees failures.
    for _ in 0..20 {
        record(&fleet[0].breaker, Outcome::Failure);
    }
    assert_eq!(fleet[0].breaker.state(), State::Open);
    settle().await;
    settle().await;
    assert_eq!(fleet[0].breaker.state(), State::Open, "stays open locally");
    for inst in &fleet[1..] {
        assert_eq!(
            inst.breaker.state(),
            State::Closed,
            "the fleet is not cut off"
        );
        assert!(record(&inst.breaker, Outcome::Success));
    }
    let v = &store.list().await.unwrap()[0];
    assert_eq!(
        (v.state, v.epoch),
        (State::Closed, 0),
        "the store never opened"
    );
    // Its path heals: it probes on its own and rejoins the fleet, closed.
    tokio::time::sleep(5 * SEC).await;
    assert!(record(&fleet[0].breaker, Outcome::Success));
    assert!(record(&fleet[0].breaker, Outcome::Success));
    assert_eq!(fleet[0].breaker.state(), State::Closed);
    settle().await;
    let v = &store.list().await.unwrap()[0];
    assert_eq!(
        (v.state, v.epoch),
        (State::Closed, 0),
        "local probing stayed local"
    );
    assert!(fleet.iter().all(|i| i.breaker.state() == State::Closed));
}

#[tokio::test(start_paused = true)]
async fn with_a_quorum_a_trip_opens_the_whole_fleet() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let fleet = fleet_with(&store, 5, true, 3);
    settle().await;
    // Instances 1 and 2 see a few failures (not enough to trip alone)...
    for inst in &fleet[1..3] {
        for _ in 0..3 {
            record(&inst.breaker, Outcome::Failure);
        }
    }
    settle().await;
    settle().await;
    // ...so when instance 0 trips, three instances see the failure.
    for _ in 0..20 {
        record(&fleet[0].breaker, Outcome::Failure);
    }
    settle().await;
    for (i, inst) in fleet.iter().enumerate() {
        assert_eq!(inst.breaker.state(), State::Open, "instance {i}");
    }
    let v = &store.list().await.unwrap()[0];
    assert_eq!((v.state, v.epoch), (State::Open, 1));
}

#[tokio::test(start_paused = true)]
async fn a_custom_rule_judges_counts_and_latencies_of_the_same_calls() {
    // Failure rate ≥ 50 % AND p90 ≥ 100 ms: neither this instance's window
    // nor the fleet's holds both, but the fleet's failure rate with this
    // instance's p90 would.
    let store = MemoryStore::with_clock(TokioClock::new());
    let clock = TokioClock::new();
    let fleet: Vec<(Fleet, CircuitBreaker)> = (0..2)
        .map(|i| {
            let fleet = Fleet::builder(store.clone())
                .instance(&format!("i{i}"))
                .build()
                .unwrap();
            let breaker = CircuitBreaker::builder("search")
                .trip_when(|s| {
                    s.failure_rate() >= 0.5
                        && s.latency_quantile(0.9).is_some_and(|p90| p90 >= 100 * MS)
                })
                .minimum_calls(5)
                .window(Window::time(60 * SEC))
                .clock(clock)
                .fleet(&fleet)
                .build()
                .unwrap();
            (fleet, breaker)
        })
        .collect();
    settle().await;
    // Instance 1: 100 fast failures (its p90 is below 100 ms).
    for _ in 0..100 {
        record(&fleet[1].1, Outcome::Failure);
    }
    assert_eq!(fleet[1].1.state(), State::Closed);
    settle().await;
    // Instance 0: slow calls, mostly successes; it learns the fleet window.
    let here = fleet[0].1.clone();
    let slow = |o: Outcome| {
        let b = here.clone();
        async move {
            let p = b.try_acquire().unwrap();
            tokio::time::sleep(200 * MS).await;
            p.record(o);
        }
    };
    for _ in 0..4 {
        slow(Outcome::Success).await;
    }
    slow(Outcome::Failure).await;
    // Fleet: 105 calls, 96 % failed, p90 fast. Here: 5 calls, 20 % failed.
    assert_eq!(
        fleet[0].1.state(),
        State::Closed,
        "the fleet's failure rate must not be judged with this instance's p90"
    );
    // The rule still judges this instance's own window.
    for _ in 0..3 {
        slow(Outcome::Failure).await;
    }
    assert_eq!(
        fleet[0].1.state(),
        State::Open,
        "4 of 8 slow calls failed here"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reconciliation_pass_is_spread_over_rounds_and_checks_every_breaker() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let fleet = Fleet::builder(store.clone())
        .instance("i0")
        .reconcile_interval(SEC)
        .build()
        .unwrap();
    let clock = TokioClock::new();
    let breakers: Vec<CircuitBreaker> = (0..1_500)
        .map(|k| {
            CircuitBreaker::builder(&format!("endpoint-{k}"))
                .consecutive_failures(5)
                .clock(clock)
                .fleet(&fleet)
                .build()
                .unwrap()
        })
        .collect();
    fleet.sync_now().await;
    // Each round checks at most 512 breakers; the pass takes three rounds
    // and covers all 1,500 (the first starts within 1.25 s: its jitter is a
    // quarter of the interval at most).
    let mut last = fleet.reconciled();
    let mut rounds_checking = 0;
    for _ in 0..25 {
        settle().await;
        let now = fleet.reconciled();
        assert!(
            now - last <= 512,
            "{} breakers checked in one round",
            now - last
        );
        if now > last {
            rounds_checking += 1;
        }
        last = now;
        if last >= 1_500 {
            break;
        }
    }
    assert_eq!(last, 1_500, "one whole pass within 2.5 s");
    assert_eq!(rounds_checking, 3);
    drop(breakers);
}
