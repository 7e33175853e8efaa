//! The hot path allocates nothing: deciding a call, recording its outcome and
//! rejecting a call while open never touch the heap.
//!
//! Allocations are counted by a counting global allocator, per thread, so the
//! test harness and other tests running in parallel never pollute a
//! measurement.
//!
//! Why a dev-dependency (`allocation-counter`) rather than a `GlobalAlloc` of
//! our own: a global allocator needs `unsafe impl GlobalAlloc`, and the
//! workspace sets `unsafe_code = "forbid"`. Integration tests inherit the
//! package's `[lints]` (cargo passes `-F unsafe_code` to every target), and a
//! command-line `forbid` cannot be lowered by `#![allow(unsafe_code)]` in the
//! file (error E0453), so the `unsafe` has to live in another crate. Linking
//! `allocation-counter` makes its counting allocator the global allocator of
//! this test binary only (no other target refers to the crate).

use std::hint::black_box;
use std::time::Duration;

use ripcord::{Backoff, CircuitBreaker, Error, ManualClock, Outcome, State, Window};

const ITERATIONS: usize = 10_000;

/// Runs `f` and asserts it made no heap allocation on this thread.
fn assert_no_alloc(what: &str, f: impl FnOnce()) {
    let info = allocation_counter::measure(f);
    assert_eq!(info.count_total, 0, "{what} allocated: {info:?}");
}

#[test]
fn the_counting_allocator_is_installed() {
    // Guards the other tests against passing vacuously.
    let info = allocation_counter::measure(|| {
        black_box(Box::new(1u64));
    });
    assert_eq!(info.count_total, 1);
}

fn exercise(breaker: &CircuitBreaker, clock: Option<&ManualClock>) {
    let tick = || {
        if let Some(c) = clock {
            c.advance(Duration::from_millis(1));
        }
    };
    // Warm up: thread-local stripe assignment, first use of every bucket.
    for _ in 0..2 * ITERATIONS {
        black_box(breaker.call_sync(|| Ok::<_, ()>(1))).unwrap();
        tick();
    }
    assert_no_alloc("call_sync, success", || {
        for _ in 0..ITERATIONS {
            let r = breaker.call_sync(|| Ok::<_, ()>(black_box(1)));
            assert!(matches!(r, Ok(1)));
            tick();
        }
    });
    assert_no_alloc("try_acquire + record(Success)", || {
        for _ in 0..ITERATIONS {
            let permit = breaker.try_acquire().unwrap();
            permit.record(black_box(Outcome::Success));
            tick();
        }
    });
    assert_no_alloc("try_acquire_owned + record(Success)", || {
        for _ in 0..ITERATIONS {
            let permit = breaker.try_acquire_owned().unwrap();
            permit.record(Outcome::Success);
            tick();
        }
    });
    assert_no_alloc("permits dropped without a verdict", || {
        for _ in 0..ITERATIONS {
            drop(black_box(breaker.try_acquire().unwrap()));
        }
    });
    // A few failures between successes: the trip rules are evaluated (they
    // read the window) but do not trip.
    assert_no_alloc("failures below the threshold", || {
        for i in 0..ITERATIONS {
            let ok = i % 10 != 0;
            let r = breaker.call_sync(|| if ok { Ok(1) } else { Err(()) });
            assert_eq!(r.is_ok(), ok);
            tick();
        }
    });
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn count_window_with_failure_rate() {
    let breaker = CircuitBreaker::builder("alloc-count")
        .failure_rate(0.5)
        .minimum_calls(10)
        .window(Window::count(100))
        .build()
        .unwrap();
    exercise(&breaker, None);
}

#[test]
fn time_window_with_slow_call_rule() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("alloc-time")
        .failure_rate(0.5)
        .slow_calls(Duration::from_millis(800), 0.5)
        .consecutive_failures(20)
        .minimum_calls(10)
        .window(Window::time(Duration::from_secs(1)).buckets(10))
        .clock(clock.clone())
        .build()
        .unwrap();
    // One millisecond per call: the window rolls over a bucket every 100 calls.
    exercise(&breaker, Some(&clock));
}

