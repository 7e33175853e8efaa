//! The per-call cost of a fleet-shared breaker: with `RedisStore` (its
//! background sync running against the Redis at `REDIS_URL`, default
//! `redis://127.0.0.1:6379`, every 100 ms), with `MemoryStore`, and with no
//! store, in one criterion run.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo bench -p ripcord-benches --bench redis_store
//! ```
//!
//! Every number is one protected call that succeeds on a closed breaker
//! (`try_acquire` + `record(Success)`), and one call refused by an open one.
//! The store is never on the hot path: the only difference a store makes to a
//! call is the check that the breaker's fleet link is active when the trip
//! rules run. Without a reachable Redis the `redis_store` cases are skipped.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, Criterion};
use ripcord::store::{Fleet, MemoryStore};
use ripcord::{Backoff, CircuitBreaker, CircuitBreakerBuilder, Outcome, State, Window};
use ripcord_redis::RedisStore;

fn template(name: &str) -> CircuitBreakerBuilder {
    CircuitBreaker::builder(name)
        .failure_rate(0.5)
        .minimum_calls(20)
        .window(Window::time(Duration::from_secs(10)))
        .open_for(Backoff::fixed(Duration::from_secs(3600)))
}

struct Setup {
    runtime: tokio::runtime::Runtime,
    none: CircuitBreaker,
    memory: (Fleet, CircuitBreaker),
    redis: Option<(Fleet, CircuitBreaker, RedisStore)>,
}

fn setup(name: &str) -> Setup {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("ripcord-bench-{}", std::process::id());
    let (memory, redis) = runtime.block_on(async {
        let fleet = Fleet::builder(MemoryStore::new())
            .instance("bench")
            .build()
            .expect("fleet");
        let b = template(name).fleet(&fleet).build().expect("breaker");
        fleet.sync_now().await;
        let redis = match RedisStore::builder(&url).key_prefix(&prefix).build().await {
            Ok(store) => {
                let fleet = Fleet::builder(store.clone())
                    .instance("bench")
                    .build()
                    .expect("fleet");
                let b = template(name).fleet(&fleet).build().expect("breaker");
                fleet.sync_now().await;
                Some((fleet, b, store))
            }
            Err(e) => {
                eprintln!("redis_store cases skipped: no Redis at {url} ({e})");
                None
            }
        };
        ((fleet, b), redis)
    });
    Setup {
        runtime,
        none: template(name).build().expect("breaker"),
        memory,
        redis,
    }
}

fn success(c: &mut Criterion) {
    let s = setup("bench-success");
    let mut g = c.benchmark_group("fleet_closed_success");
    let call = |b: &CircuitBreaker| {
        if let Ok(p) = b.try_acquire() {
            p.record(black_box(Outcome::Success));
        }
    };
    g.bench_function("no_store", |b| b.iter(|| call(&s.none)));
    g.bench_function("memory_store", |b| b.iter(|| call(&s.memory.1)));
    if let Some((fleet, breaker, _)) = &s.redis {
        let syncs = fleet.syncs();
        g.bench_function("redis_store", |b| b.iter(|| call(breaker)));
        eprintln!(
            "redis_store: {} background syncs during the run, last round trip {:?}, degraded: {}",
            fleet.syncs() - syncs,
            fleet.last_sync_latency(),
            fleet.is_degraded()
        );
    }
    g.finish();
    drop(s.runtime);
}

fn rejection(c: &mut Criterion) {
    let s = setup("bench-rejection");
    s.none.force_open();
    s.memory.1.force_open();
    if let Some((_, b, _)) = &s.redis {
        b.force_open();
    }
    s.runtime.block_on(async {
        s.memory.0.sync_now().await;
        if let Some((f, _, _)) = &s.redis {
            f.sync_now().await;
        }
    });
    let mut g = c.benchmark_group("fleet_rejection");
    let call = |b: &CircuitBreaker| black_box(b.try_acquire().is_err());
    g.bench_function("no_store", |b| b.iter(|| call(&s.none)));
    g.bench_function("memory_store", |b| b.iter(|| call(&s.memory.1)));
    if let Some((_, breaker, _)) = &s.redis {
        assert_eq!(breaker.state(), State::ForcedOpen);
        g.bench_function("redis_store", |b| b.iter(|| call(breaker)));
    }
    g.finish();
    drop(s.runtime);
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
        targets = super::success, super::rejection
    }
}

criterion_main!(group::benches);
