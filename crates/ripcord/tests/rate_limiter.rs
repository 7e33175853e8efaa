//! The rate limiter, on a manual clock or tokio's paused time (no real sleeps).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use ripcord::rate_limiter::{Decision, Gcra};
use ripcord::{
    Error, Event, EventKind, ManualClock, RateLimiter, RateLimiterBuilder, RateLimiterConfig,
    TokioClock,
};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

const _: () = {
    const fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<RateLimiter>();
    send_sync_static::<RateLimiterBuilder>();
    send_sync_static::<RateLimiterConfig>();
    send_sync_static::<Gcra>();
};

fn limiter(clock: &ManualClock, rate: u32, burst: u32) -> RateLimiter {
    RateLimiter::builder("api")
        .rate(rate, SEC)
        .burst(burst)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn drain(l: &RateLimiter) -> u64 {
    let mut n = 0;
    while l.try_acquire().is_ok() {
        n += 1;
    }
    n
}

#[test]
fn a_burst_then_the_sustained_rate() {
    let clock = ManualClock::new();
    let l = limiter(&clock, 100, 10);
    assert_eq!(drain(&l), 10);
    let refused = l.try_acquire().unwrap_err();
    assert_eq!(refused.retry_after(), 10 * MS);
    assert_eq!(refused.name(), "api");
    clock.advance(9 * MS);
    assert_eq!(l.try_acquire().unwrap_err().retry_after(), MS);
    clock.advance(MS);
    assert_eq!(drain(&l), 1);
    // A quiet spell refills the burst, never beyond it.
    clock.advance(10 * SEC);
    assert_eq!(drain(&l), 10);
}

#[test]
fn exact_over_a_long_virtual_run() {
    // 100 a second, bursts of 10, 1000 virtual seconds, polled every
    // millisecond: exactly 100 × 1000 + 10 admitted.
    let clock = ManualClock::new();
    let l = limiter(&clock, 100, 10);
    let mut admitted = drain(&l);
    for _ in 0..1_000_000 {
        clock.advance(MS);
        admitted += drain(&l);
    }
    assert_eq!(admitted, 100 * 1000 + 10);
}

#[test]
fn exact_with_an_odd_rate_and_sparse_polling() {
    // 7 per 3 s (T = 428.571… ms, rounded to the nanosecond), polled at
    // irregular times, always less than T apart: never more than
    // burst + ⌊t / T⌋, and exactly that at every poll.
    let clock = ManualClock::new();
    let l = RateLimiter::builder("odd")
        .rate(7, 3 * SEC)
        .burst(3)
        .clock(clock.clone())
        .build()
        .unwrap();
    let t = l.gcra().emission_interval;
    assert_eq!(t, 428_571_429);
    let mut admitted = drain(&l);
    let mut now = 0u64;
    for step in 1..=5000u64 {
        let dt = (step * 7919) % 97 + 1; // 1 to 97 ms
        clock.advance(Duration::from_millis(dt));
        now += dt * 1_000_000;
        admitted += drain(&l);
        assert!(admitted <= 3 + now / t, "{admitted} at {now}");
    }
    assert!(
        admitted + 3 >= 3 + now / t,
        "polled often enough to stay close"
    );
}

#[test]
fn exact_under_concurrency() {
    // Eight threads hammer the limiter at each virtual millisecond for 2
    // virtual seconds: exactly burst + 2 s / T admitted, never a permit more.
    let clock = ManualClock::new();
    let l = limiter(&clock, 1000, 50);
    let admitted = AtomicU64::new(0);
    let threads = 8;
    let start = Barrier::new(threads + 1);
    let done = Barrier::new(threads + 1);
    let steps = 2000;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..=steps {
                    start.wait();
                    for _ in 0..20 {
                        if l.try_acquire().is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done.wait();
                }
            });
        }
        for step in 0..=steps {
            start.wait();
            done.wait();
            if step < steps {
                clock.advance(MS);
            }
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 50 + 2000);
}

#[test]
fn exact_under_free_running_concurrency() {
    // Without lockstep: threads race freely while time stands still.
    let clock = ManualClock::new();
    let l = limiter(&clock, 10, 1000);
    let admitted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..500 {
                    if l.try_acquire().is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 1000);
}

#[tokio::test(start_paused = true)]
async fn acquire_waits_up_to_max_wait_then_refuses_at_once() {
    let l = RateLimiter::builder("wait")
        .rate(100, SEC)
        .burst(1)
        .max_wait(50 * MS)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let start = Instant::now();
    l.acquire().await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Each next permit is 10 ms later; waits of up to 50 ms are accepted.
    let mut waits = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        l.acquire().await.unwrap();
        waits.push(t.elapsed());
    }
    assert_eq!(waits, vec![10 * MS; 5]);
    // Concurrent callers reserve successive permits.
    let t = Instant::now();
    let (a, b) = tokio::join!(l.acquire(), l.acquire());
    a.unwrap();
    b.unwrap();
    assert_eq!(t.elapsed(), 20 * MS);
    // Six callers at once: the sixth would wait 60 ms and is refused at once.
    let t = Instant::now();
    let results = futures_join6(&l).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
    let refused = results.into_iter().find_map(Result::err).unwrap();
    assert_eq!(refused.retry_after(), 60 * MS);
    assert_eq!(t.elapsed(), 50 * MS);
}

