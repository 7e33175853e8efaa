//! The cost of a pipeline around a call that succeeds at once: ripcord's empty
//! pipeline and its timeout → retry → circuit breaker → bulkhead pipeline,
//! beside tower's own retry → timeout → concurrency-limit stack doing the same
//! work, in one criterion run.
//!
//! ```text
//! cargo bench -p ripcord-benches --bench pipeline
//! ```
//!
//! Every case runs its calls inside one `block_on` of a current-thread tokio
//! runtime (`iter_custom`), so the runtime's entry cost is not per call. The
//! protected call is `std::future::ready(Ok(x))`. `benches/README.md`
//! explains each case and records a run.

use std::future::{ready, Ready};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion};
use ripcord::{Chaos, Outcome, Pipeline};
use tower::retry::Policy;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};

const TIMEOUT: Duration = Duration::from_secs(2);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

/// tower's retry policy: up to 3 attempts in all, retrying errors at once.
#[derive(Clone)]
struct Attempts(u32);

impl<E> Policy<u64, u64, E> for Attempts {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => None,
            Err(_) if self.0 > 1 => {
                self.0 -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn pipeline(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("pipeline");

    g.bench_function("direct_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(ready(Ok::<u64, ()>(black_box(i))).await.unwrap());
                }
                start.elapsed()
            })
        })
    });

    let empty = Pipeline::<u64, ()>::builder().build().unwrap();
    g.bench_function("ripcord_empty", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let r = empty.execute(|| ready(Ok(black_box(i)))).await;
                    black_box(r.unwrap());
                }
                start.elapsed()
            })
        })
    });

    let full = ripcord_benches::four_policies().build().unwrap();
    g.bench_function("ripcord_timeout_retry_breaker_bulkhead", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let r = full.execute(|| ready(Ok(black_box(i)))).await;
                    black_box(r.unwrap());
                }
                start.elapsed()
            })
        })
    });

    // The same four policies with fault injection inside them: switched
    // off, and switched on at a rate so low that no call of the run is hit
    // (a hit would only force a success outcome): the not-injected path.
    for (case, chaos) in [
        (
            "ripcord_four_policies_chaos_off",
            Chaos::builder("bench").abort(0.5).enabled(false),
        ),
        (
            "ripcord_four_policies_chaos_spared",
            Chaos::builder("bench")
                .outcome(1e-9, Outcome::Success)
                .seed(1),
        ),
    ] {
        let p = ripcord_benches::four_policies()
            .chaos(chaos)
            .build()
            .unwrap();
        g.bench_function(case, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        let r = p.execute(|| ready(Ok(black_box(i)))).await;
                        black_box(r.unwrap());
                    }
                    start.elapsed()
                })
            })
        });
    }

    let mut tower_stack = rt.block_on(async {
        ServiceBuilder::new()
            .retry(Attempts(3))
            .timeout(TIMEOUT)
            .concurrency_limit(100)
            .service(service_fn(|x: u64| ready(Ok::<u64, BoxError>(x))))
    });
    g.bench_function("tower_retry_timeout_concurrency_limit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let svc = tower_stack.ready().await.unwrap();
                    let r = svc.call(black_box(i)).await;
                    black_box(r.unwrap());
                }
                start.elapsed()
            })
        })
    });
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
        targets = super::pipeline
    }
}

criterion_main!(group::benches);
