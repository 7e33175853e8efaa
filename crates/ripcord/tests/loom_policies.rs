//! Loom model tests of the lock-free cores of the bulkhead, the rate limiter
//! and the retry budget.
//!
//! Compiled only with `--cfg loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p ripcord --test loom_policies --release
//! ```
#![cfg(loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;

use ripcord::{Bulkhead, ManualClock, RateLimiter, RetryBudget};

fn model(f: impl Fn() + Sync + Send + 'static) {
    loom::model::Builder::new().check(f);
}

/// Wakes a parked loom thread.
struct Unpark(thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `f` on this loom thread, parking between polls.
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(std::sync::Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

#[test]
fn bulkhead_never_hands_out_more_slots_than_it_has() {
    model(|| {
        let b = Bulkhead::builder("loom").max_concurrent(1).build().unwrap();
        let got = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (b, got) = (b.clone(), got.clone());
                thread::spawn(move || {
                    if let Ok(p) = b.try_acquire() {
                        got.fetch_add(1, Ordering::SeqCst);
                        drop(p);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(got.load(Ordering::SeqCst) >= 1);
        assert_eq!((b.in_use(), b.queued()), (0, 0));
    });
}

#[test]
fn bulkhead_release_races_a_newcomer_into_the_queue() {
    model(|| {
        let b = Bulkhead::builder("loom")
            .max_concurrent(1)
            .max_queued(1)
            .build()
            .unwrap();
        let held = b.try_acquire_owned().unwrap();
        let waiter = {
            let b = b.clone();
            thread::spawn(move || {
                // Either a slot is free at once, or it queues and is handed the
                // slot when `held` is dropped: it must never be stranded.
                let p = block_on(b.acquire()).expect("queued, then served");
                drop(p);
            })
        };
        drop(held);
        waiter.join().unwrap();
        assert_eq!((b.in_use(), b.queued()), (0, 0));
    });
}

#[test]
fn bulkhead_cancelled_waiter_never_leaks_the_slot() {
    model(|| {
        let b = Bulkhead::builder("loom")
            .max_concurrent(1)
            .max_queued(1)
            .build()
            .unwrap();
        let held = b.try_acquire_owned().unwrap();
        let waiter = {
            let b = b.clone();
            thread::spawn(move || {
                let mut fut = pin!(b.acquire());
                let mut cx = Context::from_waker(Waker::noop());
                // Queued (or served at once); then cancelled either way.
                if let Poll::Ready(p) = fut.as_mut().poll(&mut cx) {
                    drop(p);
                }
            })
        };
        drop(held);
        waiter.join().unwrap();
        assert_eq!((b.in_use(), b.queued()), (0, 0));
        assert!(b.try_acquire().is_ok());
    });
}

#[test]
fn rate_limiter_admits_exactly_the_burst() {
    model(|| {
        let clock = ManualClock::new();
        let l = RateLimiter::builder("loom")
            .rate(1, Duration::from_secs(1))
            .burst(3)
            .clock(clock)
            .build()
            .unwrap();
        let admitted = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (l, admitted) = (l.clone(), admitted.clone());
                thread::spawn(move || {
                    for _ in 0..2 {
                        if l.try_acquire().is_ok() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn retry_budget_grants_the_last_retry_once() {
    model(|| {
        let budget = RetryBudget::builder()
            .ratio(1.0)
            .min_per_second(0)
            .clock(ManualClock::new())
            .build()
            .unwrap();
        budget.deposit();
        let granted = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (budget, granted) = (budget.clone(), granted.clone());
                thread::spawn(move || {
                    if budget.try_withdraw() {
                        granted.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(granted.load(Ordering::SeqCst), 1);
        assert_eq!(budget.available(), 0);
    });
}
