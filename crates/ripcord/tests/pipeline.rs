//! Composition: the pipeline runs its policies outermost first, in the order
//! added, with the documented semantics between them. Every test runs on
//! tokio's paused time (with `TokioClock`), so no test sleeps for real.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ripcord::pipeline::PolicyConfig;
use ripcord::{
    Backoff, Bulkhead, CircuitBreaker, CircuitBreakerBuilder, Error, Event, EventKind, Fallback,
    Hedge, Outcome, Pipeline, PipelineBuilder, PipelineConfig, PolicyKind, RateLimiter, Registry,
    Retry, State, TimeoutPolicy, TokioClock,
};
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type Log = Arc<Mutex<Vec<Event>>>;

fn log() -> (Log, impl Fn(&Event) + Send + Sync + 'static) {
    let log: Log = Arc::default();
    let l = log.clone();
    (log, move |e: &Event| l.lock().unwrap().push(e.clone()))
}

fn outcomes(log: &Log) -> Vec<Outcome> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Outcome { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect()
}

fn count(log: &Log, pred: impl Fn(&EventKind) -> bool) -> usize {
    log.lock().unwrap().iter().filter(|e| pred(&e.kind)).count()
}

fn breaker(name: &str) -> CircuitBreakerBuilder {
    CircuitBreaker::builder(name)
        .clock(TokioClock::new())
        .consecutive_failures(100)
        .open_for(Backoff::fixed(Duration::from_secs(60)))
}

fn retry(attempts: u32, delay: Duration) -> ripcord::RetryBuilder {
    Retry::builder("retry")
        .clock(TokioClock::new())
        .max_attempts(attempts)
        .backoff(Backoff::fixed(delay))
}

/// A call that counts its attempts, sleeps `took`, then fails.
fn failing_after(
    calls: &Arc<AtomicU32>,
    took: Duration,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<u32, String>> + Send>> {
    let calls = calls.clone();
    move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            sleep(took).await;
            Err(format!("attempt {n} failed"))
        })
    }
}

/// Polls `fut` until virtual time has moved by `d` (it must still be pending).
async fn run_for<F: Future + Unpin>(fut: &mut F, d: Duration)
where
    F::Output: std::fmt::Debug,
{
    let r = tokio::time::timeout(d, fut).await;
    assert!(r.is_err(), "the call finished early: {r:?}");
}

// ---------------------------------------------------------------------------
// Order
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn timeout_outside_retry_bounds_the_whole_call() {
    let calls = Arc::new(AtomicU32::new(0));
    let p = Pipeline::builder()
        .timeout(
            TimeoutPolicy::builder("total")
                .timeout(SEC)
                .clock(TokioClock::new()),
        )
        .retry(retry(10, 100 * MS))
        .build()
        .unwrap();
    let start = Instant::now();
    let r = p.execute(failing_after(&calls, 200 * MS)).await;
    // Attempts start at 0, 300, 600 and 900 ms; the deadline cuts the fourth.
    let Err(Error::Timeout(t)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(t.name(), "total");
    assert_eq!(t.elapsed(), SEC);
    assert_eq!(start.elapsed(), SEC);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn retry_outside_timeout_bounds_each_attempt() {
    let calls = Arc::new(AtomicU32::new(0));
    let (events, listener) = log();
    let p = Pipeline::builder()
        .retry(retry(3, 100 * MS))
        .timeout(
            TimeoutPolicy::builder("attempt")
                .timeout(250 * MS)
                .clock(TokioClock::new())
                .on_event(listener),
        )
        .build()
        .unwrap();
    let start = Instant::now();
    let r = p.execute(failing_after(&calls, 10 * SEC)).await;
    let Err(Error::Timeout(t)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(t.elapsed(), 250 * MS);
    // 3 × 250 ms attempts, 2 × 100 ms waits.
    assert_eq!(start.elapsed(), 950 * MS);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::TimedOut { .. })),
        3
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_inside_retry_sees_each_attempt() {
    let calls = Arc::new(AtomicU32::new(0));
    let (events, listener) = log();
    let p = Pipeline::builder()
        .retry(retry(3, 10 * MS))
        .circuit_breaker(breaker("dep").consecutive_failures(3).on_event(listener))
        .build()
        .unwrap();
    let r = p.execute(failing_after(&calls, MS)).await;
    assert!(
        matches!(r, Err(Error::Inner(ref e)) if e == "attempt 3 failed"),
        "{r:?}"
    );
    assert_eq!(outcomes(&events), vec![Outcome::Failure; 3]);
    let b = p.circuit_breaker().unwrap();
    assert_eq!(b.state(), State::Open, "three attempts = three failures");

    // Open now: an attempt is rejected without running, and the rejection
    // tells the retry when the next probe is due, so the retry waits for it
    // rather than hammering: rejected at once, the probe 60 s later (it fails
    // and re-opens the breaker), then rejected again 10 ms after that.
    let start = Instant::now();
    let r = p.execute(failing_after(&calls, MS)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4, "only the probe ran");
    assert_eq!(start.elapsed(), Duration::from_secs(60) + 11 * MS);
    let err = r.unwrap_err();
    assert_eq!(err.policy(), Some(PolicyKind::CircuitBreaker));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60) - 10 * MS));
}

