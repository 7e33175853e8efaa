//! The pipeline's two interpreters agree: random pipelines of policies that
//! decide at once (timeouts, breakers, bulkheads without a queue, rate
//! limiters that never wait), random calls (results, latencies beyond a
//! timeout, cancellations, enclosing deadlines, bulkheads kept full), run
//! through `Pipeline::execute` and through `Pipeline::admit` driven as
//! ripcord-tower's `PipelineLayer` future drives it. Each run has twin
//! policies built from the same description, on paused tokio time; the
//! results, the events and the breakers' final states must be the same.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use proptest::prelude::*;
use ripcord::timeout::{current_deadline, with_deadline};
use ripcord::{
    Backoff, Bulkhead, Chaos, CircuitBreaker, Error, Event, Outcome, OwnedBulkheadPermit, Pipeline,
    RateLimiter, TimeoutPolicy, TokioClock,
};
use tokio::time::{Instant, Sleep};

type E = &'static str;
type P = Pipeline<u32, E>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A policy of the pipeline. The times are chosen so that no two timers of
/// one call (latency, deadlines, cancellation) ever fire at the same instant:
/// which one wins would then depend on the timer wheel, not on the rules.
#[derive(Debug, Clone)]
enum Spec {
    Timeout {
        ms: u64,
    },
    Breaker {
        failures: u32,
        open_ms: u64,
    },
    Bulkhead {
        max: u32,
    },
    Limiter {
        per_ms: u64,
        burst: u32,
    },
    /// Fault injection, seeded (both twins draw the same faults): aborts,
    /// a forced failure outcome, a latency of 13 ms (no other timer of a
    /// call falls on its multiples' sums).
    Chaos {
        seed: u64,
        abort: f64,
        forced: f64,
        delayed: f64,
    },
}

#[derive(Debug, Clone)]
struct Call {
    /// Paused time before the call.
    gap_ms: u64,
    latency_ms: u64,
    result: Result<u32, E>,
    /// Dropped this long after it started, if it has not ended.
    cancel_ms: Option<u64>,
    /// Run inside an enclosing deadline this long after it started.
    enclosing_ms: Option<u64>,
    /// Slots taken from every bulkhead during the call (a full one refuses).
    hold: u32,
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        prop::sample::select(vec![25u64, 55, 95]).prop_map(|ms| Spec::Timeout { ms }),
        (1u32..4, prop::sample::select(vec![40u64, 150]))
            .prop_map(|(failures, open_ms)| Spec::Breaker { failures, open_ms }),
        (1u32..3).prop_map(|max| Spec::Bulkhead { max }),
        (prop::sample::select(vec![15u64, 45]), 1u32..4)
            .prop_map(|(per_ms, burst)| Spec::Limiter { per_ms, burst }),
        (
            0u64..1000,
            prop::sample::select(vec![0.0, 0.3]),
            prop::sample::select(vec![0.0, 0.3]),
            prop::sample::select(vec![0.0, 0.5]),
        )
            .prop_map(|(seed, abort, forced, delayed)| Spec::Chaos {
                seed,
                abort,
                forced,
                delayed
            }),
    ]
}

fn call() -> impl Strategy<Value = Call> {
    (
        prop::sample::select(vec![0u64, 5, 20, 65]),
        prop::sample::select(vec![0u64, 10, 30, 60, 120]),
        prop_oneof![
            3 => (0u32..20).prop_map(Ok),
            2 => Just(Err("boom")),
            1 => Just(Err("ignored")),
        ],
        prop::option::weighted(0.2, prop::sample::select(vec![7u64, 42, 77])),
        prop::option::weighted(0.2, prop::sample::select(vec![35u64, 70])),
        prop::sample::select(vec![0u32, 0, 0, 1, 2]),
    )
        .prop_map(
            |(gap_ms, latency_ms, result, cancel_ms, enclosing_ms, hold)| Call {
                gap_ms,
                latency_ms,
                result,
                cancel_ms,
                enclosing_ms,
                hold,
            },
        )
}

