//! Circuit breaker hot paths: ripcord side by side with `failsafe`, `recloser` and
//! `tower-resilience`, plus the baselines they are made of, in one criterion run.
//!
//! ```text
//! cargo bench -p ripcord-benches --bench breaker
//! ```
//!
//! Groups (every number is time per protected call):
//!
//! - `baseline/*`: an empty call, one atomic load, one atomic `fetch_add`,
//!   `Instant::now()` — the floor a breaker is built on.
//! - `closed_success/*`: one protected call that succeeds on a closed breaker.
//! - `rejection/*`: one call refused by an open breaker.
//! - `two_threads/*`: two threads hammer one shared breaker's success path; the
//!   time is total wall time divided by the calls of both threads, so it compares
//!   directly with `closed_success` (lower means more total throughput).
//!
//! `benches/README.md` explains each case and records a run.

use std::future::{Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion};
use failsafe::CircuitBreaker as _;
use tower::util::ServiceFn;
use tower::{Service, ServiceExt};

/// Open durations long enough that no open breaker recovers during a run.
const STAY_OPEN: Duration = Duration::from_secs(3600);

fn baseline(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    g.bench_function("empty", |b| b.iter(|| black_box(1_u64)));
    let counter = AtomicU64::new(0);
    g.bench_function("atomic_load", |b| {
        b.iter(|| black_box(&counter).load(Ordering::Acquire))
    });
    g.bench_function("atomic_fetch_add", |b| {
        b.iter(|| black_box(&counter).fetch_add(1, Ordering::AcqRel))
    });
    g.bench_function("instant_now", |b| b.iter(Instant::now));
    g.finish();
}

// ---------------------------------------------------------------------------
// Peer breakers, configured like ripcord's count-window breaker where they can be.
// ---------------------------------------------------------------------------

/// failsafe with only its consecutive-failures policy (20 in a row).
fn failsafe_consecutive(
    open_for: Duration,
) -> failsafe::StateMachine<
    failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::Constant>,
    (),
> {
    let policy =
        failsafe::failure_policy::consecutive_failures(20, failsafe::backoff::constant(open_for));
    failsafe::Config::new().failure_policy(policy).build()
}

/// recloser: failure rate ≥ 50 % over a ring of the last 100 calls.
fn recloser(open_for: Duration) -> recloser::Recloser {
    recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(100)
        .open_wait(open_for)
        .build()
}

/// The inner service tower-resilience wraps: answers at once.
fn answer(x: u64) -> Ready<Result<u64, ()>> {
    std::future::ready(Ok(x))
}

/// tower-resilience's breaker around [`answer`].
type TowerBreaker = tower_resilience::circuitbreaker::CircuitBreaker<
    ServiceFn<fn(u64) -> Ready<Result<u64, ()>>>,
    tower_resilience::circuitbreaker::DefaultClassifier,
>;

/// tower-resilience: failure rate ≥ 50 %, count window of 100, at least 20 calls.
fn tower_breaker() -> TowerBreaker {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(20)
        .wait_duration_in_open(STAY_OPEN)
        .build()
        .expect("valid tower-resilience config")
        .layer_fn(tower::service_fn(answer as fn(u64) -> _))
}

/// Runs a future to completion on the calling thread, as cheaply as possible.
///
/// Everything tower-resilience awaits on its hot path (its inner service, an
/// uncontended `tokio::sync::Mutex`) is ready on the first poll, so one poll with
/// a no-op waker finishes the call; no runtime is involved. Only when another
/// thread holds the breaker's mutex (`two_threads`) does the future return
/// `Pending`, and then it is handed to `futures::executor::block_on`, which parks
/// this thread until the mutex wakes it.
fn drive<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => futures::executor::block_on(fut),
    }
}

/// One request through a tower service: `poll_ready`, then `call`, then the response.
fn tower_call<S: Service<u64>>(svc: &mut S, x: u64) -> Result<S::Response, S::Error> {
    let svc = drive(svc.ready())?;
    drive(svc.call(x))
}

