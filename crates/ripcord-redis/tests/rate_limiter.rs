//! The fleet-wide rate limiter on a real Redis: N instances together admit
//! the configured rate (± one burst); the store's faults and corrupt values.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ripcord::RateLimiter;
use ripcord_redis::{OnUnavailable, RedisRateLimiter, RedisStore};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_instances_together_admit_the_configured_rate() {
    bounded(LIMIT, async {
        let target = Target::Single(redis_url());
        let prefix = unique_prefix("gcra");
        let (rate, burst) = (200u64, 20u64);
        let run = Duration::from_secs(3);
        let admitted = Arc::new(AtomicU64::new(0));
        let attempts = Arc::new(AtomicU64::new(0));
        let mut limiters = Vec::new();
        for _ in 0..5 {
            let store = target.store(&prefix, false).await;
            limiters.push(
                RedisRateLimiter::builder(&store, "partner-api")
                    .rate(rate as u32, Duration::from_secs(1))
                    .burst(burst as u32)
                    .on_unavailable(OnUnavailable::Reject)
                    .build()
                    .unwrap(),
            );
        }
        let started = Instant::now();
        let tasks: Vec<_> = limiters
            .into_iter()
            .map(|l| {
                let (admitted, attempts) = (admitted.clone(), attempts.clone());
                tokio::spawn(async move {
                    while started.elapsed() < run {
                        if l.try_acquire().await.is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        attempts.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = started.elapsed();
        let admitted = admitted.load(Ordering::Relaxed);
        let attempts = attempts.load(Ordering::Relaxed);
        let expected = burst + (rate as f64 * elapsed.as_secs_f64()) as u64;
        println!(
            "fleet-wide limiter: {admitted} admitted of {attempts} attempts by 5 instances in \
             {elapsed:?}; configured {rate}/s burst {burst} → expected {expected} ± {burst}"
        );
        assert!(
            attempts > 3 * admitted,
            "the instances asked for more than the rate"
        );
        assert!(
            admitted.abs_diff(expected) <= burst,
            "{admitted} admitted, expected {expected} ± {burst}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_waits_for_a_reserved_permit() {
    bounded(LIMIT, async {
        let store = Target::Single(redis_url())
            .store(&unique_prefix("wait"), false)
            .await;
        let l = RedisRateLimiter::builder(&store, "slow")
            .rate(10, Duration::from_secs(1))
            .burst(1)
            .max_wait(Duration::from_millis(150))
            .build()
            .unwrap();
        l.acquire().await.unwrap();
        let t = Instant::now();
        l.acquire().await.unwrap(); // due in 100 ms: reserved, then waited for
        let waited = t.elapsed();
        // It waited for its permit; the upper bound is ten times the wait.
        assert!(waited >= 80 * MS && waited < 1000 * MS, "{waited:?}");
        // try_acquire never waits: the next permit is 100 ms out.
        let refused = l.try_acquire().await.unwrap_err();
        assert!(refused.retry_after() > 50 * MS, "{refused:?}");
        // Two reservations ahead (200 ms) is beyond max_wait: refused at once.
        l.acquire().await.unwrap();
        let t = Instant::now();
        let d = l
            .decide(1, Duration::from_millis(50))
            .await
            .expect("decision");
        assert!(
            matches!(d, ripcord::rate_limiter::Decision::Reject { .. }),
            "{d:?}"
        );
        // Refused without waiting: waiting would have taken the 200 ms.
        assert!(t.elapsed() < 200 * MS, "{:?}", t.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_store_follows_the_policy() {
    bounded(LIMIT, async {
        // Nothing listens on port 1.
        let store = RedisStore::builder("redis://127.0.0.1:1")
            .connect_lazily()
            .connect_timeout(Duration::from_millis(100))
            .build()
            .await
            .unwrap();
        let limiter = |p: OnUnavailable| {
            RedisRateLimiter::builder(&store, "down")
                .rate(1, Duration::from_secs(60))
                .on_unavailable(p)
                .build()
                .unwrap()
        };
        let t = Instant::now();
        assert!(limiter(OnUnavailable::Admit).try_acquire().await.is_ok());
        assert!(limiter(OnUnavailable::Reject).try_acquire().await.is_err());
        let local = RateLimiter::builder("local")
            .rate(1, Duration::from_secs(60))
            .burst(1)
            .build()
            .unwrap();
        let l = limiter(OnUnavailable::Local(local));
        assert!(l.try_acquire().await.is_ok());
        assert!(
            l.try_acquire().await.is_err(),
            "the local limiter's one permit is spent"
        );
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "no long waits on a dead store"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_limiter_key_is_reported_and_reset() {
    bounded(LIMIT, async {
        let target = Target::Single(redis_url());
        let store = target.store(&unique_prefix("gcra-corrupt"), false).await;
        let l = RedisRateLimiter::builder(&store, "api")
            .rate(100, Duration::from_secs(1))
            .burst(5)
            .build()
            .unwrap();
        let key = store.rate_limiter_key("api");
        for bad in [
            vec![redis::cmd("SET").arg(&key).arg("x").clone()],
            vec![
                redis::cmd("DEL").arg(&key).clone(),
                redis::cmd("HSET")
                    .arg(&key)
                    .arg("v")
                    .arg("1")
                    .arg("origin")
                    .arg("1")
                    .arg("tat")
                    .arg("oops")
                    .clone(),
            ],
        ] {
            for c in &bad {
                target.raw(c).await;
            }
            let before = store.corruptions();
            l.try_acquire().await.expect("a fresh limiter admits");
            assert_eq!(store.corruptions(), before + 1);
        }
        let _ = target.raw(redis::cmd("DEL").arg(&key)).await;
    })
    .await;
}