/// One twin: a pipeline built from the specs, its bulkheads (shared
/// instances, so that the test can fill them) and its event log.
struct Twin {
    pipeline: P,
    bulkheads: Vec<Bulkhead>,
    events: Arc<Mutex<Vec<String>>>,
}

fn build(specs: &[Spec], classify: bool) -> Twin {
    let clock = TokioClock::new();
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = {
        let events = events.clone();
        move |e: &Event| events.lock().unwrap().push(format!("{e:?}"))
    };
    let mut b = Pipeline::builder().clock(clock).on_event(log.clone());
    let mut bulkheads = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let name = format!("p{i}");
        b = match *spec {
            Spec::Timeout { ms: t } => b.timeout(TimeoutPolicy::builder(&name).timeout(ms(t))),
            Spec::Breaker { failures, open_ms } => b.circuit_breaker(
                CircuitBreaker::builder(&name)
                    .consecutive_failures(failures)
                    .open_for(Backoff::fixed(ms(open_ms)))
                    .half_open_calls(1),
            ),
            Spec::Bulkhead { max } => {
                let bulkhead = Bulkhead::builder(&name)
                    .max_concurrent(max)
                    .clock(clock)
                    .on_event(log.clone())
                    .build()
                    .unwrap();
                bulkheads.push(bulkhead.clone());
                b.bulkhead(bulkhead)
            }
            Spec::Limiter { per_ms, burst } => {
                b.rate_limiter(RateLimiter::builder(&name).rate(1, ms(per_ms)).burst(burst))
            }
            Spec::Chaos {
                seed,
                abort,
                forced,
                delayed,
            } => {
                let mut c = Chaos::builder(&name)
                    .seed(seed)
                    .abort(abort)
                    .outcome(forced, Outcome::Failure);
                if delayed > 0.0 {
                    c = c.latency(delayed, ripcord::chaos::Latency::fixed(ms(13)));
                }
                b.chaos(c)
            }
        };
    }
    if classify {
        b = b.classify(|r: &Result<u32, E>| match r {
            Ok(v) if v % 5 == 0 => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err("ignored") => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        });
    }
    Twin {
        pipeline: b.build().unwrap(),
        bulkheads,
        events,
    }
}

/// Runs `call` through `admit`, as ripcord-tower's `PipelineLayer` future
/// does: the call polled inside the deadline's scope and raced against the
/// deadline; at the deadline the call is dropped, then `timed_out`.
async fn via_admit<F>(p: &P, call: F) -> Result<u32, Error<E>>
where
    F: Future<Output = Result<u32, E>>,
{
    let admitted = match p.admit() {
        Some(Ok(admitted)) => admitted,
        Some(Err(refused)) => return Err(refused),
        // Fault injection may wait (an injected latency).
        None => match p.admit_waiting().await {
            Some(Ok(admitted)) => admitted,
            Some(Err(refused)) => return Err(refused),
            None => panic!("every policy admits or refuses: {p:?}"),
        },
    };
    let mut call = Box::pin(call);
    let Some(at) = admitted.deadline() else {
        let result = call.await;
        return admitted.finish(result);
    };
    let mut sleep: Option<Pin<Box<Sleep>>> = None;
    let ended = poll_fn(|cx| {
        if let Poll::Ready(r) = admitted.in_scope(|| call.as_mut().poll(cx)) {
            return Poll::Ready(Some(r));
        }
        let s = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        s.as_mut().poll(cx).map(|()| None)
    })
    .await;
    match ended {
        Some(result) => admitted.finish(result),
        None => {
            drop(call);
            Err(admitted.timed_out())
        }
    }
}

/// What a run saw.
#[derive(Debug, PartialEq)]
struct Trace {
    /// Per call: the result (`None`: cancelled), the deadline the call saw at
    /// its first poll (from its start; `None` inside: not called), and when
    /// it ended.
    calls: Vec<String>,
    events: Vec<String>,
    /// Per breaker, outermost first: state, calls, failures, successes.
    breakers: Vec<String>,
}

