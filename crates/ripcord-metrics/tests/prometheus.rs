//! The Prometheus exposition of a breaker and a pipeline driven through a trip
//! and a recovery, parsed strictly (and by `prometheus-parse`) and checked
//! series by series.

mod scenario;

use std::time::Duration;

use ripcord::{CircuitBreaker, Event, EventKind, Name, Outcome};
use ripcord_metrics::prometheus::CONTENT_TYPE;
use ripcord_metrics::{Metric, Metrics};
use scenario::{breaker_scenario, parse, parse_strict, pipeline_scenario, Checkpoint, Exposition};

/// The rendered lines of `families` (without `_bucket` lines and comments),
/// in exposition order.
fn lines_of(text: &str, families: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains("_bucket{"))
        .filter(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            families
                .iter()
                .any(|f| name == *f || name == format!("{f}_sum") || name == format!("{f}_count"))
        })
        .map(str::to_string)
        .collect()
}

#[track_caller]
fn assert_lines(text: &str, families: &[&str], expected: &str) {
    let expected: Vec<String> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(lines_of(text, families), expected, "\n{text}");
}

/// Cumulative bucket counts of one duration histogram, `+Inf` last.
fn buckets(exp: &Exposition, policy: &str, name: &str, outcome: &str) -> Vec<u64> {
    let les = [
        "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
        "10", "+Inf",
    ];
    les.iter()
        .map(|le| {
            exp.get(&format!(
                r#"ripcord_call_duration_seconds_bucket{{policy="{policy}",name="{name}",outcome="{outcome}",le="{le}"}}"#
            )) as u64
        })
        .collect()
}

const BREAKER_GAUGES: [&str; 6] = [
    "ripcord_breaker_state",
    "ripcord_breaker_failure_rate",
    "ripcord_breaker_slow_rate",
    "ripcord_breaker_window_calls",
    "ripcord_breaker_consecutive_failures",
    "ripcord_breaker_half_open_permits_in_use",
];

