//! The retry policy and the retry budget, on tokio's paused time or a manual
//! clock (no real sleeps).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use ripcord::retry::{Attempt, RetryStep};
use ripcord::timeout::with_deadline;
use ripcord::{
    Backoff, Bulkhead, CircuitBreaker, Error, Event, EventKind, ManualClock, Outcome, RateLimiter,
    Retry, RetryBudget, RetryBudgetConfig, RetryBuilder, RetryConfig, TimeoutPolicy, TokioClock,
};
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

const _: () = {
    const fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<Retry>();
    send_sync_static::<RetryBuilder>();
    send_sync_static::<RetryConfig>();
    send_sync_static::<RetryBudget>();
    send_sync_static::<Attempt>();
};

/// A spawned retry future is `Send`.
#[allow(dead_code)]
fn execute_is_send(retry: Retry) {
    fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
    spawnable(async move {
        retry
            .execute(|| async { Ok::<_, std::io::Error>(()) })
            .await
    });
}

fn retry(backoff: Backoff) -> RetryBuilder {
    Retry::builder("dep")
        .backoff(backoff)
        .clock(TokioClock::new())
        .seed(7)
}

/// Runs `retry` on a call that always fails; returns the attempt times since
/// the start.
async fn attempt_times(retry: &Retry) -> (Vec<Duration>, Result<(), Error<&'static str>>) {
    let start = Instant::now();
    let times = Mutex::new(Vec::new());
    let r = retry
        .execute(|| {
            times.lock().unwrap().push(start.elapsed());
            async { Err::<(), _>("down") }
        })
        .await;
    (times.into_inner().unwrap(), r)
}