#[test]
fn time_window_with_latency_histogram() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("alloc-histogram")
        .trip_when(|s| {
            s.latency_quantile(0.9)
                .is_some_and(|p| p > Duration::from_secs(5))
        })
        .minimum_calls(10)
        .window(Window::time(Duration::from_secs(1)))
        .clock(clock.clone())
        .build()
        .unwrap();
    exercise(&breaker, Some(&clock));
}

fn assert_rejections_do_not_allocate(breaker: &CircuitBreaker, state: State) {
    for _ in 0..100 {
        assert!(breaker.try_acquire().is_err());
    }
    assert_no_alloc("rejections", || {
        for _ in 0..ITERATIONS {
            let r = breaker.try_acquire();
            assert_eq!(r.as_ref().unwrap_err().state(), state);
            let r = breaker.call_sync(|| Ok::<_, ()>(1));
            assert!(matches!(r, Err(Error::Rejected(_))));
        }
    });
}

#[test]
fn rejecting_while_forced_open() {
    for name in [
        "short",
        "a name longer than twenty-two bytes is shared, not copied",
    ] {
        let breaker = CircuitBreaker::builder(name).build().unwrap();
        breaker.force_open();
        assert_rejections_do_not_allocate(&breaker, State::ForcedOpen);
    }
}

#[test]
fn rejecting_while_open() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("alloc-open")
        .consecutive_failures(1)
        .open_for(Backoff::fixed(Duration::from_secs(60)))
        .clock(clock.clone())
        .build()
        .unwrap();
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(breaker.state(), State::Open);
    assert_rejections_do_not_allocate(&breaker, State::Open);
}

#[test]
fn rejecting_while_half_open_probes_are_in_flight() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("alloc-half-open")
        .consecutive_failures(1)
        .open_for(Backoff::fixed(Duration::from_secs(1)))
        .half_open_calls(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    clock.advance(Duration::from_secs(1));
    let probe = breaker.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert_rejections_do_not_allocate(&breaker, State::HalfOpen);
    probe.record(Outcome::Success);
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn events_to_a_listener_do_not_allocate() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("alloc-events")
        .slow_calls(Duration::from_millis(800), 0.5)
        .window(Window::count(100))
        .clock(clock.clone())
        .on_event(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();
    // Outcome events on every recorded call.
    exercise(&breaker, Some(&clock));
    let before = seen.load(Ordering::Relaxed);
    // Rejection events.
    breaker.force_open();
    assert_rejections_do_not_allocate(&breaker, State::ForcedOpen);
    assert!(seen.load(Ordering::Relaxed) > before + ITERATIONS);
}

/// Fault injection's not-injected path allocates nothing: disabled, and
/// enabled for calls it spares.
#[test]
fn fault_injection_that_spares_a_call_allocates_nothing() {
    use ripcord::chaos::{Chaos, Latency};
    let off = Chaos::builder("off")
        .abort(0.5)
        .enabled(false)
        .build()
        .unwrap();
    let on = Chaos::builder("on")
        .abort(0.01)
        .latency(0.01, Latency::fixed(Duration::from_millis(1)))
        .seed(3)
        .build()
        .unwrap();
    for _ in 0..ITERATIONS {
        black_box(on.decide());
    }
    assert_no_alloc("decide, disabled", || {
        for _ in 0..ITERATIONS {
            assert!(black_box(off.decide()).is_none());
        }
    });
    let mut spared = 0;
    assert_no_alloc("decide, enabled", || {
        for _ in 0..ITERATIONS {
            spared += u32::from(black_box(on.decide()).is_none());
        }
    });
    assert!(spared > 9_000, "{spared}");
}
