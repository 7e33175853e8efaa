//! One hot path, called in a loop, for instruction counting under callgrind.
//!
//! ```text
//! cargo build --profile callgrind -p ripcord-benches --example hotpath
//! valgrind --tool=callgrind --toggle-collect='hotpath::measure*' \
//!     target/callgrind/examples/hotpath closed_count 1000000
//! ```
//!
//! Each case builds its breaker (or policy) first, then runs `n` calls inside
//! [`measure`]; with `--toggle-collect` callgrind counts only the
//! instructions executed inside it, so the count divided by `n` is the cost
//! of one call (the loop's own increment and branch included), as criterion's
//! `iter` runs it: the result of each call goes through `black_box`.
//! `scripts/callgrind.sh` runs every case and prints the table.
//!
//! `hotpath list` prints the cases.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use failsafe::CircuitBreaker as _;
use ripcord::{
    Bulkhead, CircuitBreaker, ManualClock, Outcome, Pipeline, RateLimiter, Registry, Window,
};
use tower::Service;

/// Open durations long enough that no open breaker recovers during a run.
const STAY_OPEN: Duration = Duration::from_secs(3600);

/// Runs `f` `n` times; callgrind counts the instructions spent in here.
#[inline(never)]
fn measure<R>(n: u64, mut f: impl FnMut() -> R) {
    for _ in 0..n {
        black_box(f());
    }
}

/// Trips at ≥ 50 % failures over the last 100 calls, once 20 are recorded.
fn count_failure_rate() -> ripcord::CircuitBreakerBuilder {
    CircuitBreaker::builder("bench")
        .failure_rate(0.5)
        .minimum_calls(20)
        .window(Window::count(100))
}

/// A 10 s time window with a slow-call rule: every call reads the clock twice.
fn time_slow_calls() -> ripcord::CircuitBreakerBuilder {
    CircuitBreaker::builder("bench")
        .failure_rate(0.5)
        .slow_calls(Duration::from_millis(800), 0.5)
        .window(Window::time(Duration::from_secs(10)))
}

fn failsafe_consecutive() -> impl failsafe::CircuitBreaker {
    let policy =
        failsafe::failure_policy::consecutive_failures(20, failsafe::backoff::constant(STAY_OPEN));
    failsafe::Config::new().failure_policy(policy).build()
}

fn recloser() -> recloser::Recloser {
    recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(100)
        .open_wait(STAY_OPEN)
        .build()
}

/// Polls a future once with a no-op waker (everything here is ready at once).
fn poll_once<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the bench's futures are ready at once"),
    }
}

/// A runtime whose timer the timeouts register with (they never fire: every
/// call is ready at once).
fn timer_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

/// tower's retry policy of the pipeline case: up to 3 attempts, errors
/// retried at once.
#[derive(Clone)]
struct ErrorsThrice(u32);

