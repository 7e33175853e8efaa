//! Loom model tests of the breaker's lock-free state machine.
//!
//! Compiled only with `--cfg loom` (then `crate::sync` swaps std's atomics and
//! `Mutex` for loom's, so every interleaving of the breaker's atomics and locks
//! is explored):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p ripcord --test loom --release
//! ```
//!
//! `loom` must be a `[target.'cfg(loom)'.dependencies]` entry of `ripcord`,
//! not a dev-dependency: `src/sync.rs` itself names `loom::…` under
//! `cfg(loom)`, and an integration test links the library built without its
//! dev-dependencies.
//!
//! Each model is kept small (two or three threads, a handful of operations
//! each), so loom explores every interleaving exhaustively (no preemption
//! bound) in a few seconds. Set `LOOM_MAX_PREEMPTIONS` to bound the search.
#![cfg(loom)]

use std::time::Duration;

use loom::sync::{Arc, Mutex};
use loom::thread;

use ripcord::{
    Backoff, CircuitBreaker, CircuitBreakerBuilder, Event, EventKind, ManualClock, Outcome,
    OwnedPermit, State,
};

/// Runs `f` under loom: every interleaving (or as bounded by the `LOOM_*`
/// environment variables, which `Builder::new` reads).
fn model(f: impl Fn() + Sync + Send + 'static) {
    loom::model::Builder::new().check(f);
}

/// Transition events seen by a listener: `(from, to, new epoch)` in delivery order.
#[derive(Clone, Default)]
struct Transitions(Arc<Mutex<Vec<(State, State, u64)>>>);

impl Transitions {
    fn listen(&self, builder: CircuitBreakerBuilder) -> CircuitBreakerBuilder {
        let log = self.0.clone();
        builder.on_event(move |e: &Event| {
            if let EventKind::Transition { from, to, .. } = e.kind {
                log.lock().unwrap().push((from, to, e.epoch));
            }
        })
    }

    fn seen(&self) -> Vec<(State, State, u64)> {
        self.0.lock().unwrap().clone()
    }
}

fn builder(clock: &ManualClock) -> CircuitBreakerBuilder {
    CircuitBreaker::builder("loom")
        .consecutive_failures(1)
        .window(ripcord::Window::count(4))
        .minimum_calls(1)
        .open_for(Backoff::fixed(Duration::from_secs(1)))
        .clock(clock.clone())
}

/// Trips a `consecutive_failures(1)` breaker and lets the open duration pass, so
/// it is half-open (epoch 2) with no probe admitted yet.
fn half_open(breaker: &CircuitBreaker, clock: &ManualClock) {
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(breaker.state(), State::Open);
    clock.advance(Duration::from_secs(1));
    assert_eq!(breaker.tick(), State::HalfOpen);
    assert_eq!(breaker.epoch(), 2);
}

/// Three callers race for `half_open_calls` probe slots: exactly that many get
/// one (none is freed: the winners hold their permits), never more.
fn probes_never_exceed_the_budget(half_open_calls: u32) {
    model(move || {
        let clock = ManualClock::new();
        let breaker = builder(&clock)
            .half_open_calls(half_open_calls)
            .build()
            .unwrap();
        half_open(&breaker, &clock);

        let threads: Vec<_> = (0..3)
            .map(|_| {
                let b = breaker.clone();
                thread::spawn(move || -> Option<OwnedPermit> {
                    match b.try_acquire_owned() {
                        Ok(p) => {
                            assert!(p.is_probe());
                            assert_eq!(p.epoch(), 2);
                            Some(p)
                        }
                        Err(r) => {
                            assert_eq!(r.state(), State::HalfOpen);
                            None
                        }
                    }
                })
            })
            .collect();
        let permits: Vec<OwnedPermit> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(permits.len(), half_open_calls as usize);
        assert_eq!(breaker.state(), State::HalfOpen);
        assert_eq!(breaker.epoch(), 2);
        // Dropped without a verdict: each frees its slot, no transition.
        drop(permits);
        assert_eq!(breaker.epoch(), 2);
    });
}

#[test]
fn one_probe_slot_goes_to_exactly_one_of_three_callers() {
    probes_never_exceed_the_budget(1);
}

#[test]
fn two_probe_slots_go_to_exactly_two_of_three_callers() {
    probes_never_exceed_the_budget(2);
}

/// Two failures recorded at once both want to trip a closed breaker: it trips
/// exactly once (epoch 1), and listeners see exactly one transition.
#[test]
fn concurrent_trips_apply_exactly_once() {
    model(|| {
        let clock = ManualClock::new();
        let seen = Transitions::default();
        let breaker = seen.listen(builder(&clock)).build().unwrap();
        // Both calls are admitted in epoch 0, before either fails.
        let a = breaker.try_acquire_owned().unwrap();
        let b = breaker.try_acquire_owned().unwrap();

        let t = thread::spawn(move || a.record(Outcome::Failure));
        b.record(Outcome::Failure);
        t.join().unwrap();

        assert_eq!(breaker.state(), State::Open);
        assert_eq!(breaker.epoch(), 1);
        assert_eq!(seen.seen(), vec![(State::Closed, State::Open, 1)]);
    });
}