#[tokio::test(start_paused = true)]
async fn breaker_outside_retry_sees_one_call() {
    let calls = Arc::new(AtomicU32::new(0));
    let (events, listener) = log();
    let p = Pipeline::builder()
        .circuit_breaker(breaker("dep").consecutive_failures(3).on_event(listener))
        .retry(retry(3, 10 * MS))
        .build()
        .unwrap();
    let r = p.execute(failing_after(&calls, MS)).await;
    assert!(matches!(r, Err(Error::Inner(_))));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(outcomes(&events), vec![Outcome::Failure]);
    assert_eq!(p.circuit_breaker().unwrap().state(), State::Closed);
}

// ---------------------------------------------------------------------------
// What a breaker records
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_timeout_is_a_breaker_failure_on_either_side() {
    let calls = Arc::new(AtomicU32::new(0));
    // Timeout inside the breaker: the breaker sees Error::Timeout.
    let (inside, l1) = log();
    let p = Pipeline::builder()
        .circuit_breaker(breaker("a").on_event(l1))
        .timeout(100 * MS)
        .build()
        .unwrap();
    let r = p.execute(failing_after(&calls, SEC)).await;
    assert_eq!(r.unwrap_err().policy(), Some(PolicyKind::Timeout));
    assert_eq!(outcomes(&inside), vec![Outcome::Failure]);

    // Timeout outside the breaker: its deadline cuts the call off inside the
    // breaker, which still records a failure (not an ignored, dropped permit).
    let (outside, l2) = log();
    let p = Pipeline::builder()
        .timeout(100 * MS)
        .circuit_breaker(breaker("b").on_event(l2))
        .build()
        .unwrap();
    let start = Instant::now();
    let r = p.execute(failing_after(&calls, SEC)).await;
    assert_eq!(start.elapsed(), 100 * MS);
    let Err(Error::Timeout(t)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        t.name(),
        "pipeline",
        "a bare Duration is named after the pipeline"
    );
    assert_eq!(outcomes(&outside), vec![Outcome::Failure]);
}