fn closed_success(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_success");
    ripcord_cases::closed_success(&mut g);

    let cb = failsafe_consecutive(STAY_OPEN);
    g.bench_function("failsafe_consecutive", |b| {
        b.iter(|| cb.call(|| Ok::<u64, ()>(black_box(1))))
    });

    let cb = failsafe::Config::new().build();
    g.bench_function("failsafe_default", |b| {
        b.iter(|| cb.call(|| Ok::<u64, ()>(black_box(1))))
    });

    let rc = recloser(STAY_OPEN);
    g.bench_function("recloser", |b| {
        b.iter(|| rc.call(|| Ok::<u64, ()>(black_box(1))))
    });

    let mut svc = tower_breaker();
    assert!(matches!(tower_call(&mut svc, 1), Ok(1)));
    g.bench_function("tower_resilience", |b| {
        b.iter(|| tower_call(&mut svc, black_box(1)))
    });
    g.finish();
}

fn rejection(c: &mut Criterion) {
    let mut g = c.benchmark_group("rejection");
    ripcord_cases::rejection(&mut g);

    // failsafe has no manual override: trip it with failures.
    let cb = failsafe_consecutive(STAY_OPEN);
    for _ in 0..20 {
        let _ = cb.call(|| Err::<u64, ()>(()));
    }
    assert!(matches!(
        cb.call(|| Ok::<u64, ()>(1)),
        Err(failsafe::Error::Rejected)
    ));
    g.bench_function("failsafe", |b| {
        b.iter(|| cb.call(|| Ok::<u64, ()>(black_box(1))))
    });

    // Nor does recloser: it judges once its ring of 100 calls is full.
    let rc = recloser(STAY_OPEN);
    for _ in 0..101 {
        let _ = rc.call(|| Err::<u64, ()>(()));
    }
    assert!(matches!(
        rc.call(|| Ok::<u64, ()>(1)),
        Err(recloser::Error::Rejected)
    ));
    g.bench_function("recloser", |b| {
        b.iter(|| rc.call(|| Ok::<u64, ()>(black_box(1))))
    });

    let mut svc = tower_breaker();
    drive(svc.force_open());
    assert!(matches!(
        tower_call(&mut svc, 1),
        Err(tower_resilience::circuitbreaker::CircuitBreakerError::OpenCircuit)
    ));
    g.bench_function("tower_resilience", |b| {
        b.iter(|| tower_call(&mut svc, black_box(1)))
    });
    g.finish();
}

/// Threads sharing one breaker in `two_threads`.
const THREADS: u64 = 2;

/// Splits `iters` calls over [`THREADS`] threads, each running its own worker made
/// by `make_worker` (all on one shared breaker), released together by a barrier.
///
/// Returns the wall time from the first thread's start to the last thread's end,
/// so criterion's time per iteration is wall time per call across all threads.
fn run_threads<W>(iters: u64, make_worker: impl Fn() -> W) -> Duration
where
    W: FnMut() + Send,
{
    let barrier = Barrier::new(THREADS as usize);
    let spans: Vec<(Instant, Instant)> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                // An equal share each; the first threads take the remainder.
                let calls = iters / THREADS + u64::from(i < iters % THREADS);
                let mut worker = make_worker();
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..calls {
                        worker();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect()
    });
    let first_start = spans.iter().map(|s| s.0).min().expect("threads ran");
    let last_end = spans.iter().map(|s| s.1).max().expect("threads ran");
    last_end - first_start
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_threads");
    ripcord_cases::two_threads(&mut g);

    let cb = failsafe_consecutive(STAY_OPEN);
    g.bench_function("failsafe_consecutive", |b| {
        b.iter_custom(|iters| {
            run_threads(iters, || {
                let cb = cb.clone();
                move || {
                    black_box(cb.call(|| Ok::<u64, ()>(black_box(1)))).expect("closed breaker");
                }
            })
        })
    });

    let rc = recloser(STAY_OPEN);
    g.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            run_threads(iters, || {
                let rc = &rc;
                move || {
                    black_box(rc.call(|| Ok::<u64, ()>(black_box(1)))).expect("closed breaker");
                }
            })
        })
    });

    // Clones of a tower-resilience service share one circuit.
    let svc = tower_breaker();
    g.bench_function("tower_resilience", |b| {
        b.iter_custom(|iters| {
            run_threads(iters, || {
                let mut svc = svc.clone();
                move || {
                    black_box(tower_call(&mut svc, black_box(1))).expect("closed breaker");
                }
            })
        })
    });
    g.finish();
}

