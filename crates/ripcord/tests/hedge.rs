//! Hedging on tokio's paused time (with `TokioClock`): the loser is cancelled,
//! hedges are bounded, and the delay follows the observed latency percentile.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ripcord::hedge::PercentileDelay;
use ripcord::{Event, EventKind, Hedge, HedgeBuilder, HedgeConfig, HedgeDelay, TokioClock};
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// Counts its own drops: the proof that an attempt was cancelled.
struct DropGuard(Arc<AtomicU32>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Log = Arc<Mutex<Vec<(Duration, EventKind)>>>;

fn logged(b: HedgeBuilder) -> (Hedge, Log) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let h = b
        .clock(TokioClock::new())
        .on_event(move |e: &Event| l.lock().unwrap().push((e.at, e.kind.clone())))
        .build()
        .unwrap();
    (h, log)
}

/// Attempt `i` (0-based) takes `latencies[i]`, then answers `Ok(i)`; every
/// attempt holds a drop guard.
fn attempts(
    latencies: Vec<Duration>,
    started: &Arc<AtomicU32>,
    dropped: &Arc<AtomicU32>,
) -> impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, String>> + Send>>
{
    let (started, dropped) = (started.clone(), dropped.clone());
    move || {
        let i = started.fetch_add(1, Ordering::SeqCst);
        let took = latencies[i as usize];
        let guard = DropGuard(dropped.clone());
        Box::pin(async move {
            sleep(took).await;
            drop(guard);
            Ok(i)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn the_loser_is_cancelled_as_soon_as_a_hedge_wins() {
    let (hedge, log) = logged(Hedge::builder("search").delay(50 * MS));
    let (started, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let t0 = Instant::now();
    let r = hedge
        .execute(attempts(vec![10 * SEC, 20 * MS], &started, &dropped))
        .await;
    assert_eq!(r.unwrap(), 1, "the hedge won");
    assert_eq!(
        t0.elapsed(),
        70 * MS,
        "hedge started at 50 ms, answered 20 ms later"
    );
    assert_eq!(started.load(Ordering::SeqCst), 2);
    // Both guards are gone: the winner finished, the original was dropped
    // mid-sleep when execute returned — not 10 s later.
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
    let kinds: Vec<_> = log.lock().unwrap().iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::HedgeStarted { hedge: 1 },
            EventKind::HedgeWon { attempt: 1 }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_fast_call_is_never_hedged() {
    let (hedge, log) = logged(Hedge::builder("search").delay(50 * MS).max_hedges(3));
    let (started, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let r = hedge
        .execute(attempts(vec![49 * MS], &started, &dropped))
        .await;
    assert_eq!(r.unwrap(), 0);
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert!(log.lock().unwrap().is_empty(), "no hedge, no event");
}

#[tokio::test(start_paused = true)]
async fn hedges_are_bounded() {
    let (hedge, log) = logged(Hedge::builder("search").delay(100 * MS).max_hedges(2));
    let (started, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let t0 = Instant::now();
    // Every attempt takes 1 s: hedges start at 100 and 200 ms, then no more.
    let r = hedge
        .execute(attempts(vec![SEC; 10], &started, &dropped))
        .await;
    assert_eq!(r.unwrap(), 0, "the original finished first, at 1 s");
    assert_eq!(t0.elapsed(), SEC);
    assert_eq!(
        started.load(Ordering::SeqCst),
        3,
        "the original and 2 hedges"
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 3);
    let log = log.lock().unwrap();
    let starts: Vec<_> = log
        .iter()
        .filter(|(_, k)| matches!(k, EventKind::HedgeStarted { .. }))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(starts, vec![100 * MS, 200 * MS]);
    assert_eq!(log.last().unwrap().1, EventKind::HedgeWon { attempt: 0 });
}

#[tokio::test(start_paused = true)]
async fn a_failure_ends_the_call_unless_hedging_on_failure() {
    let failing = |calls: &Arc<AtomicU32>| {
        let calls = calls.clone();
        move || {
            let i = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                sleep(10 * MS).await;
                if i < 2 {
                    Err(format!("attempt {i} failed"))
                } else {
                    Ok(i)
                }
            }
        }
    };
    // Default: a failure with nothing else running ends the call at once.
    let hedge = Hedge::builder("h")
        .delay(100 * MS)
        .max_hedges(3)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let t0 = Instant::now();
    let r = hedge.execute(failing(&calls)).await;
    assert_eq!(r.unwrap_err(), "attempt 0 failed");
    assert_eq!(t0.elapsed(), 10 * MS);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // hedge_on_failure: each failure starts the next hedge at once.
    let hedge = Hedge::builder("h")
        .delay(100 * MS)
        .max_hedges(3)
        .hedge_on_failure(true)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let t0 = Instant::now();
    let r = hedge.execute(failing(&calls)).await;
    assert_eq!(r.unwrap(), 2);
    assert_eq!(t0.elapsed(), 30 * MS);

    // When every attempt fails, the last error is returned.
    let calls = Arc::new(AtomicU32::new(0));
    let all_fail = {
        let calls = calls.clone();
        move || {
            let i = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                sleep(10 * MS).await;
                Err::<u32, _>(format!("attempt {i} failed"))
            }
        }
    };
    let r = hedge.execute(all_fail).await;
    assert_eq!(r.unwrap_err(), "attempt 3 failed");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_waits_for_the_others_still_running() {
    let hedge = Hedge::builder("h")
        .delay(10 * MS)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let t0 = Instant::now();
    // The original fails at 50 ms; the hedge (started at 10 ms) answers at 110 ms.
    let r = hedge
        .execute(move || {
            let i = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if i == 0 {
                    sleep(50 * MS).await;
                    Err("original failed".to_string())
                } else {
                    sleep(100 * MS).await;
                    Ok(i)
                }
            }
        })
        .await;
    assert_eq!(r.unwrap(), 1);
    assert_eq!(t0.elapsed(), 110 * MS);
}

#[tokio::test(start_paused = true)]
async fn the_delay_follows_the_latency_percentile() {
    let (hedge, log) = logged(
        Hedge::builder("search")
            .percentile_delay(0.9, 500 * MS)
            .delay_bounds(5 * MS, SEC)
            .min_samples(100),
    );
    assert_eq!(
        hedge.current_delay(),
        500 * MS,
        "the initial delay, before samples"
    );

    // 100 calls taking 1..=100 ms: p90 ≈ 90 ms (buckets are ≤ 12.5 % wide).
    for i in 1..=100u64 {
        let took = Duration::from_millis(i);
        let r = hedge
            .execute(|| async move {
                sleep(took).await;
                Ok::<_, ()>(())
            })
            .await;
        assert!(r.is_ok());
        if i == 99 {
            assert_eq!(hedge.current_delay(), 500 * MS, "99 samples are too few");
        }
    }
    assert_eq!(hedge.latency_samples(), 100);
    let p90 = hedge.current_delay();
    assert!(p90 >= 90 * MS && p90 <= 90 * MS * 9 / 8, "{p90:?}");
    assert!(log.lock().unwrap().is_empty(), "none of them was hedged");

    // A slow call is now hedged after p90, not after the initial 500 ms.
    let (started, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let t0 = Instant::now();
    let r = hedge
        .execute(attempts(vec![10 * SEC, 30 * MS], &started, &dropped))
        .await;
    assert_eq!(r.unwrap(), 1);
    // (tokio's timer rounds the sub-millisecond delay up to the next ms)
    let took = t0.elapsed();
    assert!(took >= p90 + 30 * MS && took <= p90 + 31 * MS, "{took:?}");

    // Old latencies fade: two windows (2 × 60 s) later, the initial delay is back.
    sleep(Duration::from_secs(121)).await;
    assert_eq!(hedge.latency_samples(), 0);
    assert_eq!(hedge.current_delay(), 500 * MS);
}

#[tokio::test(start_paused = true)]
async fn the_percentile_delay_is_bounded() {
    let hedge = Hedge::builder("h")
        .percentile_delay(0.5, 50 * MS)
        .delay_bounds(MS, 20 * MS)
        .min_samples(1)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let r = hedge
        .execute(|| async {
            sleep(SEC).await;
            Ok::<_, ()>(())
        })
        .await;
    assert!(r.is_ok());
    // p50 = 1 s, capped at 20 ms.
    assert_eq!(hedge.current_delay(), 20 * MS);
}

#[test]
fn configuration_is_validated_and_deserialized() {
    assert_eq!(
        Hedge::builder("h")
            .max_hedges(0)
            .build()
            .unwrap_err()
            .field(),
        "max_hedges"
    );
    assert_eq!(
        Hedge::builder("h")
            .max_hedges(17)
            .build()
            .unwrap_err()
            .field(),
        "max_hedges"
    );
    let e = Hedge::builder("h")
        .percentile_delay(1.0, MS)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "delay.percentile");
    let e = Hedge::builder("h")
        .percentile_delay(0.9, MS)
        .delay_bounds(SEC, MS)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "delay.max");
    let e = Hedge::builder("h")
        .percentile_delay(0.9, MS)
        .min_samples(0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "delay.min_samples");

    let c: HedgeConfig = toml::from_str("delay = \"40ms\"\nmax_hedges = 2").unwrap();
    assert_eq!(c.delay, HedgeDelay::Fixed(40 * MS));
    assert_eq!(c.max_hedges, 2);
    let c: HedgeConfig =
        toml::from_str("delay = { percentile = 0.95, initial = \"50ms\", max = \"1s\" }").unwrap();
    let mut expected = PercentileDelay::new(0.95, 50 * MS);
    expected.max = SEC;
    assert_eq!(c.delay, HedgeDelay::Percentile(expected));
    assert!(toml::from_str::<HedgeConfig>("max_hedge = 2").is_err());
    assert!(toml::from_str::<HedgeConfig>(
        "delay = { percentile = 0.9, initial = \"1ms\", typo = 1 }"
    )
    .is_err());
}

const fn send_sync_static<T: Send + Sync + 'static>() {}
const _: () = send_sync_static::<Hedge>();