/// A successful and a failed probe race; whichever verdict lands first decides,
/// the other is either consistent with it or stale. Exactly one transition.
fn racing_probes(half_open_successes: u32, expect: State) {
    model(move || {
        let clock = ManualClock::new();
        let seen = Transitions::default();
        let breaker = seen
            .listen(builder(&clock))
            .half_open_calls(2)
            .half_open_successes(half_open_successes)
            .build()
            .unwrap();
        half_open(&breaker, &clock);
        let ok = breaker.try_acquire_owned().unwrap();
        let bad = breaker.try_acquire_owned().unwrap();
        assert!(ok.is_probe() && bad.is_probe());

        let t = thread::spawn(move || ok.record(Outcome::Success));
        bad.record(Outcome::Failure);
        t.join().unwrap();

        assert_eq!(breaker.state(), expect);
        assert_eq!(breaker.epoch(), 3);
        let seen = seen.seen();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[2], (State::HalfOpen, expect, 3));
    });
}

#[test]
fn racing_probes_reopen_exactly_once_when_every_probe_must_succeed() {
    // half_open_successes = half_open_calls = 2: the failure makes closing
    // impossible, so the breaker re-opens whatever the order.
    racing_probes(2, State::Open);
}

#[test]
fn racing_probes_close_exactly_once_when_one_success_suffices() {
    // half_open_successes = 1 of 2: the success closes it; one failure out of
    // two probes cannot re-open it.
    racing_probes(1, State::Closed);
}

/// Two threads each cause a transition at once: both events are delivered, in
/// epoch order, before both calls have returned.
#[test]
fn concurrent_transitions_are_delivered_in_order() {
    model(|| {
        let clock = ManualClock::new();
        let seen = Transitions::default();
        let breaker = seen.listen(builder(&clock)).build().unwrap();

        let b = breaker.clone();
        let t = thread::spawn(move || b.force_open());
        breaker.reset();
        t.join().unwrap();

        assert_eq!(breaker.epoch(), 2);
        let seen = seen.seen();
        let epochs: Vec<u64> = seen.iter().map(|&(_, _, e)| e).collect();
        assert_eq!(epochs, vec![1, 2], "{seen:?}");
        // Each event's `from` is the state the previous one entered.
        assert_eq!(seen[0].0, State::Closed);
        assert_eq!(seen[1].0, seen[0].1);
        assert_eq!(breaker.state(), seen[1].1);
    });
}

/// A failure admitted in epoch 0 finishes while another thread resets the
/// breaker. Whichever happens first, the new epoch must start with no
/// consecutive failures: either the failure counted in epoch 0 and the reset
/// cleared it, or it finished after the reset and is stale (ignored).
///
/// Guards against the interleaving "epoch check → reset → increment", in which
/// a stale failure would count as the first failure of epoch 1 and a
/// `consecutive_failures(2)` breaker would trip on the first real failure after
/// the reset. The count is tagged with its epoch, so this cannot happen.
#[test]
fn a_failure_racing_a_reset_does_not_leak_into_the_new_epoch() {
    model(|| {
        let clock = ManualClock::new();
        let breaker = builder(&clock).consecutive_failures(2).build().unwrap();
        let stale = breaker.try_acquire_owned().unwrap();

        let b = breaker.clone();
        let t = thread::spawn(move || b.reset());
        stale.record(Outcome::Failure);
        t.join().unwrap();

        assert_eq!(breaker.epoch(), 1);
        assert_eq!(
            breaker.consecutive_failures(),
            0,
            "a failure of epoch 0 counted in epoch 1"
        );
        // So one failure in the new epoch must not trip a breaker that needs two.
        breaker.try_acquire().unwrap().record(Outcome::Failure);
        assert_eq!(breaker.state(), State::Closed);
    });
}

/// Two calls finish at once into a window bucket that neither has used yet;
/// both must be counted.
///
/// Under loom every thread writes to the one stripe (`stripe_count() == 1`),
/// which is what happens in production whenever more threads record than
/// there are stripes (at most 2 × cores, ≤ 64). A claim that published the
/// new bucket tag before zeroing the counters would let a thread add its call
/// in between and have it erased; `WindowState::claim` locks the slot while it
/// clears it.
#[test]
fn concurrent_calls_into_a_fresh_bucket_are_all_counted() {
    model(|| {
        let clock = ManualClock::new();
        let breaker = builder(&clock)
            .window(ripcord::Window::time(Duration::from_secs(1)).buckets(10))
            .build()
            .unwrap();
        // Bucket 1 (100..200 ms): its slot still holds bucket 0's tag.
        clock.advance(Duration::from_millis(100));

        let b = breaker.clone();
        let t = thread::spawn(move || b.try_acquire().unwrap().record(Outcome::Success));
        breaker.try_acquire().unwrap().record(Outcome::Success);
        t.join().unwrap();

        assert_eq!(breaker.stats().calls(), 2, "a call was lost");
    });
}