async fn futures_join6(l: &RateLimiter) -> Vec<Result<(), ripcord::RateLimited>> {
    let (a, b, c, d, e, f) = tokio::join!(
        l.acquire(),
        l.acquire(),
        l.acquire(),
        l.acquire(),
        l.acquire(),
        l.acquire()
    );
    vec![a, b, c, d, e, f]
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_gives_its_permit_back() {
    let l = RateLimiter::builder("refund")
        .rate(100, SEC)
        .burst(1)
        .max_wait(SEC)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    l.try_acquire().unwrap(); // the next permit is at 10 ms
    let before = l.theoretical_arrival();
    // A waiter for it, cancelled at 1 ms.
    assert!(tokio::time::timeout(MS, l.acquire()).await.is_err());
    assert_eq!(l.theoretical_arrival(), before, "reservation given back");
    tokio::time::sleep(9 * MS).await;
    assert!(l.try_acquire().is_ok(), "the 10 ms permit is still there");

    // Not given back when a later call reserved after it.
    let first = l.acquire();
    let second = l.acquire();
    let mut first = Box::pin(first);
    let mut second = Box::pin(second);
    assert!(futures_poll_once(&mut first).await.is_none());
    assert!(futures_poll_once(&mut second).await.is_none());
    let tat = l.theoretical_arrival();
    drop(first);
    assert_eq!(l.theoretical_arrival(), tat);
    drop(second);
    assert_eq!(l.theoretical_arrival(), tat - 10_000_000, "the last one is");
}

/// Polls a future once; `Some` if it finished.
async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn execute_runs_only_admitted_calls() {
    let l = RateLimiter::builder("exec")
        .rate(1, SEC)
        .burst(1)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    assert_eq!(l.execute(|| async { Ok::<_, ()>(1) }).await.unwrap(), 1);
    let ran = AtomicU64::new(0);
    let r = l
        .execute(|| async {
            ran.fetch_add(1, Ordering::Relaxed);
            Ok::<_, ()>(2)
        })
        .await;
    let Err(Error::RateLimited(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.retry_after(), SEC);
    assert_eq!(ran.load(Ordering::Relaxed), 0);
    tokio::time::sleep(SEC).await;
    let r: Result<(), Error<&str>> = l
        .execute_composed(|| async { Err(Error::Inner("x")) })
        .await;
    assert!(matches!(r, Err(Error::Inner("x"))));
}

#[test]
fn emits_rate_limited() {
    let clock = ManualClock::new();
    let log: Arc<Mutex<Vec<Event>>> = Arc::default();
    let l2 = log.clone();
    let l = RateLimiter::builder("evt")
        .rate(10, SEC)
        .burst(1)
        .clock(clock.clone())
        .on_event(move |e| l2.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    l.try_acquire().unwrap();
    clock.advance(30 * MS);
    assert!(l.try_acquire().is_err());
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].at, 30 * MS);
    assert_eq!(
        log[0].kind,
        EventKind::RateLimited {
            retry_after: 70 * MS
        }
    );
}

/// The reference: a token bucket holding up to `burst · T` nanoseconds of
/// credit, refilled one nanosecond per nanosecond.
struct Bucket {
    credit: u64,
    last: u64,
}

impl Bucket {
    fn take(&mut self, g: &Gcra, now: u64, n: u32) -> Decision {
        let cap = g.emission_interval * u64::from(g.burst);
        self.credit = (self.credit + (now - self.last)).min(cap);
        self.last = now;
        let cost = g.emission_interval * u64::from(n);
        if cost > cap {
            Decision::Reject {
                retry_after: u64::MAX,
            }
        } else if self.credit >= cost {
            self.credit -= cost;
            Decision::Admit { wait: 0 }
        } else {
            Decision::Reject {
                retry_after: cost - self.credit,
            }
        }
    }
}

proptest! {
    /// GCRA decides exactly like a token bucket, refusal delays included.
    #[test]
    fn gcra_agrees_with_a_token_bucket(
        t in 1u64..1_000_000,
        burst in 1u32..50,
        steps in proptest::collection::vec((0u64..3_000_000, 1u32..60), 1..200),
    ) {
        let g = Gcra { emission_interval: t, burst };
        let mut bucket = Bucket { credit: t * u64::from(burst), last: 0 };
        let (mut tat, mut now) = (0u64, 0u64);
        for (dt, n) in steps {
            now += dt;
            let expected = bucket.take(&g, now, n);
            let (got, next) = g.decide(tat, now, n, 0);
            prop_assert_eq!(got, expected);
            if let Decision::Reject { .. } = got {
                prop_assert_eq!(next, tat);
            }
            tat = next;
        }
    }

    /// With a wait allowed, an admission waits exactly what a refusal
    /// without it would have asked for.
    #[test]
    fn a_wait_is_the_refusal_delay(
        t in 1u64..1_000_000, burst in 1u32..20, tat in 0u64..100_000_000, now in 0u64..100_000_000,
    ) {
        let g = Gcra { emission_interval: t, burst };
        let (refused, _) = g.decide(tat, now, 1, 0);
        let (waited, next) = g.decide(tat, now, 1, u64::MAX);
        match refused {
            Decision::Admit { wait } => prop_assert_eq!(waited, Decision::Admit { wait }),
            Decision::Reject { retry_after } => {
                prop_assert_eq!(waited, Decision::Admit { wait: retry_after });
            }
        }
        prop_assert_eq!(next, tat.max(now) + t);
    }
}

#[test]
fn validation_names_the_field_and_the_range() {
    let err = |b: RateLimiterBuilder| b.build().unwrap_err();
    assert_eq!(err(RateLimiter::builder("x").rate(0, SEC)).field(), "rate");
    let e = err(RateLimiter::builder("x").rate(10, Duration::from_nanos(5)));
    assert_eq!(e.field(), "period");
    let e = err(RateLimiter::builder("x").burst(0));
    assert_eq!(
        e.to_string(),
        "invalid `burst` = 0: expected at least 1 permit, and at most a burst whose refill fits in 584 years"
    );
    assert_eq!(
        err(RateLimiter::builder("x").max_wait(Duration::from_secs(400 * 86400))).field(),
        "max_wait"
    );
    assert_eq!(
        err(RateLimiter::builder("x").event_capacity(0)).field(),
        "event_capacity"
    );
    let d = RateLimiter::builder("defaults").build().unwrap();
    assert_eq!(
        d.gcra(),
        Gcra {
            emission_interval: 10_000_000,
            burst: 100
        }
    );
}

#[test]
fn config_deserializes_from_toml() {
    let c: RateLimiterConfig = toml::from_str(
        r#"
        rate = 100
        period = "1s"
        burst = 10
        max_wait = "50ms"
        "#,
    )
    .unwrap();
    assert_eq!(
        c,
        RateLimiterConfig {
            rate: 100,
            period: SEC,
            burst: Some(10),
            max_wait: 50 * MS,
        }
    );
    let l = RateLimiter::builder("cfg").config(c).build().unwrap();
    assert_eq!(l.gcra().burst, 10);
    assert_eq!(
        toml::from_str::<RateLimiterConfig>("").unwrap(),
        RateLimiterConfig::default()
    );
    assert!(toml::from_str::<RateLimiterConfig>("limit = 3").is_err());
    let bad: RateLimiterConfig = toml::from_str("rate = 0").unwrap();
    assert_eq!(bad.validate().unwrap_err().field(), "rate");
}

#[test]
fn validation_bounds_are_inclusive_where_documented() {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    let ok = |b: RateLimiterBuilder| b.build().map(|_| ()).map_err(|e| e.field());
    // A period and a wait of one year are allowed, a nanosecond more is not.
    assert_eq!(ok(RateLimiter::builder("x").rate(1, YEAR)), Ok(()));
    assert_eq!(
        ok(RateLimiter::builder("x").rate(1, YEAR + Duration::from_nanos(1))),
        Err("period")
    );
    assert_eq!(
        ok(RateLimiter::builder("x").rate(1, 2 * YEAR)),
        Err("period")
    );
    assert_eq!(ok(RateLimiter::builder("x").max_wait(YEAR)), Ok(()));
    assert_eq!(
        ok(RateLimiter::builder("x").max_wait(YEAR + Duration::from_nanos(1))),
        Err("max_wait")
    );
    // A period of exactly `rate` nanoseconds is the shortest.
    assert_eq!(
        ok(RateLimiter::builder("x").rate(10, Duration::from_nanos(10))),
        Ok(())
    );
    // The burst's refill (burst × period / rate) must fit in u64 nanoseconds:
    // 2 permits a year refill one in 0.5 year, so 1169 fit and 1170 do not.
    let b = |burst| RateLimiter::builder("x").rate(2, YEAR).burst(burst);
    assert_eq!(ok(b(1169)), Ok(()));
    assert_eq!(ok(b(1170)), Err("burst"));
}

#[test]
fn a_limiter_and_its_builder_say_what_they_are() {
    let b = RateLimiter::builder("partner-api").rate(5, SEC).burst(2);
    let shown = format!("{b:?}");
    assert!(shown.starts_with("RateLimiterBuilder"), "{shown}");
    assert!(
        shown.contains("partner-api") && shown.contains("rate: 5"),
        "{shown}"
    );
    let l = b.build().unwrap();
    assert_eq!(l.name(), "partner-api");
    let shown = format!("{l:?}");
    assert!(shown.starts_with("RateLimiter"), "{shown}");
    assert!(
        shown.contains("partner-api") && shown.contains("emission_interval: 200000000"),
        "{shown}"
    );
}
