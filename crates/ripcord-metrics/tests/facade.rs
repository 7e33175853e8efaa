//! The `metrics` facade backend: what a `DebuggingRecorder` receives is what
//! the Prometheus exposition shows for the same events.
#![allow(missing_docs)]

mod scenario;

use std::collections::BTreeMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use ripcord::{
    Bulkhead, CircuitBreaker, Event, EventKind, ManualClock, Name, Outcome, RateLimiter, State,
};
use ripcord_metrics::{Metric, Metrics};
use scenario::{breaker_scenario, parse, pipeline_scenario};

/// The families that only [`Metrics::publish_gauges`] sets.
const PUBLISHED_ONLY: [&str; 5] = [
    "ripcord_breaker_failure_rate",
    "ripcord_breaker_slow_rate",
    "ripcord_breaker_window_calls",
    "ripcord_breaker_consecutive_failures",
    "ripcord_breaker_half_open_permits_in_use",
];

/// A facade sample, written as the exposition writes it: `name{k="v",...}`
/// (labels in registration order). Histograms become `_count` and `_sum`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Counter(u64),
    Gauge(f64),
}

/// Everything the recorder holds (reads it once: the snapshot resets it).
fn facade(snapshotter: &Snapshotter) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (ck, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = ck.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let name = key.name();
        let previous = match (ck.kind(), value) {
            (MetricKind::Counter, DebugValue::Counter(v)) => {
                out.insert(format!("{name}{labels}"), Value::Counter(v))
            }
            (MetricKind::Gauge, DebugValue::Gauge(v)) => {
                out.insert(format!("{name}{labels}"), Value::Gauge(v.into_inner()))
            }
            (MetricKind::Histogram, DebugValue::Histogram(v)) => {
                let sum: f64 = v.iter().map(|x| x.into_inner()).sum();
                out.insert(
                    format!("{name}_count{labels}"),
                    Value::Counter(v.len() as u64),
                );
                out.insert(format!("{name}_sum{labels}"), Value::Gauge(sum))
            }
            (kind, value) => panic!("{name}: a {kind:?} holding {value:?}"),
        };
        assert!(previous.is_none(), "{name}{labels} twice");
    }
    out
}

/// The exposition's samples, buckets left out (the recorder buckets its own
/// way), as [`facade`] writes them.
fn exposition(metrics: &Metrics, skip: &[&str]) -> BTreeMap<String, Value> {
    let text = metrics.render();
    let exp = parse(&text);
    exp.samples
        .iter()
        .filter(|(k, _)| {
            let family = k.split('{').next().unwrap_or_default();
            !family.ends_with("_bucket") && !skip.contains(&family)
        })
        .map(|(k, v)| {
            let family = k.split('{').next().unwrap_or_default();
            let counter = family.ends_with("_total") || family.ends_with("_count");
            let v = if counter {
                assert!(v.fract() == 0.0 && *v >= 0.0, "{k} {v}");
                Value::Counter(*v as u64)
            } else {
                Value::Gauge(*v)
            };
            (k.clone(), v)
        })
        .collect()
}

/// Asserts both hold the same series with the same values (sums within a
/// nanosecond per observation).
#[track_caller]
fn assert_same(facade: &BTreeMap<String, Value>, exposition: &BTreeMap<String, Value>) {
    let f: Vec<_> = facade.keys().collect();
    let e: Vec<_> = exposition.keys().collect();
    assert_eq!(
        f, e,
        "the facade's series (left) and the exposition's (right)"
    );
    for (k, v) in facade {
        match (v, &exposition[k]) {
            (Value::Gauge(a), Value::Gauge(b)) if k.contains("_sum") => {
                assert!((a - b).abs() < 1e-6, "{k}: facade {a}, exposition {b}");
            }
            (a, b) => assert_eq!(a, b, "{k}"),
        }
    }
}

#[track_caller]
fn counter(map: &BTreeMap<String, Value>, series: &str) -> u64 {
    match map.get(series) {
        Some(Value::Counter(v)) => *v,
        other => panic!("{series}: {other:?}"),
    }
}

#[track_caller]
fn gauge(map: &BTreeMap<String, Value>, series: &str) -> f64 {
    match map.get(series) {
        Some(Value::Gauge(v)) => *v,
        other => panic!("{series}: {other:?}"),
    }
}