fn logged(b: RetryBuilder) -> (Retry, Arc<Mutex<Vec<Event>>>) {
    let log: Arc<Mutex<Vec<Event>>> = Arc::default();
    let l = log.clone();
    let r = b
        .on_event(move |e| l.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    (r, log)
}

fn kinds(log: &Arc<Mutex<Vec<Event>>>) -> Vec<EventKind> {
    log.lock().unwrap().iter().map(|e| e.kind.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn constant_backoff_attempt_times() {
    let r = retry(Backoff::fixed(100 * MS))
        .max_attempts(4)
        .build()
        .unwrap();
    let (times, result) = attempt_times(&r).await;
    assert_eq!(times, vec![Duration::ZERO, 100 * MS, 200 * MS, 300 * MS]);
    assert!(matches!(result, Err(Error::Inner("down"))));
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_attempt_times_with_cap() {
    let r = retry(Backoff::exponential(100 * MS, 300 * MS))
        .max_attempts(5)
        .build()
        .unwrap();
    let (times, _) = attempt_times(&r).await;
    // Delays 100, 200, 300 (capped), 300.
    assert_eq!(
        times,
        vec![Duration::ZERO, 100 * MS, 300 * MS, 600 * MS, 900 * MS]
    );

    let r = retry(Backoff::exponential(10 * MS, SEC).factor(3.0))
        .max_attempts(4)
        .build()
        .unwrap();
    let (times, _) = attempt_times(&r).await;
    assert_eq!(times, vec![Duration::ZERO, 10 * MS, 40 * MS, 130 * MS]);
}

#[tokio::test(start_paused = true)]
async fn custom_backoff_attempt_times() {
    let r = retry(Backoff::from_fn(|n| u32::pow(10, n) * MS))
        .max_attempts(4)
        .build()
        .unwrap();
    let (times, _) = attempt_times(&r).await;
    assert_eq!(times, vec![Duration::ZERO, 10 * MS, 110 * MS, 1110 * MS]);
}

/// The delays a seeded policy schedules for a call that always fails.
fn scheduled_delays(backoff: Backoff, seed: u64, attempts: u32) -> (Vec<Duration>, Vec<Duration>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let (r, log) = logged(
            Retry::builder("jitter")
                .backoff(backoff)
                .max_attempts(attempts)
                .clock(TokioClock::new())
                .seed(seed),
        );
        let (times, _) = attempt_times(&r).await;
        let delays = kinds(&log)
            .into_iter()
            .filter_map(|k| match k {
                EventKind::RetryScheduled { delay, .. } => Some(delay),
                _ => None,
            })
            .collect();
        (delays, times)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn full_jitter_stays_between_zero_and_the_exponential_delay(
        seed: u64, base_ms in 1u64..500, cap_factor in 1u32..64,
    ) {
        let base = Duration::from_millis(base_ms);
        let cap = base * cap_factor;
        let (delays, times) = scheduled_delays(Backoff::exponential(base, cap).full_jitter(), seed, 8);
        prop_assert_eq!(delays.len(), 7);
        for (k, d) in delays.iter().enumerate() {
            let bound = (base * 2u32.pow(k as u32)).min(cap);
            prop_assert!(*d <= bound, "retry {}: {:?} > {:?}", k + 1, d, bound);
        }
        // Each attempt starts its delay after the previous one (tokio's
        // timer rounds up to the millisecond).
        for (k, d) in delays.iter().enumerate() {
            let gap = times[k + 1] - times[k];
            prop_assert!(gap >= *d && gap - *d < MS, "gap {:?} for delay {:?}", gap, d);
        }
    }

    #[test]
    fn decorrelated_jitter_stays_between_base_and_three_times_the_last(
        seed: u64, base_ms in 1u64..500, cap_factor in 1u32..64,
    ) {
        let base = Duration::from_millis(base_ms);
        let cap = base * cap_factor;
        let (delays, times) = scheduled_delays(Backoff::decorrelated_jitter(base, cap), seed, 10);
        prop_assert_eq!(delays.len(), 9);
        let mut previous = base;
        for (k, d) in delays.iter().enumerate() {
            prop_assert!(*d >= base && *d <= cap, "retry {}: {:?}", k + 1, d);
            prop_assert!(*d <= previous * 3, "retry {}: {:?} after {:?}", k + 1, d, previous);
            let gap = times[k + 1] - times[k];
            prop_assert!(gap >= *d && gap - *d < MS, "gap {:?} for delay {:?}", gap, d);
            previous = *d;
        }
    }

    #[test]
    fn proportional_jitter_stays_within_its_ratio(
        seed: u64, base_ms in 1u64..500, ratio in 0.0f64..=1.0,
    ) {
        let base = Duration::from_millis(base_ms);
        let (delays, _) = scheduled_delays(Backoff::fixed(base).jitter(ratio), seed, 6);
        for d in delays {
            prop_assert!(d >= base.mul_f64(1.0 - ratio).saturating_sub(Duration::from_nanos(1)));
            prop_assert!(d <= base.mul_f64(1.0 + ratio) + Duration::from_nanos(1));
        }
    }
}

#[test]
fn a_seed_makes_jitter_reproducible() {
    let b = Backoff::exponential(10 * MS, SEC).full_jitter();
    let (a, _) = scheduled_delays(b.clone(), 42, 6);
    let (again, _) = scheduled_delays(b.clone(), 42, 6);
    let (other, _) = scheduled_delays(b, 43, 6);
    assert_eq!(a, again);
    assert_ne!(a, other);
}

#[tokio::test(start_paused = true)]
async fn successes_are_not_retried_and_a_late_success_wins() {
    let r = retry(Backoff::fixed(10 * MS))
        .max_attempts(5)
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let ok = r
        .execute(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok::<_, &str>("fine")
        })
        .await;
    assert_eq!((ok.unwrap(), calls.swap(0, Ordering::Relaxed)), ("fine", 1));

    let late = r
        .execute(|| async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0..=2 => Err("flaky"),
                _ => Ok("finally"),
            }
        })
        .await;
    assert_eq!(late.unwrap(), "finally");
    assert_eq!(calls.load(Ordering::Relaxed), 4);
}

#[tokio::test(start_paused = true)]
async fn a_single_attempt_never_retries() {
    let r = retry(Backoff::fixed(MS)).max_attempts(1).build().unwrap();
    let (times, result) = attempt_times(&r).await;
    assert_eq!(times.len(), 1);
    assert!(result.is_err());
}

#[derive(Debug, PartialEq)]
struct HttpError {
    status: u16,
    retry_after: Option<Duration>,
}

fn http(status: u16) -> HttpError {
    HttpError {
        status,
        retry_after: None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_predicate_decides_what_is_retried() {
    let r = retry(Backoff::fixed(10 * MS))
        .max_attempts(3)
        .retry_on(|r: &Result<u16, HttpError>| match r {
            Ok(status) => *status == 503,
            Err(e) => e.status >= 500,
        })
        .build()
        .unwrap();

    // 404: not retried.
    let calls = AtomicU32::new(0);
    let res = r
        .execute(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<u16, _>(http(404))
        })
        .await;
    assert!(matches!(
        res,
        Err(Error::Inner(HttpError { status: 404, .. }))
    ));
    assert_eq!(calls.swap(0, Ordering::Relaxed), 1);

    // A 503 returned as a value is retried, and returned as is at the end.
    let res = r
        .execute(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok::<u16, HttpError>(503)
        })
        .await;
    assert_eq!(res.unwrap(), 503);
    assert_eq!(calls.swap(0, Ordering::Relaxed), 3);

    // Calls of another type keep the default rule (retry every Err).
    let res = r
        .execute(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>("other type")
        })
        .await;
    assert!(res.is_err());
    assert_eq!(calls.load(Ordering::Relaxed), 3);
}