impl<E> tower::retry::Policy<u64, u64, E> for ErrorsThrice {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        match result {
            Err(_) if self.0 > 1 => {
                self.0 -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn answer(x: u64) -> Ready<Result<u64, Infallible>> {
    std::future::ready(Ok(x))
}

type Answer = tower::util::ServiceFn<fn(u64) -> Ready<Result<u64, Infallible>>>;

fn ripcord_tower(b: CircuitBreaker) -> ripcord_tower::CircuitBreakerService<Answer> {
    ripcord_tower::CircuitBreakerService::new(tower::service_fn(answer as fn(u64) -> _), b)
}

fn ok() -> Result<u64, ()> {
    Ok(black_box(1))
}

/// A case: its name, and what it runs with the number of calls.
type Case = (&'static str, fn(u64));

/// The cases.
const CASES: &[Case] = &[
    ("empty", |n| measure(n, || black_box(1_u64))),
    ("closed_count", |n| {
        let b = count_failure_rate().build().unwrap();
        measure(n, || b.call_sync(ok));
    }),
    ("closed_time_slow", |n| {
        let b = time_slow_calls().build().unwrap();
        measure(n, || b.call_sync(ok));
    }),
    ("closed_time_slow_manual_clock", |n| {
        let b = time_slow_calls().clock(ManualClock::new()).build().unwrap();
        measure(n, || b.call_sync(ok));
    }),
    ("closed_try_acquire_record", |n| {
        let b = count_failure_rate().build().unwrap();
        measure(n, || b.try_acquire().unwrap().record(Outcome::Success));
    }),
    ("reject_try_acquire", |n| {
        let b = count_failure_rate().build().unwrap();
        b.force_open();
        measure(n, || b.try_acquire().is_err());
    }),
    ("reject_call_sync", |n| {
        let b = count_failure_rate().build().unwrap();
        b.force_open();
        measure(n, || b.call_sync(ok));
    }),
    ("reject_open_call_sync", |n| {
        let b = CircuitBreaker::builder("bench")
            .consecutive_failures(1)
            .open_for(ripcord::Backoff::fixed(STAY_OPEN))
            .build()
            .unwrap();
        b.try_acquire().unwrap().failure();
        assert!(b.call_sync(ok).is_err());
        measure(n, || b.call_sync(ok));
    }),
    ("tower_closed", |n| {
        let mut svc = ripcord_tower(count_failure_rate().build().unwrap());
        measure(n, || poll_once(svc.call(black_box(1))));
    }),
    ("tower_reject", |n| {
        let b = count_failure_rate().build().unwrap();
        b.force_open();
        let mut svc = ripcord_tower(b);
        assert!(poll_once(svc.call(1)).is_err());
        measure(n, || poll_once(svc.call(black_box(1))));
    }),
    ("failsafe_closed", |n| {
        let cb = failsafe_consecutive();
        measure(n, || cb.call(ok));
    }),
    ("failsafe_reject", |n| {
        let cb = failsafe_consecutive();
        for _ in 0..20 {
            let _ = cb.call(|| Err::<u64, ()>(()));
        }
        assert!(cb.call(ok).is_err());
        measure(n, || cb.call(ok));
    }),
    ("recloser_closed", |n| {
        let rc = recloser();
        measure(n, || rc.call(ok));
    }),
    ("recloser_reject", |n| {
        let rc = recloser();
        for _ in 0..101 {
            let _ = rc.call(|| Err::<u64, ()>(()));
        }
        assert!(rc.call(ok).is_err());
        measure(n, || rc.call(ok));
    }),
    ("pipeline_execute_four", |n| {
        // The pipeline bench's four-policy case, as `Pipeline::execute`.
        let rt = timer_runtime();
        let _in_runtime = rt.enter();
        let p = ripcord_benches::four_policies().build().unwrap();
        measure(n, || poll_once(p.execute(|| std::future::ready(Ok(1)))));
    }),
    ("pipeline_execute_four_chaos_off", |n| {
        // The same, with fault injection inside, switched off.
        let rt = timer_runtime();
        let _in_runtime = rt.enter();
        let p = ripcord_benches::four_policies()
            .chaos(ripcord::Chaos::builder("bench").abort(0.5).enabled(false))
            .build()
            .unwrap();
        measure(n, || poll_once(p.execute(|| std::future::ready(Ok(1)))));
    }),
    ("pipeline_execute_four_chaos_spared", |n| {
        // The same, fault injection on but sparing every call of the run.
        let rt = timer_runtime();
        let _in_runtime = rt.enter();
        let spared = ripcord::Chaos::builder("bench")
            .outcome(1e-9, ripcord::Outcome::Success)
            .seed(1);
        let p = ripcord_benches::four_policies()
            .chaos(spared)
            .build()
            .unwrap();
        measure(n, || poll_once(p.execute(|| std::future::ready(Ok(1)))));
    }),
    ("chaos_decide_off", |n| {
        let c = ripcord::Chaos::builder("bench")
            .abort(0.5)
            .enabled(false)
            .build()
            .unwrap();
        measure(n, || c.decide());
    }),
    ("chaos_decide_spared", |n| {
        let c = ripcord::Chaos::builder("bench")
            .outcome(1e-9, ripcord::Outcome::Success)
            .seed(1)
            .build()
            .unwrap();
        measure(n, || c.decide());
    }),
    ("tower_retry_timeout_concurrency_limit", |n| {
        // tower's equivalent stack (no breaker: tower has none).
        let rt = timer_runtime();
        let _in_runtime = rt.enter();
        let mut svc = tower::ServiceBuilder::new()
            .retry(ErrorsThrice(3))
            .timeout(Duration::from_secs(2))
            .concurrency_limit(100)
            .service(tower::service_fn(|x: u64| {
                std::future::ready(Ok::<u64, tower::BoxError>(x))
            }));
        measure(n, || {
            poll_once(tower::ServiceExt::ready(&mut svc)).unwrap();
            poll_once(svc.call(1))
        });
    }),
    ("pipeline_admit_breaker", |n| {
        let p = Pipeline::<u64, ()>::builder()
            .circuit_breaker(count_failure_rate())
            .build()
            .unwrap();
        measure(n, || p.admit().unwrap().unwrap().finish(ok()));
    }),
    ("registry_get", |n| {
        let r: Registry<String> = Registry::builder(count_failure_rate()).build().unwrap();
        let key = "api.example.com/orders".to_string();
        r.get(&key).unwrap();
        measure(n, || r.get(&key).unwrap());
    }),
    ("metrics_closed_count", |n| {
        let m = ripcord_metrics::Metrics::new();
        let b = m.instrument(count_failure_rate()).build().unwrap();
        measure(n, || b.call_sync(ok));
    }),
    ("rate_limiter_try_acquire", |n| {
        let l = RateLimiter::builder("bench")
            .rate(1_000_000_000, Duration::from_secs(1))
            .burst(1_000_000_000)
            .build()
            .unwrap();
        measure(n, || l.try_acquire().is_ok());
        assert!(l.try_acquire().is_ok(), "a burst of 10⁹ admits every call");
    }),
    ("bulkhead_try_acquire", |n| {
        let h = Bulkhead::builder("bench")
            .max_concurrent(8)
            .build()
            .unwrap();
        measure(n, || h.try_acquire().is_ok());
    }),
];

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_default();
    let n: u64 = args
        .next()
        .map_or(1_000_000, |s| s.parse().expect("a count"));
    if which == "list" {
        for (name, _) in CASES {
            println!("{name}");
        }
        return;
    }
    match CASES.iter().find(|(name, _)| *name == which) {
        Some((_, run)) => run(n),
        None => panic!("unknown case {which:?}; `hotpath list` prints the cases"),
    }
}