#[test]
fn a_breaker_through_trip_and_recovery_matches_the_exposition() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let metrics = Metrics::new();
    metrics::with_local_recorder(&recorder, || {
        breaker_scenario(&metrics, |_| {});
        metrics.publish_gauges();
    });
    let facade = facade(&snapshotter);
    let exposition = exposition(&metrics, &[]);
    assert_same(&facade, &exposition);

    // What the scenario did, so that two empty maps cannot pass.
    let calls = |outcome: &str| {
        counter(
            &facade,
            &format!(
                r#"ripcord_calls_total{{policy="circuit_breaker",name="payments",outcome="{outcome}"}}"#
            ),
        )
    };
    assert_eq!(
        ["success", "slow", "failure", "ignored", "rejected"].map(calls),
        [5, 1, 3, 1, 2]
    );
    for (from, to, reason) in [
        ("closed", "open", "failure_rate"),
        ("open", "half_open", "open_elapsed"),
        ("half_open", "closed", "probes_succeeded"),
    ] {
        assert_eq!(
            counter(
                &facade,
                &format!(
                    r#"ripcord_breaker_transitions_total{{name="payments",from="{from}",to="{to}",reason="{reason}"}}"#
                )
            ),
            1
        );
    }
    let duration = |outcome: &str, part: &str| {
        format!(
            r#"ripcord_call_duration_seconds_{part}{{policy="circuit_breaker",name="payments",outcome="{outcome}"}}"#
        )
    };
    assert_eq!(counter(&facade, &duration("failure", "count")), 3);
    assert!((gauge(&facade, &duration("failure", "sum")) - 0.3).abs() < 1e-9);
    assert!((gauge(&facade, &duration("slow", "sum")) - 1.0).abs() < 1e-9);
    assert_eq!(
        gauge(
            &facade,
            r#"ripcord_breaker_state{name="payments",state="closed"}"#
        ),
        1.0
    );
    assert_eq!(
        gauge(&facade, r#"ripcord_breaker_window_calls{name="payments"}"#),
        1.0
    );
}

#[test]
fn transitions_set_the_state_without_publishing() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let metrics = Metrics::new();
    metrics::with_local_recorder(&recorder, || {
        // Instrumented, not watched.
        let b = metrics
            .instrument(CircuitBreaker::builder("db").consecutive_failures(2))
            .build()
            .unwrap();
        for _ in 0..2 {
            let _ = b.call_sync(|| Err::<(), _>("down"));
        }
        assert_eq!(b.state(), State::Open);
        assert!(b.call_sync(|| Ok::<_, &str>(())).is_err());
    });
    let facade = facade(&snapshotter);
    for state in State::ALL {
        let expected = if state == State::Open { 1.0 } else { 0.0 };
        assert_eq!(
            gauge(
                &facade,
                &format!(
                    r#"ripcord_breaker_state{{name="db",state="{}"}}"#,
                    state.as_str()
                )
            ),
            expected,
            "{state:?}"
        );
    }
    assert!(
        !facade
            .keys()
            .any(|k| PUBLISHED_ONLY.iter().any(|f| k.starts_with(f))),
        "the window gauges wait for publish_gauges"
    );
    assert_same(&facade, &exposition(&metrics, &[]));
}