fn run(specs: &[Spec], classify: bool, calls: &[Call], admit: bool) -> Trace {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let twin = build(specs, classify);
        let mut seen_calls = Vec::new();
        for c in calls {
            tokio::time::sleep(ms(c.gap_ms)).await;
            let held: Vec<OwnedBulkheadPermit> = twin
                .bulkheads
                .iter()
                .flat_map(|b| (0..c.hold).filter_map(|_| b.try_acquire_owned().ok()))
                .collect();
            let start = Instant::now();
            let seen: Arc<Mutex<Option<Option<Duration>>>> = Arc::default();
            let f = || {
                let seen = seen.clone();
                let (latency, result) = (c.latency_ms, c.result);
                async move {
                    *seen.lock().unwrap() = Some(current_deadline().map(|d| d - start));
                    if latency > 0 {
                        tokio::time::sleep(ms(latency)).await;
                    }
                    result
                }
            };
            let call = async {
                if admit {
                    via_admit(&twin.pipeline, f()).await
                } else {
                    twin.pipeline.execute(f).await
                }
            };
            let call = async {
                match c.enclosing_ms {
                    Some(e) => with_deadline(start + ms(e), call).await,
                    None => call.await,
                }
            };
            let result = match c.cancel_ms {
                Some(after) => tokio::time::timeout(ms(after), call).await.ok(),
                None => Some(call.await),
            };
            drop(held);
            let seen = *seen.lock().unwrap();
            seen_calls.push(format!(
                "{result:?}, saw {seen:?}, ended {:?}",
                start.elapsed()
            ));
        }
        for b in &twin.bulkheads {
            assert_eq!(b.in_use(), 0, "every slot given back");
        }
        let breakers = twin
            .pipeline
            .circuit_breakers()
            .map(|b| {
                let s = b.stats();
                format!(
                    "{}: {:?}, {} calls, {} failures, {} successes",
                    b.name(),
                    b.state(),
                    s.calls(),
                    s.failures(),
                    s.successes()
                )
            })
            .collect();
        let events = std::mem::take(&mut *twin.events.lock().unwrap());
        Trace {
            calls: seen_calls,
            events,
            breakers,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn execute_and_admit_agree(
        specs in prop::collection::vec(spec(), 0..=5),
        classify in any::<bool>(),
        calls in prop::collection::vec(call(), 1..30),
    ) {
        let executed = run(&specs, classify, &calls, false);
        let admitted = run(&specs, classify, &calls, true);
        prop_assert_eq!(&executed.calls, &admitted.calls);
        prop_assert_eq!(&executed.events, &admitted.events);
        prop_assert_eq!(&executed.breakers, &admitted.breakers);
    }
}

/// The differential test above is only as good as its runs' variety: a
/// fixed case where every rule matters at least once (a timeout inside a
/// breaker, a refusal inside one, a cancellation, a classified result), and
/// whose outcome is known.
#[test]
fn a_known_case_exercises_every_rule() {
    let specs = [
        Spec::Breaker {
            failures: 10,
            open_ms: 150,
        },
        Spec::Timeout { ms: 25 },
        Spec::Bulkhead { max: 1 },
    ];
    let call = |latency_ms, result, cancel_ms, hold| Call {
        gap_ms: 5,
        latency_ms,
        result,
        cancel_ms,
        enclosing_ms: None,
        hold,
    };
    let calls = [
        call(0, Ok(1), None, 0),          // success
        call(30, Ok(2), None, 0),         // timed out: failure
        call(0, Ok(3), None, 1),          // bulkhead full: ignored
        call(60, Ok(4), Some(7), 0),      // cancelled: ignored
        call(0, Err("ignored"), None, 0), // classified: ignored
        call(0, Ok(5), None, 0),          // classified: failure
    ];
    let executed = run(&specs, true, &calls, false);
    assert_eq!(executed, run(&specs, true, &calls, true));
    assert_eq!(
        executed.breakers,
        ["p0: Closed, 3 calls, 2 failures, 1 successes"]
    );
    assert!(
        executed.calls[1].contains("Timeout"),
        "{:?}",
        executed.calls
    );
    assert!(
        executed.calls[2].contains("BulkheadFull"),
        "{:?}",
        executed.calls
    );
    assert!(
        executed.calls[3].starts_with("None"),
        "{:?}",
        executed.calls
    );
}