#[tokio::test(start_paused = true)]
async fn a_classifier_retries_failures_only_never_ignored() {
    let r = retry(Backoff::fixed(MS))
        .max_attempts(3)
        .classify(|r: &Result<(), HttpError>| match r {
            Ok(()) => Outcome::Success,
            Err(e) if e.status >= 500 => Outcome::Failure,
            Err(_) => Outcome::Ignored,
        })
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let _ = r
        .execute(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(http(409))
        })
        .await;
    assert_eq!(calls.swap(0, Ordering::Relaxed), 1, "ignored: no retry");
    let _ = r
        .execute(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(http(502))
        })
        .await;
    assert_eq!(calls.load(Ordering::Relaxed), 3, "failure: retried");
}

#[tokio::test(start_paused = true)]
async fn a_server_given_delay_is_honoured() {
    let r = retry(Backoff::fixed(100 * MS))
        .max_attempts(3)
        .retry_after(|e: &HttpError| e.retry_after)
        .build()
        .unwrap();
    let start = Instant::now();
    let times = Mutex::new(Vec::new());
    let _ = r
        .execute(|| {
            let n = {
                let mut t = times.lock().unwrap();
                t.push(start.elapsed());
                t.len()
            };
            async move {
                Err::<(), _>(HttpError {
                    status: 503,
                    // The server asks for 2 s after the first attempt, 10 ms
                    // (less than the backoff) after the second.
                    retry_after: Some(if n == 1 { 2 * SEC } else { 10 * MS }),
                })
            }
        })
        .await;
    assert_eq!(
        times.into_inner().unwrap(),
        vec![Duration::ZERO, 2 * SEC, 2 * SEC + 100 * MS]
    );
}