#[test]
fn a_pipeline_of_every_policy_matches_the_exposition() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let metrics = Metrics::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let pipeline = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let pipeline = pipeline_scenario(&metrics).await;
            metrics.publish_gauges();
            pipeline
        })
    });
    let facade = facade(&snapshotter);
    assert_same(&facade, &exposition(&metrics, &[]));
    for (series, n) in [
        (r#"ripcord_retry_attempts_total{name="checkout"}"#, 6),
        (r#"ripcord_retries_total{name="checkout"}"#, 3),
        (r#"ripcord_retries_exhausted_total{name="checkout"}"#, 1),
        (r#"ripcord_timeouts_total{name="checkout"}"#, 1),
        (
            r#"ripcord_fallbacks_total{name="checkout",result="used"}"#,
            1,
        ),
        (
            r#"ripcord_calls_total{policy="circuit_breaker",name="checkout",outcome="rejected"}"#,
            1,
        ),
        (
            r#"ripcord_calls_total{policy="bulkhead",name="checkout",outcome="rejected"}"#,
            0,
        ),
    ] {
        assert_eq!(counter(&facade, series), n, "{series}");
    }
    assert_eq!(
        gauge(&facade, r#"ripcord_bulkhead_in_use{name="checkout"}"#),
        0.0
    );
    drop(pipeline);
}

fn event(name: &str, kind: EventKind) -> Event {
    Event {
        name: Name::new(name),
        at: Duration::ZERO,
        epoch: 0,
        kind,
    }
}

#[test]
fn every_family_of_every_policy_matches_the_exposition() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let metrics = Metrics::new();
    let d = Duration::from_millis(3);
    metrics::with_local_recorder(&recorder, || {
        for kind in [
            EventKind::Outcome {
                outcome: Outcome::Success,
                duration: d,
                slow: false,
                probe: false,
            },
            EventKind::StaleOutcome {
                outcome: Outcome::Failure,
                admitted_in: 0,
            },
            EventKind::TripSuppressed {
                reason: ripcord::TransitionReason::FailureRate,
            },
            EventKind::RecoveryCheck { passed: true },
            EventKind::RecoveryCheck { passed: false },
            EventKind::Transition {
                from: State::Closed,
                to: State::ForcedOpen,
                reason: ripcord::TransitionReason::Manual,
            },
            EventKind::Rejected {
                state: State::ForcedOpen,
                retry_after: Duration::ZERO,
            },
        ] {
            metrics.record(&event("db", kind));
        }
        for kind in [
            EventKind::Attempt { attempt: 1 },
            EventKind::RetryScheduled {
                attempt: 2,
                delay: d,
            },
            EventKind::Attempt { attempt: 2 },
            EventKind::RetryBudgetExhausted,
            EventKind::RetriesExhausted { attempts: 2 },
        ] {
            metrics.record(&event("db", kind));
        }
        metrics.record(&event("db", EventKind::TimedOut { elapsed: d }));
        metrics.record(&event(
            "pool",
            EventKind::BulkheadAcquired {
                in_use: 3,
                queued: 2,
                waited: d,
            },
        ));
        metrics.record(&event("pool", EventKind::BulkheadFull { waited: d }));
        metrics.record(&event("pool", EventKind::BulkheadReleased { in_use: 2 }));
        metrics.record(&event("rl", EventKind::RateLimited { retry_after: d }));
        metrics.record(&event("rl", EventKind::RateLimited { retry_after: d }));
        metrics.record(&event("fb", EventKind::FallbackUsed { index: 1 }));
        metrics.record(&event("fb", EventKind::FallbackFailed));
        metrics.record(&event("fb", EventKind::FallbackFailed));
        metrics.record(&event("h", EventKind::HedgeStarted { hedge: 1 }));
        metrics.record(&event("h", EventKind::HedgeWon { attempt: 1 }));
        metrics.record(&event("h", EventKind::HedgeWon { attempt: 0 }));
        metrics.store_sync(Duration::from_millis(2), true);
        metrics.store_sync(Duration::from_millis(600), false);
        metrics.record(&event(
            "db",
            EventKind::StoreDegraded {
                degraded: true,
                detail: Some("connection refused".into()),
            },
        ));
    });
    let facade = facade(&snapshotter);
    assert_same(&facade, &exposition(&metrics, &[]));

    // Every family but the published-only ones is there.
    for m in Metric::ALL {
        let name = m.prometheus_name();
        let present = facade.keys().any(|k| {
            let family = k.split('{').next().unwrap_or_default();
            family == name || family == format!("{name}_count")
        });
        assert_eq!(present, !PUBLISHED_ONLY.contains(&name), "{name}");
    }
    for (series, v) in [
        (
            r#"ripcord_calls_total{policy="rate_limiter",name="rl",outcome="rejected"}"#,
            2,
        ),
        (
            r#"ripcord_calls_total{policy="bulkhead",name="pool",outcome="rejected"}"#,
            1,
        ),
        (
            r#"ripcord_calls_total{policy="circuit_breaker",name="db",outcome="failure"}"#,
            1,
        ),
        (
            r#"ripcord_calls_total{policy="circuit_breaker",name="db",outcome="rejected"}"#,
            1,
        ),
        (r#"ripcord_fallbacks_total{name="fb",result="failed"}"#, 2),
        (r#"ripcord_hedge_wins_total{name="h",winner="hedge"}"#, 1),
        (r#"ripcord_retry_budget_exhausted_total{name="db"}"#, 1),
        (
            r#"ripcord_store_sync_duration_seconds_count{result="error"}"#,
            1,
        ),
    ] {
        assert_eq!(counter(&facade, series), v, "{series}");
    }
    assert_eq!(
        gauge(&facade, r#"ripcord_bulkhead_in_use{name="pool"}"#),
        2.0
    );
    assert_eq!(
        gauge(&facade, r#"ripcord_bulkhead_queued{name="pool"}"#),
        2.0
    );
    assert_eq!(gauge(&facade, "ripcord_store_degraded"), 1.0);
    assert_eq!(
        gauge(
            &facade,
            r#"ripcord_breaker_state{name="db",state="forced_open"}"#
        ),
        1.0
    );
}

#[test]
fn the_facade_can_be_turned_off() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let metrics = Metrics::builder().facade(false).build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        let b = metrics.breaker(CircuitBreaker::builder("db")).unwrap();
        b.call_sync(|| Ok::<_, ()>(())).unwrap();
        metrics.publish_gauges();
    });
    assert_eq!(facade(&snapshotter), BTreeMap::new());
    assert!(metrics.render().contains(
        r#"ripcord_calls_total{policy="circuit_breaker",name="db",outcome="success"} 1"#
    ));
}

#[test]
fn a_bulkhead_and_a_rate_limiter_match_the_exposition() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let metrics = Metrics::new();
    let _held = metrics::with_local_recorder(&recorder, || {
        let clock = ManualClock::new();
        let limiter = metrics
            .instrument(
                RateLimiter::builder("api")
                    .rate(10, Duration::from_secs(1))
                    .burst(2)
                    .clock(clock.clone()),
            )
            .build()
            .unwrap();
        for _ in 0..2 {
            limiter.try_acquire().unwrap();
        }
        for _ in 0..3 {
            assert!(limiter.try_acquire().is_err());
        }

        // Not watched: its gauges follow its events.
        let pool = metrics
            .instrument(Bulkhead::builder("pool").max_concurrent(2))
            .build()
            .unwrap();
        let a = pool.try_acquire_owned().unwrap();
        let b = pool.try_acquire_owned().unwrap();
        assert!(pool.try_acquire().is_err());
        drop(a);
        b // held: 1 in use
    });
    let facade = facade(&snapshotter);
    assert_same(&facade, &exposition(&metrics, &[]));
    assert_eq!(
        counter(
            &facade,
            r#"ripcord_calls_total{policy="rate_limiter",name="api",outcome="rejected"}"#
        ),
        3
    );
    assert_eq!(
        counter(
            &facade,
            r#"ripcord_calls_total{policy="bulkhead",name="pool",outcome="rejected"}"#
        ),
        1
    );
    assert_eq!(
        gauge(&facade, r#"ripcord_bulkhead_in_use{name="pool"}"#),
        1.0
    );
}

#[test]
fn names_past_the_cap_share_other_as_in_the_exposition() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let metrics = Metrics::builder().max_names(1).build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        for name in ["a", "b", "c"] {
            let b = metrics
                .breaker(CircuitBreaker::builder(name).consecutive_failures(1))
                .unwrap();
            b.call_sync(|| Ok::<_, ()>(())).unwrap();
            if name == "c" {
                let _ = b.call_sync(|| Err::<(), _>(()));
            }
        }
        metrics.publish_gauges();
    });
    let facade = facade(&snapshotter);
    assert_same(&facade, &exposition(&metrics, &[]));
    assert_eq!(
        counter(
            &facade,
            r#"ripcord_calls_total{policy="circuit_breaker",name="other",outcome="success"}"#
        ),
        2
    );
    for (state, n) in [("closed", 1.0), ("open", 1.0)] {
        assert_eq!(
            gauge(
                &facade,
                &format!(r#"ripcord_breaker_state{{name="other",state="{state}"}}"#)
            ),
            n
        );
    }
}
