//! What `ripcord-metrics` adds to a protected call: the same breaker with no
//! listener, with a listener that does nothing (the core's cost of building
//! and delivering an event), and instrumented with `ripcord_metrics::Metrics`,
//! in one criterion run.
//!
//! ```text
//! cargo bench -p ripcord-benches --bench metrics
//! ```
//!
//! Groups (every number is time per protected call that succeeds, unless
//! said otherwise); each has the cases `none`, `noop_listener` and `metrics`:
//!
//! - `metrics_count_breaker`: `failure_rate(0.5)` over `Window::count(100)`;
//!   the breaker measures no time, so the outcome event carries a zero
//!   duration.
//! - `metrics_timed_breaker`: adds `slow_calls(800 ms, 0.5)` and
//!   `Window::time(10 s)` on the default `SystemClock`: the call is timed and
//!   its duration observed.
//! - `metrics_registry_member`: a breaker from a `Registry` whose template
//!   carries the listener; the listener's cached name is another key's, so
//!   each event looks its name up in the metrics' lock-free table.
//! - `metrics_rejection`: a forced-open breaker refusing the call.
//! - `metrics_two_threads` (`none` and `metrics` only): the count breaker
//!   called by two threads sharing it; time is wall time over the calls of
//!   both threads.
//!
//! `benches/README.md` records a run.

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkGroup, Criterion};
use ripcord::{CircuitBreaker, CircuitBreakerBuilder, Registry, Window};
use ripcord_metrics::Metrics;

/// How a breaker is observed.
#[derive(Clone, Copy)]
enum Attached {
    /// No listener: the core builds no event.
    Nothing,
    /// A listener that does nothing.
    NoopListener,
    /// `Metrics::instrument`.
    Metrics,
}

const CASES: [(&str, Attached); 3] = [
    ("none", Attached::Nothing),
    ("noop_listener", Attached::NoopListener),
    ("metrics", Attached::Metrics),
];

fn count_breaker() -> CircuitBreakerBuilder {
    CircuitBreaker::builder("payments")
        .failure_rate(0.5)
        .minimum_calls(20)
        .window(Window::count(100))
}

fn timed_breaker() -> CircuitBreakerBuilder {
    count_breaker()
        .slow_calls(Duration::from_millis(800), 0.5)
        .window(Window::time(Duration::from_secs(10)))
}

fn attach(builder: CircuitBreakerBuilder, how: Attached, metrics: &Metrics) -> CircuitBreaker {
    match how {
        Attached::Nothing => builder,
        Attached::NoopListener => builder.on_event(|e| {
            black_box(e);
        }),
        Attached::Metrics => metrics.instrument(builder),
    }
    .build()
    .expect("valid breaker")
}

fn bench_calls(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    b: &CircuitBreaker,
) {
    g.bench_function(name, |bench| {
        bench.iter(|| b.call_sync(|| Ok::<u64, ()>(black_box(1))))
    });
}

fn count_and_timed(c: &mut Criterion) {
    for (group, make) in [
        (
            "metrics_count_breaker",
            count_breaker as fn() -> CircuitBreakerBuilder,
        ),
        ("metrics_timed_breaker", timed_breaker),
    ] {
        let mut g = c.benchmark_group(group);
        for (name, how) in CASES {
            let metrics = Metrics::new();
            let b = attach(make(), how, &metrics);
            b.call_sync(|| Ok::<u64, ()>(1)).expect("closed");
            if matches!(how, Attached::Metrics) {
                let text = metrics.render();
                assert!(text.contains(r#"name="payments",outcome="success"} 1"#));
            }
            bench_calls(&mut g, name, &b);
        }
        g.finish();
    }
}

fn registry_member(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_registry_member");
    for (name, how) in CASES {
        let metrics = Metrics::new();
        let template = match how {
            Attached::Nothing => count_breaker(),
            Attached::NoopListener => count_breaker().on_event(|e| {
                black_box(e);
            }),
            Attached::Metrics => metrics.instrument(count_breaker()),
        };
        let registry: Registry<String> = Registry::builder(template).build().expect("valid");
        // The first key's name is the one the shared listener caches.
        let first = registry
            .get(&"api.example.com/users".to_string())
            .expect("member");
        first.call_sync(|| Ok::<u64, ()>(1)).expect("closed");
        let b = registry
            .get(&"api.example.com/orders".to_string())
            .expect("member");
        bench_calls(&mut g, name, &b);
    }
    g.finish();
}

fn rejection(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_rejection");
    for (name, how) in CASES {
        let metrics = Metrics::new();
        let b = attach(count_breaker(), how, &metrics);
        b.force_open();
        assert!(b
            .call_sync(|| Ok::<u64, ()>(1))
            .is_err_and(|e| e.is_rejected()));
        g.bench_function(name, |bench| {
            bench.iter(|| b.call_sync(|| Ok::<u64, ()>(black_box(1))))
        });
    }
    g.finish();
}

const THREADS: u64 = 2;

/// Runs `iters` calls split between [`THREADS`] threads released together;
/// returns the wall time from the first start to the last end.
fn run_threads(iters: u64, b: &CircuitBreaker) -> Duration {
    let barrier = Barrier::new(THREADS as usize);
    let spans: Vec<(Instant, Instant)> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let calls = iters / THREADS + u64::from(i < iters % THREADS);
                let b = b.clone();
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..calls {
                        black_box(b.call_sync(|| Ok::<u64, ()>(black_box(1)))).expect("closed");
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
    let first = spans.iter().map(|s| s.0).min().expect("threads ran");
    let last = spans.iter().map(|s| s.1).max().expect("threads ran");
    last - first
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_two_threads");
    for (name, how) in [CASES[0], CASES[2]] {
        let metrics = Metrics::new();
        let b = attach(count_breaker(), how, &metrics);
        g.bench_function(name, |bench| {
            bench.iter_custom(|iters| run_threads(iters, &b))
        });
    }
    g.finish();
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
        targets = super::count_and_timed, super::registry_member, super::rejection, super::two_threads
    }
}

criterion_main!(group::benches);