#[tokio::test(start_paused = true)]
async fn a_retried_value_can_carry_its_delay() {
    // E.g. an HTTP response with status 429 and a Retry-After header.
    let r = retry(Backoff::fixed(MS))
        .max_attempts(2)
        .retry_on(|r: &Result<(u16, u64), ()>| matches!(r, Ok((429, _))))
        .retry_after(|resp: &(u16, u64)| Some(Duration::from_secs(resp.1)))
        .build()
        .unwrap();
    let start = Instant::now();
    let res = r.execute(|| async { Ok::<_, ()>((429u16, 3u64)) }).await;
    assert_eq!(res.unwrap(), (429, 3));
    assert_eq!(start.elapsed(), 3 * SEC);
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_past_max_total_time() {
    let (r, log) = logged(
        retry(Backoff::fixed(400 * MS))
            .max_attempts(10)
            .max_total_time(SEC),
    );
    let (times, result) = attempt_times(&r).await;
    // A fourth attempt would start at 1.2 s.
    assert_eq!(times, vec![Duration::ZERO, 400 * MS, 800 * MS]);
    assert!(matches!(result, Err(Error::Inner("down"))));
    assert_eq!(
        kinds(&log).last(),
        Some(&EventKind::RetriesExhausted { attempts: 3 })
    );

    // Time spent in the attempts counts too.
    let r = retry(Backoff::fixed(100 * MS))
        .max_attempts(10)
        .max_total_time(SEC)
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let _ = r
        .execute(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            sleep(300 * MS).await;
            Err::<(), _>("slow failure")
        })
        .await;
    // Attempts start at 0, 400, 800 ms; the next would start at 1.2 s.
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    assert_eq!(start.elapsed(), 1100 * MS);
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_past_the_callers_deadline() {
    let r = retry(Backoff::fixed(300 * MS))
        .max_attempts(10)
        .build()
        .unwrap();
    let start = Instant::now();
    let (times, result) = with_deadline(start + SEC, attempt_times(&r)).await;
    assert_eq!(times, vec![Duration::ZERO, 300 * MS, 600 * MS, 900 * MS]);
    // The last error, not a timeout: nothing was cancelled.
    assert!(matches!(result, Err(Error::Inner("down"))));
    assert_eq!(start.elapsed(), 900 * MS);

    // The same with an explicit deadline on a manual run.
    let mut run = r.start();
    run.set_deadline(Instant::now() + 500 * MS);
    assert_eq!(run.begin_attempt(), 1);
    assert!(matches!(
        run.next(Err::<(), _>("x")),
        RetryStep::Retry { after } if after == 300 * MS
    ));
    sleep(300 * MS).await;
    assert_eq!(run.begin_attempt(), 2);
    assert!(matches!(
        run.next(Err::<(), _>("x")),
        RetryStep::Done(Err("x"))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_outside_bounds_the_whole_a_timeout_inside_each_attempt() {
    // timeout(1 s) → retry: the retry stops scheduling at the deadline.
    let timeout = TimeoutPolicy::builder("total")
        .timeout(SEC)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let r = retry(Backoff::fixed(300 * MS))
        .max_attempts(10)
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let res = timeout
        .execute_composed(|| {
            r.execute(|| async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>("down")
            })
        })
        .await;
    assert!(matches!(res, Err(Error::Inner("down"))));
    assert_eq!(calls.swap(0, Ordering::Relaxed), 4);
    assert_eq!(start.elapsed(), 900 * MS);

    // retry → timeout(100 ms): each attempt is cut at 100 ms and retried.
    let per_attempt = TimeoutPolicy::builder("attempt")
        .timeout(100 * MS)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let start = Instant::now();
    let res = r
        .execute_composed(|| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            per_attempt.execute(move || async move {
                if n < 2 {
                    sleep(SEC).await; // hangs
                }
                Ok::<_, &str>(n)
            })
        })
        .await;
    assert_eq!(res.unwrap(), 2);
    // 100 (timeout) + 300 (backoff) + 100 + 300.
    assert_eq!(start.elapsed(), 800 * MS);
}

#[tokio::test(start_paused = true)]
async fn the_last_policy_error_is_returned() {
    let per_attempt = TimeoutPolicy::builder("attempt")
        .timeout(100 * MS)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let r = retry(Backoff::fixed(MS)).max_attempts(2).build().unwrap();
    let res = r
        .execute_composed(|| {
            per_attempt.execute(|| async {
                sleep(SEC).await;
                Ok::<_, ()>(())
            })
        })
        .await;
    assert!(matches!(res, Err(Error::Timeout(ref t)) if t.name() == "attempt"));
}

fn breaker(open_for: Duration) -> CircuitBreaker {
    CircuitBreaker::builder("db")
        .consecutive_failures(1)
        .open_for(Backoff::fixed(open_for))
        .clock(TokioClock::new())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_breaker_rejection_is_retried_at_the_next_probe_time() {
    let b = breaker(SEC);
    let r = retry(Backoff::fixed(10 * MS))
        .max_attempts(4)
        .build()
        .unwrap();
    let start = Instant::now();
    let times = Mutex::new(Vec::new());
    let res = r
        .execute_composed(|| {
            let n = {
                let mut t = times.lock().unwrap();
                t.push(start.elapsed());
                t.len()
            };
            b.call(move || async move {
                if n == 1 {
                    Err("down")
                } else {
                    Ok("up")
                }
            })
        })
        .await;
    assert_eq!(res.unwrap(), "up");
    // Attempt 1 trips the breaker; attempt 2 (at 10 ms) is rejected with 990 ms
    // to go; attempt 3 comes exactly at the probe time and closes the breaker.
    assert_eq!(
        times.into_inner().unwrap(),
        vec![Duration::ZERO, 10 * MS, SEC]
    );
}

#[tokio::test(start_paused = true)]
async fn a_rejection_is_returned_when_the_probe_is_past_the_deadline() {
    let b = breaker(10 * SEC);
    let (r, log) = logged(
        retry(Backoff::fixed(10 * MS))
            .max_attempts(5)
            .max_total_time(5 * SEC),
    );
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let res = r
        .execute_composed(|| {
            calls.fetch_add(1, Ordering::Relaxed);
            b.call(|| async { Err::<(), _>("down") })
        })
        .await;
    let Err(Error::Rejected(rej)) = res else {
        panic!("{res:?}")
    };
    assert_eq!(rej.retry_after(), 10 * SEC - 10 * MS);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        2,
        "only the call inside the breaker ran once"
    );
    assert_eq!(
        start.elapsed(),
        10 * MS,
        "returned at once, not after waiting"
    );
    assert_eq!(
        kinds(&log).last(),
        Some(&EventKind::RetriesExhausted { attempts: 2 })
    );
}

#[tokio::test(start_paused = true)]
async fn a_forced_open_breaker_is_not_retried() {
    let b = breaker(SEC);
    b.force_open();
    let r = retry(Backoff::fixed(MS)).max_attempts(5).build().unwrap();
    let calls = AtomicU32::new(0);
    let res = r
        .execute_composed(|| {
            calls.fetch_add(1, Ordering::Relaxed);
            b.call(|| async { Ok::<_, ()>(()) })
        })
        .await;
    assert!(matches!(res, Err(Error::Rejected(_))));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_attempt_waits_for_the_next_permit() {
    let limiter = RateLimiter::builder("rl")
        .rate(1, SEC)
        .burst(1)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let r = retry(Backoff::fixed(MS)).max_attempts(3).build().unwrap();
    limiter.try_acquire().unwrap();
    let start = Instant::now();
    let res = r
        .execute_composed(|| limiter.execute(|| async { Ok::<_, ()>("in") }))
        .await;
    assert_eq!(res.unwrap(), "in");
    assert_eq!(start.elapsed(), SEC);
}

#[tokio::test(start_paused = true)]
async fn a_composed_predicate_sees_policy_errors() {
    let limiter = RateLimiter::builder("rl")
        .rate(1, SEC)
        .burst(1)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    limiter.try_acquire().unwrap();
    // Never retry rate-limit refusals; retry everything else.
    let r = retry(Backoff::fixed(MS))
        .max_attempts(3)
        .retry_on(
            |r: &Result<(), Error<()>>| matches!(r, Err(e) if !matches!(e, Error::RateLimited(_))),
        )
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let res = r
        .execute_composed(|| {
            calls.fetch_add(1, Ordering::Relaxed);
            limiter.execute(|| async { Ok::<_, ()>(()) })
        })
        .await;
    assert!(matches!(res, Err(Error::RateLimited(_))));
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_hold_no_bulkhead_slot_while_waiting() {
    let bulkhead = Bulkhead::builder("bh").max_concurrent(1).build().unwrap();
    let r = retry(Backoff::fixed(SEC)).max_attempts(2).build().unwrap();
    let task = {
        let (r, bulkhead) = (r.clone(), bulkhead.clone());
        tokio::spawn(async move {
            r.execute_composed(|| bulkhead.execute(|| async { Err::<(), _>("x") }))
                .await
        })
    };
    sleep(500 * MS).await; // mid-backoff
    assert_eq!(bulkhead.in_use(), 0);
    assert!(bulkhead.try_acquire().is_ok());
    assert!(task.await.unwrap().is_err());
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_across_policies() {
    let budget = RetryBudget::builder()
        .ratio(0.1)
        .min_per_second(0)
        .window(10 * SEC)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let (a, log) = logged(
        retry(Backoff::fixed(MS))
            .max_attempts(3)
            .budget(budget.clone()),
    );
    let b = retry(Backoff::fixed(MS))
        .max_attempts(3)
        .budget(budget.clone())
        .build()
        .unwrap();
    assert!(a.budget().is_some());

    // 20 calls that succeed at once, 10 through each policy: 2 retries earned.
    for _ in 0..10 {
        a.execute(|| async { Ok::<_, ()>(()) }).await.unwrap();
        b.execute(|| async { Ok::<_, ()>(()) }).await.unwrap();
    }
    assert_eq!(budget.available(), 2);

    let calls = AtomicU32::new(0);
    let _ = b
        .execute(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>("down")
        })
        .await;
    // Its own deposit (0.1) plus 2: two retries.
    assert_eq!(calls.swap(0, Ordering::Relaxed), 3);
    let _ = a
        .execute(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>("down")
        })
        .await;
    assert_eq!(calls.load(Ordering::Relaxed), 1, "budget spent: no retry");
    assert_eq!(kinds(&log).last(), Some(&EventKind::RetryBudgetExhausted));
}

#[tokio::test(start_paused = true)]
async fn a_budget_from_the_config_is_private() {
    let cfg: RetryConfig = toml::from_str(
        r#"
        max_attempts = 5
        backoff = "1ms"
        budget = { ratio = 0.5, min_per_second = 0, window = "10s" }
        "#,
    )
    .unwrap();
    let r = Retry::builder("cfg")
        .config(cfg)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    // Two calls deposit 1 retry; the second call uses it.
    r.execute(|| async { Ok::<_, ()>(()) }).await.unwrap();
    let _ = r
        .execute(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(())
        })
        .await;
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[test]
fn budget_deposits_expire_after_the_window_and_the_minimum_remains() {
    let clock = ManualClock::new();
    let budget = RetryBudget::builder()
        .ratio(0.5)
        .min_per_second(1)
        .window(10 * SEC)
        .clock(clock.clone())
        .build()
        .unwrap();
    // The reserve: 1 a second over 10 s.
    assert_eq!(budget.available(), 10);
    for _ in 0..10 {
        budget.deposit();
    }
    assert_eq!(budget.available(), 15);
    for _ in 0..15 {
        assert!(budget.try_withdraw());
    }
    assert!(!budget.try_withdraw());
    // Still spent 9.9 s later: the withdrawals count as long as the deposits.
    clock.advance(9 * SEC + 900 * MS);
    assert!(!budget.try_withdraw());
    // A full window later, both have expired; the reserve is back.
    clock.advance(100 * MS);
    assert_eq!(budget.available(), 10);

    // Deposits spread over time expire bucket by bucket.
    for _ in 0..4 {
        budget.deposit();
        budget.deposit();
        clock.advance(SEC);
    }
    assert_eq!(budget.available(), 14);
    clock.advance(6 * SEC); // the first second's deposits are 10 s old
    assert_eq!(budget.available(), 13);
}

#[test]
fn budget_withdrawals_are_exact_under_concurrency() {
    let clock = ManualClock::new();
    let budget = RetryBudget::builder()
        .ratio(1.0)
        .min_per_second(0)
        .window(SEC)
        .clock(clock)
        .build()
        .unwrap();
    for _ in 0..1000 {
        budget.deposit();
    }
    let granted = AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..500 {
                    if budget.try_withdraw() {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                    budget.deposit();
                }
            });
        }
    });
    // 1000 up front plus 4000 deposited while withdrawing, each worth one.
    let g = granted.load(Ordering::Relaxed);
    assert!(g <= 5000, "{g}");
    assert_eq!(u64::from(g) + budget.available(), 5000);
}

