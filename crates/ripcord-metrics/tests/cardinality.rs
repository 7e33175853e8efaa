//! The cap on names: 10 000 keys of one registry never make more than
//! `max_names` series; the rest fold into `name="other"`, and no call is lost.

mod scenario;

use std::collections::BTreeSet;

use ripcord::{CircuitBreaker, PolicyKind, Registry, Retry, State};
use ripcord_metrics::{Metrics, MetricsError, OTHER};
use scenario::parse;

const KEYS: usize = 10_000;

fn names_in(text: &str, family: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| l.split("name=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn ten_thousand_keys_stay_under_the_cap() {
    let metrics = Metrics::builder().max_names(100).build().unwrap();
    let registry: Registry<String> = metrics
        .registry(
            CircuitBreaker::builder("template").consecutive_failures(1),
            |r| r.max_keys(20_000),
        )
        .unwrap();
    for k in 0..KEYS {
        let key = format!("tenant-{k:05}.example.com");
        let b = registry.get(&key).unwrap();
        b.call_sync(|| Ok::<_, ()>(())).unwrap();
        if k % 10 == 0 {
            // Every tenth key fails once and trips.
            let _ = b.call_sync(|| Err::<(), _>(()));
            assert_eq!(b.state(), State::Open);
        }
    }
    assert_eq!(registry.len(), KEYS);
    assert_eq!(metrics.tracked_names(PolicyKind::CircuitBreaker), 100);

    let text = metrics.render();
    let exp = parse(&text);
    for family in [
        "ripcord_calls_total",
        "ripcord_call_duration_seconds_count",
        "ripcord_breaker_state",
    ] {
        let names = names_in(&text, family);
        assert_eq!(names.len(), 101, "{family}: 100 names and other");
        assert!(names.contains(OTHER));
    }
    // Of the 100 named breakers, every tenth tripped.
    assert_eq!(
        names_in(&text, "ripcord_breaker_transitions_total").len(),
        11
    );
    // Scrape-time gauges are not exported for `other`.
    assert_eq!(names_in(&text, "ripcord_breaker_failure_rate").len(), 100);

    // No call is lost: the named series and `other` add up.
    let sum = |outcome: &str| -> f64 {
        exp.family("ripcord_calls_total")
            .iter()
            .filter(|(k, _)| k.contains(&format!("outcome=\"{outcome}\"")))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(sum("success"), KEYS as f64);
    assert_eq!(sum("failure"), (KEYS / 10) as f64);
    let other = |s: &str| exp.get(s);
    assert_eq!(
        other(r#"ripcord_calls_total{policy="circuit_breaker",name="other",outcome="success"}"#),
        (KEYS - 100) as f64
    );
    // For `other`, the state gauge counts the folded breakers in each state.
    let open = (KEYS / 10 - 10) as f64;
    assert_eq!(
        other(r#"ripcord_breaker_state{name="other",state="open"}"#),
        open
    );
    assert_eq!(
        other(r#"ripcord_breaker_state{name="other",state="closed"}"#),
        (KEYS - 100) as f64 - open
    );
    assert_eq!(
        other(
            r#"ripcord_breaker_transitions_total{name="other",from="closed",to="open",reason="consecutive_failures"}"#
        ),
        open
    );

    // The exposition stays bounded: about 85 lines per named breaker
    // (mostly its four duration histograms), whatever the number of keys.
    assert!(
        text.lines().count() < 101 * 90,
        "{} lines",
        text.lines().count()
    );

    // Each policy has its own cap.
    let retry = metrics.instrument(Retry::builder("r")).build().unwrap();
    let _ = retry;
    assert_eq!(metrics.tracked_names(PolicyKind::Retry), 0);
}

#[test]
fn the_default_cap_and_the_builder_checks() {
    let metrics = Metrics::new();
    assert_eq!(metrics.max_names(), ripcord_metrics::DEFAULT_MAX_NAMES);
    let listener = metrics.listener();
    for k in 0..KEYS {
        let b = CircuitBreaker::builder(&format!("k{k}")).build().unwrap();
        let e = ripcord::Event {
            name: ripcord::Name::new(b.name()),
            at: std::time::Duration::ZERO,
            epoch: 0,
            kind: ripcord::EventKind::Rejected {
                state: State::Open,
                retry_after: std::time::Duration::ZERO,
            },
        };
        listener(&e);
    }
    assert_eq!(
        metrics.tracked_names(PolicyKind::CircuitBreaker),
        ripcord_metrics::DEFAULT_MAX_NAMES
    );
    let exp = parse(&metrics.render());
    assert_eq!(
        exp.get(r#"ripcord_calls_total{policy="circuit_breaker",name="other",outcome="rejected"}"#),
        (KEYS - ripcord_metrics::DEFAULT_MAX_NAMES) as f64
    );

    let err = Metrics::builder().max_names(0).build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `max_names` = 0: expected at least 1 name"
    );
    let err = Metrics::builder()
        .duration_buckets(&[0.1, 0.05])
        .build()
        .unwrap_err();
    assert!(matches!(
        err,
        MetricsError::Config {
            field: "duration_buckets",
            ..
        }
    ));
    assert!(Metrics::builder().duration_buckets(&[]).build().is_err());
    assert!(Metrics::builder()
        .duration_buckets(&[f64::NAN])
        .build()
        .is_err());
    assert!(Metrics::builder()
        .duration_buckets(&[1e-12, 2e-12])
        .build()
        .is_err());
    assert!(Metrics::builder()
        .duration_buckets(&[0.5, 1.0])
        .build()
        .is_ok());
}