/// ripcord's cases, one function per group.
mod ripcord_cases {
    use std::hint::black_box;
    use std::time::Duration;

    use criterion::measurement::WallTime;
    use criterion::BenchmarkGroup;
    use ripcord::{CircuitBreaker, Clock, ManualClock, Outcome, PreciseClock, SystemClock, Window};

    use super::run_threads;

    /// Trips at ≥ 50 % failures over the last 100 calls, once 20 are recorded.
    fn count_failure_rate() -> CircuitBreaker {
        CircuitBreaker::builder("bench")
            .failure_rate(0.5)
            .minimum_calls(20)
            .window(Window::count(100))
            .build()
            .expect("valid ripcord config")
    }

    /// A 10 s time window with a slow-call rule, so every call reads `clock` twice
    /// (at the start and at the end, to time it).
    fn time_slow_calls(clock: impl Clock) -> CircuitBreaker {
        CircuitBreaker::builder("bench")
            .failure_rate(0.5)
            .slow_calls(Duration::from_millis(800), 0.5)
            .window(Window::time(Duration::from_secs(10)))
            .clock(clock)
            .build()
            .expect("valid ripcord config")
    }

    pub(super) fn closed_success(g: &mut BenchmarkGroup<'_, WallTime>) {
        let b = count_failure_rate();
        g.bench_function("ripcord_count_failure_rate", |bench| {
            bench.iter(|| b.call_sync(|| Ok::<u64, ()>(black_box(1))))
        });

        // The default clock, a 1 ms ticker read with one atomic load.
        let b = time_slow_calls(SystemClock::new());
        g.bench_function("ripcord_time_slow_calls", |bench| {
            bench.iter(|| b.call_sync(|| Ok::<u64, ()>(black_box(1))))
        });

        // A clock tests drive by hand: also one atomic load.
        let b = time_slow_calls(ManualClock::new());
        g.bench_function("ripcord_time_slow_calls_manual_clock", |bench| {
            bench.iter(|| b.call_sync(|| Ok::<u64, ()>(black_box(1))))
        });

        // `Instant::now()` on every read.
        let b = time_slow_calls(PreciseClock::new());
        g.bench_function("ripcord_time_slow_calls_precise_clock", |bench| {
            bench.iter(|| b.call_sync(|| Ok::<u64, ()>(black_box(1))))
        });

        let b = count_failure_rate();
        g.bench_function("ripcord_try_acquire_record", |bench| {
            bench.iter(|| {
                let permit = b.try_acquire().expect("closed breaker");
                permit.record(Outcome::Success);
            })
        });
    }

    pub(super) fn rejection(g: &mut BenchmarkGroup<'_, WallTime>) {
        let b = count_failure_rate();
        b.force_open();
        assert!(b.try_acquire().is_err());
        g.bench_function("ripcord", |bench| bench.iter(|| b.try_acquire().is_err()));
        assert!(b
            .call_sync(|| Ok::<u64, ()>(1))
            .is_err_and(|e| e.is_rejected()));
        g.bench_function("ripcord_call_sync", |bench| {
            bench.iter(|| b.call_sync(|| Ok::<u64, ()>(black_box(1))))
        });
    }

    pub(super) fn two_threads(g: &mut BenchmarkGroup<'_, WallTime>) {
        let cases = [
            ("ripcord_count_failure_rate", count_failure_rate()),
            (
                "ripcord_time_slow_calls",
                time_slow_calls(SystemClock::new()),
            ),
        ];
        for (name, b) in cases {
            g.bench_function(name, |bench| {
                bench.iter_custom(|iters| {
                    run_threads(iters, || {
                        let b = b.clone();
                        move || {
                            black_box(b.call_sync(|| Ok::<u64, ()>(black_box(1))))
                                .expect("closed breaker");
                        }
                    })
                })
            });
        }
    }
}

/// The criterion group; a module so its generated function needs no doc comment.
mod group {
    use std::time::Duration;

    use criterion::{criterion_group, Criterion};

    fn config() -> Criterion {
        Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .sample_size(50)
    }

    criterion_group! {
        name = benches;
        config = config();
        targets = super::baseline, super::closed_success, super::rejection, super::two_threads
    }
}

criterion_main!(group::benches);