#[tokio::test(start_paused = true)]
async fn hooks_and_events_follow_each_attempt() {
    let seen: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let s = seen.clone();
    let (r, log) = logged(
        retry(Backoff::exponential(100 * MS, SEC))
            .max_attempts(3)
            .on_attempt(move |a| s.lock().unwrap().push(*a)),
    );
    let _ = attempt_times(&r).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter()
            .map(|a| (a.number(), a.is_retry(), a.elapsed(), a.delay()))
            .collect::<Vec<_>>(),
        vec![
            (1, false, Duration::ZERO, Duration::ZERO),
            (2, true, 100 * MS, 100 * MS),
            (3, true, 300 * MS, 200 * MS),
        ]
    );
    assert_eq!(
        kinds(&log),
        vec![
            EventKind::Attempt { attempt: 1 },
            EventKind::RetryScheduled {
                attempt: 2,
                delay: 100 * MS
            },
            EventKind::Attempt { attempt: 2 },
            EventKind::RetryScheduled {
                attempt: 3,
                delay: 200 * MS
            },
            EventKind::Attempt { attempt: 3 },
            EventKind::RetriesExhausted { attempts: 3 },
        ]
    );
    {
        let log = log.lock().unwrap();
        assert!(log
            .iter()
            .all(|e| e.name == "dep" && e.kind.policy() == ripcord::PolicyKind::Retry));
        assert_eq!(log[2].at, 100 * MS);
    }
    let mut rx = r.subscribe();
    let _ = r.execute(|| async { Ok::<_, ()>(()) }).await;
    assert_eq!(
        rx.recv().await.unwrap().kind,
        EventKind::Attempt { attempt: 1 }
    );
}