#[tokio::test(start_paused = true)]
async fn refusals_inside_a_breaker_are_ignored() {
    let (events, listener) = log();
    let bulkhead = Bulkhead::builder("pool").max_concurrent(1).build().unwrap();
    let limiter = RateLimiter::builder("rl")
        .clock(TokioClock::new())
        .rate(1, SEC)
        .build()
        .unwrap();
    let p = Pipeline::builder()
        .circuit_breaker(breaker("dep").consecutive_failures(1).on_event(listener))
        .rate_limiter(limiter.clone())
        .bulkhead(bulkhead.clone())
        .build()
        .unwrap();

    let held = bulkhead.try_acquire().unwrap();
    let r = p.execute(|| async { Ok::<_, String>(1) }).await;
    let err = r.unwrap_err();
    assert_eq!(err.policy(), Some(PolicyKind::Bulkhead));
    assert!(matches!(err, Error::BulkheadFull(_)));
    drop(held);

    // The refused call above still took the limiter's one permit this second.
    let r = p.execute(|| async { Ok::<_, String>(1) }).await;
    let err = r.unwrap_err();
    assert_eq!(err.policy(), Some(PolicyKind::RateLimiter));
    assert!(err.retry_after().is_some());

    assert_eq!(outcomes(&events), vec![Outcome::Ignored, Outcome::Ignored]);
    assert_eq!(p.circuit_breaker().unwrap().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_classifier_judges_calls_for_breakers() {
    let (events, listener) = log();
    let p = Pipeline::<u16, u16>::builder()
        .circuit_breaker(breaker("http").on_event(listener))
        .classify(|r: &Result<u16, u16>| match r {
            Ok(503) => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(s) if *s >= 500 => Outcome::Failure,
            Err(_) => Outcome::Ignored,
        })
        .build()
        .unwrap();
    assert_eq!(p.execute(|| async { Ok(200) }).await.unwrap(), 200);
    assert_eq!(p.execute(|| async { Ok(503) }).await.unwrap(), 503);
    assert!(matches!(
        p.execute(|| async { Err(404) }).await,
        Err(Error::Inner(404))
    ));
    assert!(matches!(
        p.execute(|| async { Err(502) }).await,
        Err(Error::Inner(502))
    ));
    assert_eq!(
        outcomes(&events),
        vec![
            Outcome::Success,
            Outcome::Failure,
            Outcome::Ignored,
            Outcome::Failure
        ]
    );
}

// ---------------------------------------------------------------------------
// Holding and releasing
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_waiting_retry_holds_no_slot_and_no_permit() {
    let calls = Arc::new(AtomicU32::new(0));
    let p = Pipeline::builder()
        .retry(retry(2, SEC))
        .circuit_breaker(breaker("dep").consecutive_failures(1).half_open_calls(1))
        .bulkhead(Bulkhead::builder("pool").max_concurrent(1))
        .build()
        .unwrap();
    let bulkhead = p.bulkhead().unwrap().clone();
    let mut call = Box::pin(p.execute(failing_after(&calls, 10 * MS)));
    run_for(&mut call, 20 * MS).await;
    // The first attempt failed (the breaker is open) and the retry waits.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(bulkhead.in_use(), 0, "no slot held while waiting");
    assert!(
        bulkhead.try_acquire().is_ok(),
        "another call can take the slot"
    );
    assert_eq!(p.circuit_breaker().unwrap().state(), State::Open);
    let r = call.await;
    // The retry honoured the breaker: its second attempt was rejected.
    assert_eq!(r.unwrap_err().policy(), Some(PolicyKind::CircuitBreaker));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_releases_every_permit_and_slot() {
    let p = Pipeline::builder()
        .timeout(Duration::from_secs(3600))
        .retry(retry(3, MS))
        .circuit_breaker(
            breaker("dep")
                .consecutive_failures(1)
                .open_for(Backoff::fixed(SEC))
                .half_open_calls(1),
        )
        .rate_limiter(
            RateLimiter::builder("rl")
                .clock(TokioClock::new())
                .rate(100, SEC),
        )
        .bulkhead(Bulkhead::builder("pool").max_concurrent(1).max_queued(1))
        .build()
        .unwrap();
    let breaker = p.circuit_breaker().unwrap().clone();
    let bulkhead = p.bulkhead().unwrap().clone();

    // Trip the breaker and let it become half-open: one probe allowed.
    breaker.try_acquire().unwrap().record(Outcome::Failure);
    sleep(SEC).await;
    assert_eq!(breaker.tick(), State::HalfOpen);

    // A probe that hangs, holding the probe slot and the bulkhead's slot.
    let mut probe = Box::pin(p.execute(|| async {
        std::future::pending::<()>().await;
        Ok::<_, String>(())
    }));
    run_for(&mut probe, 10 * MS).await;
    assert_eq!(bulkhead.in_use(), 1);
    assert!(breaker.try_acquire().is_err(), "the probe slot is taken");

    // Cancel it from outside: everything comes back.
    drop(probe);
    assert_eq!(bulkhead.in_use(), 0);
    assert_eq!(
        breaker.state(),
        State::HalfOpen,
        "a cancelled call is ignored"
    );
    let permit = breaker.try_acquire().expect("the probe slot is free again");
    drop(permit);

    // A call cancelled while queued for the bulkhead leaves the queue.
    let held = bulkhead.try_acquire().unwrap();
    let mut queued = Box::pin(p.execute(|| async { Ok::<_, String>(()) }));
    run_for(&mut queued, 10 * MS).await;
    assert_eq!(bulkhead.queued(), 1);
    drop(queued);
    assert_eq!(bulkhead.queued(), 0);
    drop(held);
    assert_eq!(bulkhead.in_use(), 0);
    let permit = breaker.try_acquire().expect("probe slot still free");
    permit.record(Outcome::Success);
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_in_a_pipeline_releases_the_losers_slot() {
    let p = Pipeline::builder()
        .hedge(Hedge::builder("h").delay(50 * MS).clock(TokioClock::new()))
        .bulkhead(Bulkhead::builder("pool").max_concurrent(2))
        .build()
        .unwrap();
    let bulkhead = p.bulkhead().unwrap().clone();
    let n = Arc::new(AtomicU32::new(0));
    let nn = n.clone();
    let call = move || {
        let i = nn.fetch_add(1, Ordering::SeqCst);
        async move {
            sleep(if i == 0 { 10 * SEC } else { 10 * MS }).await;
            Ok::<_, String>(i)
        }
    };
    let mut fut = Box::pin(p.execute(call));
    run_for(&mut fut, 55 * MS).await;
    assert_eq!(
        bulkhead.in_use(),
        2,
        "the original and the hedge each hold a slot"
    );
    assert_eq!(fut.await.unwrap(), 1, "the hedge won");
    assert_eq!(
        bulkhead.in_use(),
        0,
        "the loser was dropped and released its slot"
    );
}

// ---------------------------------------------------------------------------
// Fallback and errors
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_outer_fallback_answers_for_the_policies_inside() {
    let p = Pipeline::<&str, String>::builder()
        .fallback(Fallback::builder("fb").then_value("cached"))
        .timeout(100 * MS)
        .circuit_breaker(breaker("dep"))
        .build()
        .unwrap();
    p.circuit_breaker().unwrap().force_open();
    assert_eq!(p.execute(|| async { Ok("fresh") }).await.unwrap(), "cached");
    p.circuit_breaker().unwrap().reset();
    let slow = || async {
        sleep(SEC).await;
        Ok("fresh")
    };
    assert_eq!(p.execute(slow).await.unwrap(), "cached", "timeouts too");

    // Triggers are selectable: without on_rejected, a rejection passes through.
    let p = Pipeline::<&str, String>::builder()
        .fallback(
            Fallback::builder("fb")
                .on_rejected(false)
                .then_value("cached"),
        )
        .circuit_breaker(breaker("dep"))
        .build()
        .unwrap();
    p.circuit_breaker().unwrap().force_open();
    let err = p.execute(|| async { Ok("fresh") }).await.unwrap_err();
    assert_eq!(err.policy(), Some(PolicyKind::CircuitBreaker));
    assert_eq!(
        p.execute(|| async { Err("boom".to_string()) })
            .await
            .unwrap_err()
            .policy(),
        Some(PolicyKind::CircuitBreaker)
    );
}

#[tokio::test(start_paused = true)]
async fn a_fallback_inside_a_timeout_does_not_outlive_it() {
    let p = Pipeline::<&str, String>::builder()
        .timeout(100 * MS)
        .fallback(Fallback::builder("slow-cache").then(|_| async {
            sleep(SEC).await;
            Ok("late")
        }))
        .build()
        .unwrap();
    let start = Instant::now();
    let r = p.execute(|| async { Err("down".to_string()) }).await;
    assert_eq!(r.unwrap_err().policy(), Some(PolicyKind::Timeout));
    assert_eq!(start.elapsed(), 100 * MS);
}

// ---------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn fresh_policies_per_pipeline_shared_ones_once() {
    let shared = Bulkhead::builder("global")
        .max_concurrent(10)
        .build()
        .unwrap();
    let template = Pipeline::<(), String>::builder()
        .circuit_breaker(breaker("template"))
        .bulkhead(shared.clone());
    let a = template.build_named("a").unwrap();
    let b = template.build_named("b").unwrap();
    assert_eq!(a.name(), "a");
    assert_eq!(a.circuit_breaker().unwrap().name(), "a");
    assert_eq!(b.circuit_breaker().unwrap().name(), "b");
    assert!(!a
        .circuit_breaker()
        .unwrap()
        .same_as(b.circuit_breaker().unwrap()));
    assert_eq!(
        a.bulkhead().unwrap().name(),
        "global",
        "shared policies keep their name"
    );
    let _slot = a.bulkhead().unwrap().try_acquire().unwrap();
    assert_eq!(b.bulkhead().unwrap().in_use(), 1, "one bulkhead for both");
    assert_eq!(
        template.build().unwrap().circuit_breaker().unwrap().name(),
        "template"
    );
    assert_eq!(
        a.kinds().collect::<Vec<_>>(),
        vec![PolicyKind::CircuitBreaker, PolicyKind::Bulkhead]
    );
}

#[tokio::test(start_paused = true)]
async fn a_registry_holds_one_pipeline_per_endpoint() {
    let template = Pipeline::<(), String>::builder()
        .timeout(SEC)
        .circuit_breaker(breaker("").consecutive_failures(1));
    let registry: Registry<String, Pipeline<(), String>> =
        Registry::with_factory(move |k: &String| template.build_named(k))
            .max_keys(2)
            .build()
            .unwrap();
    let down = registry.get(&"down".to_string()).unwrap();
    let _ = down
        .execute(|| async { Err::<(), _>("no".to_string()) })
        .await;
    assert_eq!(down.circuit_breaker().unwrap().state(), State::Open);
    let up = registry.get(&"up".to_string()).unwrap();
    assert!(up.execute(|| async { Ok(()) }).await.is_ok());
    assert!(registry.get(&"down".to_string()).unwrap().same_as(&down));

    // Full: the open endpoint's pipeline is pinned, so "up" is evicted.
    registry.get(&"third".to_string()).unwrap();
    assert!(registry.peek(&"down".to_string()).is_some());
    assert!(registry.peek(&"up".to_string()).is_none());
}

#[test]
fn a_builder_reports_the_bad_field() {
    let err = Pipeline::<(), ()>::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "timeout");
    let err = Pipeline::<(), ()>::builder()
        .retry(Retry::builder("r").max_attempts(0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_attempts");
}

// ---------------------------------------------------------------------------
// Configuration files
// ---------------------------------------------------------------------------

const LIST: &str = r#"
name = "payments"

[[policy]]
kind = "timeout"
timeout = "1s"

[[policy]]
kind = "retry"
max_attempts = 3
backoff = "100ms"

[[policy]]
kind = "circuit_breaker"
consecutive_failures = 3
open_for = "30s"

[[policy]]
kind = "bulkhead"
max_concurrent = 4
"#;

#[tokio::test(start_paused = true)]
async fn toml_list_describes_a_pipeline() {
    let config: PipelineConfig = toml::from_str(LIST).unwrap();
    let p: Pipeline<u32, String> = config
        .builder()
        .unwrap()
        .clock(TokioClock::new())
        .build()
        .unwrap();
    assert_eq!(p.name(), "payments");
    assert_eq!(
        p.kinds().collect::<Vec<_>>(),
        vec![
            PolicyKind::Timeout,
            PolicyKind::Retry,
            PolicyKind::CircuitBreaker,
            PolicyKind::Bulkhead
        ]
    );
    assert_eq!(p.bulkhead().unwrap().max_concurrent(), 4);
    assert_eq!(p.circuit_breaker().unwrap().name(), "payments");

    // The file's semantics hold: 3 attempts (100 ms apart) trip the breaker
    // after 3 consecutive failures, well inside the 1 s timeout.
    let calls = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    let r = p.execute(failing_after(&calls, 10 * MS)).await;
    assert!(matches!(r, Err(Error::Inner(_))), "{r:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), 230 * MS);
    assert_eq!(p.circuit_breaker().unwrap().state(), State::Open);
}

#[test]
fn toml_order_form_places_one_table_per_policy() {
    let config: PipelineConfig = toml::from_str(
        r#"
        order = ["fallback", "timeout", "circuit_breaker", "hedge"]

        [timeout]
        timeout = "250ms"

        [hedge]
        delay = { percentile = 0.9, initial = "40ms" }
        max_hedges = 2

        [fallback]
        on_refused = false
        "#,
    )
    .unwrap();
    let kinds: Vec<_> = config.policies.iter().map(PolicyConfig::kind).collect();
    assert_eq!(
        kinds,
        vec![
            PolicyKind::Fallback,
            PolicyKind::Timeout,
            PolicyKind::CircuitBreaker,
            PolicyKind::Hedge
        ]
    );
    // The file places the fallback; its chain comes from code.
    let err = config
        .builder::<u32, String>()
        .unwrap()
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "fallback");
    let p = config
        .builder::<u32, String>()
        .unwrap()
        .fallback_chain(Fallback::builder("defaults").then_value(0))
        .build()
        .unwrap();
    let fb = p.fallback().unwrap();
    assert_eq!(fb.name(), "defaults");
    assert!(!fb.handles(&Error::BulkheadFull(ripcord::BulkheadFull::new(
        "b",
        1,
        Duration::ZERO
    ))));
    assert!(fb.handles(&Error::Inner("x".to_string())));
    assert_eq!(p.timeout().unwrap().duration(), 250 * MS);
    assert_eq!(p.hedge().unwrap().max_hedges(), 2);
    assert_eq!(p.hedge().unwrap().current_delay(), 40 * MS);
}

#[test]
fn toml_mistakes_are_errors() {
    let bad = |s: &str| toml::from_str::<PipelineConfig>(s).unwrap_err().to_string();
    // An unknown field inside a policy's table.
    let e = bad("[[policy]]\nkind = \"timeout\"\ntimeout = \"1s\"\ntimout = \"2s\"\n");
    assert!(e.contains("timout"), "{e}");
    // An unknown kind.
    let e = bad("[[policy]]\nkind = \"teleport\"\n");
    assert!(e.contains("teleport"), "{e}");
    // A table not placed by `order`, a kind twice, both forms at once.
    let e = bad("order = [\"retry\"]\n[timeout]\ntimeout = \"1s\"\n");
    assert!(e.contains("not listed in `order`"), "{e}");
    let e = bad("order = [\"retry\", \"retry\"]\n");
    assert!(e.contains("twice"), "{e}");
    let e = bad("[timeout]\ntimeout = \"1s\"\n[[policy]]\nkind = \"retry\"\n");
    assert!(e.contains("not both"), "{e}");
    let e = bad("order = []\n[[policy]]\nkind = \"timeout\"\n");
    assert!(e.contains("not both"), "{e}");
    let e = bad("polcy = []\n");
    assert!(e.contains("polcy"), "{e}");
    // Values are checked when building, with the field named.
    let config: PipelineConfig =
        toml::from_str("[[policy]]\nkind = \"bulkhead\"\nmax_concurrent = 0\n").unwrap();
    assert_eq!(config.validate().unwrap_err().field(), "max_concurrent");
    assert_eq!(
        config.builder::<(), ()>().unwrap_err().field(),
        "max_concurrent"
    );
}

// ---------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------

/// A call that succeeds at once through timeout → retry → breaker → rate
/// limiter → bulkhead → fallback allocates nothing (this test binary links
/// `allocation-counter`, whose counting allocator then counts per thread).
#[test]
fn the_happy_path_allocates_nothing() {
    use std::task::{Context, Poll, Waker};
    let p = Pipeline::<u64, String>::builder()
        .fallback(Fallback::builder("f").then_value(0))
        .timeout(SEC)
        .retry(Retry::builder("r").max_attempts(3))
        .circuit_breaker(CircuitBreaker::builder("b"))
        .rate_limiter(RateLimiter::builder("rl").rate(1_000_000_000, SEC))
        .bulkhead(Bulkhead::builder("pool").max_concurrent(4))
        .build()
        .unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut once = |i: u64| {
        let fut = std::pin::pin!(p.execute(|| std::future::ready(Ok(i))));
        match fut.poll(&mut cx) {
            Poll::Ready(r) => assert_eq!(r.unwrap(), i),
            Poll::Pending => panic!("a ready call finishes at its first poll"),
        }
    };
    for i in 0..1000 {
        once(i); // warm up: thread-local stripes, clocks
    }
    let info = allocation_counter::measure(|| {
        for i in 0..10_000 {
            once(std::hint::black_box(i));
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    // black_box: without it a release build removes the allocation.
    let info = allocation_counter::measure(|| drop(std::hint::black_box(Box::new(1))));
    assert_eq!(info.count_total, 1, "the counting allocator is installed");
}

// ---------------------------------------------------------------------------
// Auto traits
// ---------------------------------------------------------------------------

const fn send_sync_static<T: Send + Sync + 'static>() {}
const _: () = {
    send_sync_static::<Pipeline<String, std::io::Error>>();
    send_sync_static::<PipelineBuilder<String, std::io::Error>>();
    send_sync_static::<PipelineConfig>();
};

/// The future of `execute` can be spawned on a multi-threaded runtime, hedge
/// and fallback included.
#[allow(dead_code)]
fn execute_is_spawnable(p: Pipeline<String, std::io::Error>) {
    fn spawnable<F: Future + Send + 'static>(_: F) {}
    spawnable(async move { p.execute(|| async { Ok("x".to_string()) }).await });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_across_tasks() {
    let p = Pipeline::<u32, String>::builder()
        .timeout(SEC)
        .retry(
            Retry::builder("r")
                .max_attempts(2)
                .backoff(Backoff::fixed(MS)),
        )
        .circuit_breaker(CircuitBreaker::builder("b"))
        .bulkhead(Bulkhead::builder("pool").max_concurrent(64))
        .hedge(Hedge::builder("h").delay(SEC))
        .fallback(Fallback::builder("f").then_value(0))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move { p.execute(move || async move { Ok(i) }).await })
        })
        .collect();
    let mut sum = 0;
    for t in tasks {
        sum += t.await.unwrap().unwrap();
    }
    assert_eq!(sum, (0..32).sum());
    assert_eq!(p.bulkhead().unwrap().in_use(), 0);
}

/// The README's "Pipeline" example is the crate docs' one (which compiles and
/// runs as a doc test), without its hidden lines.
#[test]
fn the_readme_example_is_the_doc_tested_one() {
    let readme = include_str!("../../../README.md");
    let lib = include_str!("../src/lib.rs");
    let section = readme
        .split("\n## Pipeline\n")
        .nth(1)
        .expect("README has a Pipeline section");
    let readme_code: Vec<&str> = section
        .split("```rust\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a rust block")
        .lines()
        .collect();
    let docs = lib
        .split("//! ## Pipeline\n")
        .nth(1)
        .expect("the crate docs have a Pipeline section");
    let doc_code: Vec<&str> = docs
        .lines()
        .map(|l| l.strip_prefix("//!").unwrap_or(l))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| *l != "```")
        .skip(1)
        .take_while(|l| *l != "```")
        .filter(|l| !l.starts_with("# "))
        .collect();
    assert_eq!(readme_code, doc_code);
}

// ---------------------------------------------------------------------------
// Admission that may wait, composed calls, external limiters
// ---------------------------------------------------------------------------

type Q = Pipeline<u32, &'static str>;

#[tokio::test(start_paused = true)]
async fn admit_waiting_queues_and_a_deadline_cuts_the_wait_off() {
    let b = breaker("q").build().unwrap();
    let p: Q = Pipeline::builder()
        .timeout(
            TimeoutPolicy::builder("t")
                .timeout(100 * MS)
                .clock(TokioClock::new()),
        )
        .circuit_breaker(b.clone())
        .bulkhead(Bulkhead::builder("q").max_concurrent(1).max_queued(1))
        .build()
        .unwrap();
    assert!(p.admit().is_none(), "a queue may wait");
    let first = p.admit_waiting().await.unwrap().unwrap();
    let start = Instant::now();
    // The second waits for the slot until the timeout's deadline.
    let Err(Error::Timeout(t)) = p.admit_waiting().await.unwrap() else {
        panic!("not cut off")
    };
    assert_eq!((t.name(), start.elapsed()), ("t", 100 * MS));
    // Its breaker permit was cut off: a failure, as `execute` counts it.
    assert_eq!((b.stats().calls(), b.stats().failures()), (1, 1));
    // A slot given back wakes a waiting admission.
    let p2 = p.clone();
    let waiting =
        tokio::spawn(async move { p2.admit_waiting().await.unwrap().map(|a| a.finish(Ok(2))) });
    sleep(10 * MS).await;
    assert_eq!(first.finish(Ok(1)).unwrap(), 1);
    assert_eq!(waiting.await.unwrap().unwrap().unwrap(), 2);
    assert_eq!((b.stats().calls(), b.stats().failures()), (3, 1));
}

#[tokio::test(start_paused = true)]
async fn admit_waiting_refusals_give_back_what_was_taken() {
    let b = breaker("r").build().unwrap();
    let p: Q = Pipeline::builder()
        .circuit_breaker(b.clone())
        .rate_limiter(
            RateLimiter::builder("r")
                .rate(1, SEC)
                .burst(1)
                .max_wait(10 * MS)
                .clock(TokioClock::new()),
        )
        .build()
        .unwrap();
    p.admit_waiting()
        .await
        .unwrap()
        .unwrap()
        .record_outcome(Outcome::Failure);
    assert_eq!(b.stats().failures(), 1, "recorded as told");
    // The next permit is a second away, beyond the limiter's wait.
    let Err(Error::RateLimited(_)) = p.admit_waiting().await.unwrap() else {
        panic!("not refused")
    };
    // The breaker outside ignores the refusal.
    assert_eq!(b.stats().calls(), 1);
    let with_retry: Q = Pipeline::builder()
        .retry(retry(2, MS))
        .circuit_breaker(breaker("x"))
        .build()
        .unwrap();
    assert!(with_retry.admit_waiting().await.is_none());
}

/// Admits the first `n` calls, then refuses (a store's limiter, in memory).
#[derive(Debug)]
struct FirstN(AtomicU32);

impl ripcord::rate_limiter::ExternalLimiter for FirstN {
    fn name(&self) -> &str {
        "first-n"
    }

    fn acquire(&self) -> ripcord::rate_limiter::AcquireFuture<'_> {
        let left = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        Box::pin(async move {
            // The store's round trip.
            sleep(MS).await;
            left.map(|_| ())
                .map_err(|_| ripcord::RateLimited::new("first-n", SEC))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_external_limiter_is_a_rate_limiter_of_the_pipeline() {
    let b = breaker("e").build().unwrap();
    let p: Q = Pipeline::builder()
        .circuit_breaker(b.clone())
        .external_rate_limiter(FirstN(AtomicU32::new(2)))
        .build()
        .unwrap();
    assert_eq!(
        p.kinds().collect::<Vec<_>>(),
        [PolicyKind::CircuitBreaker, PolicyKind::RateLimiter]
    );
    assert!(p.admit().is_none(), "it waits for its store");
    assert_eq!(p.execute(|| async { Ok(1) }).await.unwrap(), 1);
    p.admit_waiting()
        .await
        .unwrap()
        .unwrap()
        .record_outcome(Outcome::Success);
    let refused = p.execute(|| async { Ok(1) }).await.unwrap_err();
    assert_eq!(refused.policy(), Some(PolicyKind::RateLimiter));
    let Some(Err(Error::RateLimited(r))) = p.admit_waiting().await else {
        panic!("not refused")
    };
    assert_eq!(r.retry_after(), SEC);
    // Two calls, two refusals ignored.
    assert_eq!(b.stats().calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn execute_composed_passes_policy_errors_through() {
    let inner = breaker("inner").consecutive_failures(1).build().unwrap();
    let attempt: Q = Pipeline::builder().circuit_breaker(inner).build().unwrap();
    let (events, listener) = log();
    let outer: Q = Pipeline::builder()
        .circuit_breaker(breaker("outer"))
        .on_event(listener)
        .build()
        .unwrap();
    let outer_breaker = outer.circuit_breaker().unwrap().clone();
    let run = || async {
        match attempt.admit() {
            Some(Ok(a)) => a.finish(Err("down")),
            Some(Err(refused)) => Err(refused),
            None => unreachable!("a breaker decides at once"),
        }
    };
    assert!(matches!(
        outer.execute_composed(run).await,
        Err(Error::Inner("down"))
    ));
    let second = outer.execute_composed(run).await;
    assert!(matches!(second, Err(Error::Rejected(_))), "{second:?}");
    // The outer breaker saw a failure, then a refusal from inside (ignored).
    assert_eq!(outcomes(&events), [Outcome::Failure, Outcome::Ignored]);
    assert_eq!(
        (
            outer_breaker.stats().calls(),
            outer_breaker.stats().failures()
        ),
        (1, 1)
    );
}

/// A fallback entry that carries an answer besides its triggers.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    #[serde(default)]
    text: String,
    #[serde(default)]
    on_failure: Option<bool>,
}

impl ripcord::pipeline::FallbackEntry for Answer {
    fn triggers(&self) -> ripcord::FallbackConfig {
        ripcord::FallbackConfig {
            on_failure: self.on_failure.unwrap_or(true),
            ..Default::default()
        }
    }
}

#[test]
fn a_configuration_may_carry_its_own_fallback_entries() {
    let keyed: PipelineConfig<Answer> =
        toml::from_str("timeout = \"2s\"\nfallback = { text = \"sorry\", on_failure = false }\n")
            .unwrap();
    let kinds: Vec<PolicyKind> = keyed.policies.iter().map(PolicyConfig::kind).collect();
    assert_eq!(kinds, [PolicyKind::Fallback, PolicyKind::Timeout]);
    let PolicyConfig::Fallback(answer) = &keyed.policies[0] else {
        panic!("{keyed:?}")
    };
    assert_eq!(answer.text, "sorry");
    assert!(!ripcord::pipeline::FallbackEntry::triggers(answer).on_failure);
    let listed: PipelineConfig<Answer> = toml::from_str(
        "[[policy]]\nkind = \"fallback\"\ntext = \"sorry\"\non_failure = false\n[[policy]]\nkind = \"timeout\"\ntimeout = \"2s\"\n",
    )
    .unwrap();
    assert_eq!(listed, keyed);
    let e = toml::from_str::<PipelineConfig<Answer>>("fallback = { txt = \"x\" }\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `txt`"), "{e}");
    // Its triggers are checked: all off is refused.
    let none = PipelineConfig::<Answer> {
        name: None,
        policies: vec![PolicyConfig::Fallback(Answer {
            text: String::new(),
            on_failure: Some(false),
        })],
    };
    assert!(
        none.validate().is_ok(),
        "on_rejected and on_refused stay on"
    );
}