#[test]
fn a_breaker_through_trip_and_recovery() {
    let metrics = Metrics::new();
    breaker_scenario(&metrics, |checkpoint| {
        let text = metrics.render();
        parse(&text);
        match checkpoint {
            Checkpoint::BeforeTrip => assert_lines(
                &text,
                &BREAKER_GAUGES,
                r#"
                ripcord_breaker_state{name="payments",state="closed"} 1
                ripcord_breaker_state{name="payments",state="open"} 0
                ripcord_breaker_state{name="payments",state="half_open"} 0
                ripcord_breaker_state{name="payments",state="forced_open"} 0
                ripcord_breaker_state{name="payments",state="disabled"} 0
                ripcord_breaker_state{name="payments",state="metrics_only"} 0
                ripcord_breaker_failure_rate{name="payments"} 0.4
                ripcord_breaker_slow_rate{name="payments"} 0.2
                ripcord_breaker_window_calls{name="payments"} 5
                ripcord_breaker_consecutive_failures{name="payments"} 2
                ripcord_breaker_half_open_permits_in_use{name="payments"} 0
                "#,
            ),
            Checkpoint::Probing => {
                assert_lines(
                    &text,
                    &BREAKER_GAUGES,
                    r#"
                    ripcord_breaker_state{name="payments",state="closed"} 0
                    ripcord_breaker_state{name="payments",state="open"} 0
                    ripcord_breaker_state{name="payments",state="half_open"} 1
                    ripcord_breaker_state{name="payments",state="forced_open"} 0
                    ripcord_breaker_state{name="payments",state="disabled"} 0
                    ripcord_breaker_state{name="payments",state="metrics_only"} 0
                    ripcord_breaker_failure_rate{name="payments"} 0
                    ripcord_breaker_slow_rate{name="payments"} 0
                    ripcord_breaker_window_calls{name="payments"} 0
                    ripcord_breaker_consecutive_failures{name="payments"} 3
                    ripcord_breaker_half_open_permits_in_use{name="payments"} 1
                    "#,
                );
                assert_lines(
                    &text,
                    &["ripcord_calls_total", "ripcord_breaker_transitions_total"],
                    r#"
                    ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="success"} 2
                    ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="slow"} 1
                    ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="failure"} 3
                    ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="ignored"} 1
                    ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="rejected"} 2
                    ripcord_breaker_transitions_total{name="payments",from="closed",to="open",reason="failure_rate"} 1
                    ripcord_breaker_transitions_total{name="payments",from="open",to="half_open",reason="open_elapsed"} 1
                    "#,
                );
            }
            Checkpoint::End => {}
        }
    });

    // The end: every series, exactly.
    let text = metrics.render();
    let exp = parse(&text);
    let families: Vec<&str> = Metric::ALL.iter().map(|m| m.prometheus_name()).collect();
    assert_lines(
        &text,
        &families,
        r#"
        ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="success"} 5
        ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="slow"} 1
        ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="failure"} 3
        ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="ignored"} 1
        ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="rejected"} 2
        ripcord_call_duration_seconds_sum{policy="circuit_breaker",name="payments",outcome="success"} 0.08
        ripcord_call_duration_seconds_count{policy="circuit_breaker",name="payments",outcome="success"} 5
        ripcord_call_duration_seconds_sum{policy="circuit_breaker",name="payments",outcome="slow"} 1
        ripcord_call_duration_seconds_count{policy="circuit_breaker",name="payments",outcome="slow"} 1
        ripcord_call_duration_seconds_sum{policy="circuit_breaker",name="payments",outcome="failure"} 0.3
        ripcord_call_duration_seconds_count{policy="circuit_breaker",name="payments",outcome="failure"} 3
        ripcord_call_duration_seconds_sum{policy="circuit_breaker",name="payments",outcome="ignored"} 0.005
        ripcord_call_duration_seconds_count{policy="circuit_breaker",name="payments",outcome="ignored"} 1
        ripcord_breaker_state{name="payments",state="closed"} 1
        ripcord_breaker_state{name="payments",state="open"} 0
        ripcord_breaker_state{name="payments",state="half_open"} 0
        ripcord_breaker_state{name="payments",state="forced_open"} 0
        ripcord_breaker_state{name="payments",state="disabled"} 0
        ripcord_breaker_state{name="payments",state="metrics_only"} 0
        ripcord_breaker_transitions_total{name="payments",from="closed",to="open",reason="failure_rate"} 1
        ripcord_breaker_transitions_total{name="payments",from="open",to="half_open",reason="open_elapsed"} 1
        ripcord_breaker_transitions_total{name="payments",from="half_open",to="closed",reason="probes_succeeded"} 1
        ripcord_breaker_failure_rate{name="payments"} 0
        ripcord_breaker_slow_rate{name="payments"} 0
        ripcord_breaker_window_calls{name="payments"} 1
        ripcord_breaker_consecutive_failures{name="payments"} 0
        ripcord_breaker_half_open_permits_in_use{name="payments"} 0
        ripcord_breaker_trips_suppressed_total{name="payments"} 0
        ripcord_breaker_recovery_checks_total{name="payments",result="passed"} 0
        ripcord_breaker_recovery_checks_total{name="payments",result="failed"} 0
        "#,
    );
    let cb = "circuit_breaker";
    // 2 probes of 10 ms and 3 calls of 20 ms; le is inclusive.
    assert_eq!(
        buckets(&exp, cb, "payments", "success"),
        [0, 0, 0, 2, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5]
    );
    assert_eq!(
        buckets(&exp, cb, "payments", "slow"),
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    );
    assert_eq!(
        buckets(&exp, cb, "payments", "failure"),
        [0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3]
    );
    assert_eq!(
        buckets(&exp, cb, "payments", "ignored"),
        [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    );
    assert_eq!(exp.types["ripcord_call_duration_seconds"], "histogram");
    assert_eq!(exp.types["ripcord_calls_total"], "counter");
    assert_eq!(exp.types["ripcord_breaker_state"], "gauge");
    for (family, help) in &exp.helps {
        let m = Metric::ALL
            .iter()
            .find(|m| m.prometheus_name() == family)
            .unwrap();
        assert_eq!(help, m.help());
    }
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_through_trip_and_recovery() {
    let metrics = Metrics::new();
    pipeline_scenario(&metrics).await;
    let text = metrics.render();
    let exp = parse(&text);
    let families: Vec<&str> = Metric::ALL.iter().map(|m| m.prometheus_name()).collect();
    assert_lines(
        &text,
        &families,
        r#"
        ripcord_calls_total{policy="circuit_breaker",name="checkout",outcome="success"} 2
        ripcord_calls_total{policy="circuit_breaker",name="checkout",outcome="slow"} 0
        ripcord_calls_total{policy="circuit_breaker",name="checkout",outcome="failure"} 3
        ripcord_calls_total{policy="circuit_breaker",name="checkout",outcome="ignored"} 0
        ripcord_calls_total{policy="circuit_breaker",name="checkout",outcome="rejected"} 1
        ripcord_calls_total{policy="bulkhead",name="checkout",outcome="rejected"} 0
        ripcord_call_duration_seconds_sum{policy="circuit_breaker",name="checkout",outcome="success"} 0.002
        ripcord_call_duration_seconds_count{policy="circuit_breaker",name="checkout",outcome="success"} 2
        ripcord_call_duration_seconds_sum{policy="circuit_breaker",name="checkout",outcome="slow"} 0
        ripcord_call_duration_seconds_count{policy="circuit_breaker",name="checkout",outcome="slow"} 0
        ripcord_call_duration_seconds_sum{policy="circuit_breaker",name="checkout",outcome="failure"} 0.202
        ripcord_call_duration_seconds_count{policy="circuit_breaker",name="checkout",outcome="failure"} 3
        ripcord_call_duration_seconds_sum{policy="circuit_breaker",name="checkout",outcome="ignored"} 0
        ripcord_call_duration_seconds_count{policy="circuit_breaker",name="checkout",outcome="ignored"} 0
        ripcord_breaker_state{name="checkout",state="closed"} 1
        ripcord_breaker_state{name="checkout",state="open"} 0
        ripcord_breaker_state{name="checkout",state="half_open"} 0
        ripcord_breaker_state{name="checkout",state="forced_open"} 0
        ripcord_breaker_state{name="checkout",state="disabled"} 0
        ripcord_breaker_state{name="checkout",state="metrics_only"} 0
        ripcord_breaker_transitions_total{name="checkout",from="closed",to="open",reason="consecutive_failures"} 1
        ripcord_breaker_transitions_total{name="checkout",from="open",to="half_open",reason="open_elapsed"} 1
        ripcord_breaker_transitions_total{name="checkout",from="half_open",to="closed",reason="probes_succeeded"} 1
        ripcord_breaker_failure_rate{name="checkout"} 0
        ripcord_breaker_slow_rate{name="checkout"} 0
        ripcord_breaker_window_calls{name="checkout"} 1
        ripcord_breaker_consecutive_failures{name="checkout"} 0
        ripcord_breaker_half_open_permits_in_use{name="checkout"} 0
        ripcord_breaker_trips_suppressed_total{name="checkout"} 0
        ripcord_breaker_recovery_checks_total{name="checkout",result="passed"} 0
        ripcord_breaker_recovery_checks_total{name="checkout",result="failed"} 0
        ripcord_retry_attempts_total{name="checkout"} 6
        ripcord_retries_total{name="checkout"} 3
        ripcord_retry_budget_exhausted_total{name="checkout"} 0
        ripcord_retries_exhausted_total{name="checkout"} 1
        ripcord_timeouts_total{name="checkout"} 1
        ripcord_bulkhead_in_use{name="checkout"} 0
        ripcord_bulkhead_queued{name="checkout"} 0
        ripcord_fallbacks_total{name="checkout",result="used"} 1
        ripcord_fallbacks_total{name="checkout",result="failed"} 0
        "#,
    );
    let cb = "circuit_breaker";
    // Failures: 1 ms, 200 ms (cut off by the timeout), 1 ms.
    assert_eq!(
        buckets(&exp, cb, "checkout", "failure"),
        [2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3]
    );
    assert_eq!(
        buckets(&exp, cb, "checkout", "success"),
        [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    );
}

#[test]
fn every_family_of_every_policy_is_well_formed() {
    let metrics = Metrics::new();
    let event = |name: &str, kind: EventKind| Event {
        name: Name::new(name),
        at: Duration::ZERO,
        epoch: 0,
        kind,
    };
    let d = Duration::from_millis(3);
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
            from: ripcord::State::Closed,
            to: ripcord::State::ForcedOpen,
            reason: ripcord::TransitionReason::Manual,
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

    let text = metrics.render();
    let exp = parse(&text);
    // Every family is there, and nothing else.
    let mut families: Vec<_> = exp.types.keys().cloned().collect();
    let mut all: Vec<_> = Metric::ALL
        .iter()
        .map(|m| m.prometheus_name().to_string())
        .filter(|n| {
            // Scrape-time breaker gauges need a watched breaker.
            ![
                "ripcord_breaker_failure_rate",
                "ripcord_breaker_slow_rate",
                "ripcord_breaker_window_calls",
                "ripcord_breaker_consecutive_failures",
                "ripcord_breaker_half_open_permits_in_use",
            ]
            .contains(&n.as_str())
        })
        .collect();
    families.sort();
    all.sort();
    assert_eq!(families, all);

    for (series, value) in [
        (
            r#"ripcord_calls_total{policy="circuit_breaker",name="db",outcome="success"}"#,
            1.0,
        ),
        (
            r#"ripcord_calls_total{policy="circuit_breaker",name="db",outcome="failure"}"#,
            1.0,
        ),
        (
            r#"ripcord_call_duration_seconds_count{policy="circuit_breaker",name="db",outcome="failure"}"#,
            0.0,
        ),
        (
            r#"ripcord_calls_total{policy="bulkhead",name="pool",outcome="rejected"}"#,
            1.0,
        ),
        (
            r#"ripcord_calls_total{policy="rate_limiter",name="rl",outcome="rejected"}"#,
            1.0,
        ),
        (r#"ripcord_breaker_trips_suppressed_total{name="db"}"#, 1.0),
        (
            r#"ripcord_breaker_transitions_total{name="db",from="closed",to="forced_open",reason="manual"}"#,
            1.0,
        ),
        (
            r#"ripcord_breaker_state{name="db",state="forced_open"}"#,
            1.0,
        ),
        (r#"ripcord_breaker_state{name="db",state="closed"}"#, 0.0),
        (
            r#"ripcord_breaker_recovery_checks_total{name="db",result="passed"}"#,
            1.0,
        ),
        (
            r#"ripcord_breaker_recovery_checks_total{name="db",result="failed"}"#,
            1.0,
        ),
        (r#"ripcord_retry_attempts_total{name="db"}"#, 2.0),
        (r#"ripcord_retries_total{name="db"}"#, 1.0),
        (r#"ripcord_retry_budget_exhausted_total{name="db"}"#, 1.0),
        (r#"ripcord_retries_exhausted_total{name="db"}"#, 1.0),
        (r#"ripcord_timeouts_total{name="db"}"#, 1.0),
        (r#"ripcord_bulkhead_in_use{name="pool"}"#, 2.0),
        (r#"ripcord_bulkhead_queued{name="pool"}"#, 2.0),
        (r#"ripcord_fallbacks_total{name="fb",result="used"}"#, 1.0),
        (r#"ripcord_fallbacks_total{name="fb",result="failed"}"#, 2.0),
        (r#"ripcord_hedges_total{name="h"}"#, 1.0),
        (
            r#"ripcord_hedge_wins_total{name="h",winner="original"}"#,
            1.0,
        ),
        (r#"ripcord_hedge_wins_total{name="h",winner="hedge"}"#, 1.0),
        (
            r#"ripcord_store_sync_duration_seconds_count{result="ok"}"#,
            1.0,
        ),
        (
            r#"ripcord_store_sync_duration_seconds_bucket{result="ok",le="0.0025"}"#,
            1.0,
        ),
        (
            r#"ripcord_store_sync_duration_seconds_count{result="error"}"#,
            1.0,
        ),
        (
            r#"ripcord_store_sync_duration_seconds_sum{result="error"}"#,
            0.6,
        ),
        (
            r#"ripcord_store_sync_duration_seconds_bucket{result="error",le="0.5"}"#,
            0.0,
        ),
        (r#"ripcord_store_degraded"#, 1.0),
    ] {
        assert_eq!(exp.get(series), value, "{series}");
    }
    metrics.set_store_degraded(false);
    assert_eq!(parse(&metrics.render()).get("ripcord_store_degraded"), 0.0);
}

#[test]
fn label_values_are_escaped() {
    let metrics = Metrics::new();
    let weird = "GET \"/a\\b\"\nx=1,y";
    let b = metrics.breaker(CircuitBreaker::builder(weird)).unwrap();
    b.call_sync(|| Ok::<_, ()>(())).unwrap();
    let text = metrics.render();
    let exp = parse(&text);
    let escaped = r#"GET \"/a\\b\"\nx=1,y"#;
    assert_eq!(
        exp.get(&format!(
            r#"ripcord_calls_total{{policy="circuit_breaker",name="{escaped}",outcome="success"}}"#
        )),
        1.0
    );
}

#[test]
fn the_strict_reader_rejects_malformed_expositions() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n";
    assert!(parse_strict(good).is_ok());
    for bad in [
        "a_total 1\n",                                                 // no TYPE
        "# TYPE a_total counter\na_total{x=\"1} 3\n",                  // unterminated value
        "# TYPE a_total counter\na_total{x=\"1\"} three\n",            // bad value
        "# TYPE a_total counter\na_total{x=\"a\\tb\"} 1\n",            // bad escape
        "# TYPE a_total counter\na_total{1x=\"a\"} 1\n",               // bad label name
        "# TYPE a_total counter\na_total 1\na_total 2\n",              // duplicate
        "# TYPE a_total counter\n# TYPE a_total counter\na_total 1\n", // two TYPEs
        "# TYPE a_total counter\nb_total 1\n",                         // wrong family
        "# TYPE a_total counter\na_total 1",                           // no final newline
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n", // +Inf != count
    ] {
        assert!(parse_strict(bad).is_err(), "accepted: {bad:?}");
    }
}

#[test]
fn the_http_response_carries_the_exposition() {
    let metrics = Metrics::new();
    let b = metrics
        .breaker(CircuitBreaker::builder("payments"))
        .unwrap();
    b.call_sync(|| Ok::<_, ()>(())).unwrap();
    let response = metrics.http_response();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], CONTENT_TYPE);
    assert_eq!(response.body(), &metrics.render());
}

#[tokio::test]
async fn axum_serves_it() {
    use tower::ServiceExt as _;

    let metrics = Metrics::new();
    let b = metrics
        .breaker(CircuitBreaker::builder("payments"))
        .unwrap();
    b.call_sync(|| Ok::<_, ()>(())).unwrap();
    let m = metrics.clone();
    let app: axum::Router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = m.clone();
            async move { m.http_response() }
        }),
    );
    let response = app
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], CONTENT_TYPE);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let exp = parse(std::str::from_utf8(&body).unwrap());
    assert_eq!(
        exp.get(
            r#"ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="success"}"#
        ),
        1.0
    );
}