#[test]
fn validation_names_the_field_and_the_range() {
    let err = |b: RetryBuilder| b.build().unwrap_err();
    let e = err(Retry::builder("x").max_attempts(1001));
    assert_eq!(e.field(), "max_attempts");
    assert_eq!(e.value(), "1001");
    let e = err(Retry::builder("x").max_total_time(Duration::ZERO));
    assert_eq!(
        e.to_string(),
        "invalid `max_total_time` = 0ns: expected a total time greater than zero"
    );
    let e = err(Retry::builder("x").backoff(Backoff::exponential(SEC, MS)));
    assert_eq!(e.field(), "backoff");
    let e = err(Retry::builder("x").backoff(Backoff::fixed(SEC).jitter(2.0)));
    assert_eq!(e.expected(), "a jitter ratio in [0, 1]");
    let e = err(Retry::builder("x").event_capacity(0));
    assert_eq!(e.field(), "event_capacity");
    let e = err(Retry::builder("x").config(RetryConfig {
        budget: Some(RetryBudgetConfig {
            ratio: 0.0,
            min_per_second: 0,
            ..RetryBudgetConfig::default()
        }),
        ..RetryConfig::default()
    }));
    assert_eq!(e.field(), "budget.ratio");
    let e = RetryBudget::builder().window(10 * MS).build().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid `window` = 10ms: expected a window from 100ms to 1h"
    );
    assert_eq!(
        RetryBudget::builder()
            .min_per_second(2_000_000)
            .build()
            .unwrap_err()
            .field(),
        "min_per_second"
    );
    let r = Retry::builder("defaults").build().unwrap();
    assert_eq!((r.name(), r.max_attempts()), ("defaults", 3));
    assert!(r.budget().is_none());
}

#[test]
fn config_deserializes_from_toml() {
    let c: RetryConfig = toml::from_str(
        r#"
        max_attempts = 4
        max_total_time = "5s"
        backoff = { kind = "exponential", base = "100ms", max = "2s", jitter = "full" }
        budget = { ratio = 0.2, min_per_second = 10, window = "10s" }
        "#,
    )
    .unwrap();
    assert_eq!(c.max_attempts, 4);
    assert_eq!(c.max_total_time, Some(5 * SEC));
    assert_eq!(c.backoff.delay_without_jitter(3), 400 * MS);
    assert_eq!(c.budget, Some(RetryBudgetConfig::default()));
    c.validate().unwrap();

    let d: RetryConfig =
        toml::from_str(r#"backoff = { kind = "decorrelated_jitter", base = "50ms", max = "1s" }"#)
            .unwrap();
    assert_eq!(d.max_attempts, 3);
    assert_eq!(d.backoff.delay_without_jitter(1), 150 * MS);
    assert!(toml::from_str::<RetryConfig>("max_atempts = 3").is_err());
    assert!(toml::from_str::<RetryConfig>("budget = { ratio = 0.2, burst = 1 }").is_err());
    let bad: RetryConfig = toml::from_str("max_attempts = 0").unwrap();
    assert_eq!(bad.validate().unwrap_err().field(), "max_attempts");
}

#[test]
fn budget_validation_bounds_are_inclusive() {
    use ripcord::retry::RetryBudgetBuilder;
    let ok = |b: RetryBudgetBuilder| b.build().map(|_| ()).map_err(|e| e.field());
    let b = RetryBudget::builder;
    assert_eq!(ok(b().ratio(100.0)), Ok(()));
    assert_eq!(ok(b().ratio(150.0)), Err("ratio"));
    assert_eq!(ok(b().ratio(f64::INFINITY)), Err("ratio"));
    assert_eq!(ok(b().ratio(0.0).min_per_second(1)), Ok(()));
    assert_eq!(ok(b().min_per_second(1_000_000)), Ok(()));
    assert_eq!(ok(b().min_per_second(1_000_001)), Err("min_per_second"));
    assert_eq!(ok(b().window(Duration::from_millis(100))), Ok(()));
    assert_eq!(ok(b().window(Duration::from_millis(99))), Err("window"));
    assert_eq!(ok(b().window(Duration::from_secs(3600))), Ok(()));
    assert_eq!(
        ok(b().window(Duration::from_secs(3600) + Duration::from_nanos(1))),
        Err("window")
    );
    assert_eq!(ok(b().window(Duration::from_secs(7200))), Err("window"));
}

#[test]
fn a_budget_keeps_its_configuration() {
    let budget = RetryBudget::builder()
        .ratio(0.1)
        .min_per_second(3)
        .window(Duration::from_secs(5))
        .build()
        .unwrap();
    let c = budget.config();
    assert_eq!(
        (c.ratio, c.min_per_second, c.window),
        (0.1, 3, Duration::from_secs(5))
    );
}
