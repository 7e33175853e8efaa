//! The breaker and pipeline scenarios exported through an OpenTelemetry SDK
//! meter into the in-memory exporter: instruments, units, attributes, values.

mod scenario;

use std::collections::BTreeMap;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use ripcord_metrics::{Metrics, MetricsError};
use scenario::{breaker_scenario, pipeline_scenario, Checkpoint};

struct Otel {
    exporter: InMemoryMetricExporter,
    provider: SdkMeterProvider,
}

impl Otel {
    fn new(metrics: &Metrics) -> Otel {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        metrics.export_to(&provider.meter("ripcord")).unwrap();
        Otel { exporter, provider }
    }

    /// Collects now; the latest export.
    fn collect(&self) -> ResourceMetrics {
        self.exporter.reset();
        self.provider.force_flush().unwrap();
        self.exporter
            .get_finished_metrics()
            .unwrap()
            .pop()
            .expect("one export")
    }
}

fn find<'a>(rm: &'a ResourceMetrics, name: &str) -> &'a Metric {
    rm.scope_metrics()
        .flat_map(|s| s.metrics())
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no instrument {name}"))
}

fn names(rm: &ResourceMetrics) -> Vec<String> {
    let mut v: Vec<_> = rm
        .scope_metrics()
        .flat_map(|s| s.metrics())
        .map(|m| m.name().to_string())
        .collect();
    v.sort();
    v
}

fn attributes<'a>(kvs: impl Iterator<Item = &'a KeyValue>) -> BTreeMap<String, String> {
    kvs.map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

fn want(attrs: &[(&str, &str)]) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every data point of a monotonic u64 sum, by attributes.
fn counters(rm: &ResourceMetrics, name: &str) -> BTreeMap<BTreeMap<String, String>, u64> {
    let AggregatedMetrics::U64(MetricData::Sum(sum)) = find(rm, name).data() else {
        panic!("{name} is not a u64 sum");
    };
    assert!(sum.is_monotonic(), "{name}");
    sum.data_points()
        .map(|p| (attributes(p.attributes()), p.value()))
        .collect()
}

fn counter(rm: &ResourceMetrics, name: &str, attrs: &[(&str, &str)]) -> u64 {
    *counters(rm, name)
        .get(&want(attrs))
        .unwrap_or_else(|| panic!("no {name} {attrs:?}"))
}

fn gauges(rm: &ResourceMetrics, name: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
    let AggregatedMetrics::F64(MetricData::Gauge(g)) = find(rm, name).data() else {
        panic!("{name} is not an f64 gauge");
    };
    g.data_points()
        .map(|p| (attributes(p.attributes()), p.value()))
        .collect()
}

fn gauge(rm: &ResourceMetrics, name: &str, attrs: &[(&str, &str)]) -> f64 {
    *gauges(rm, name)
        .get(&want(attrs))
        .unwrap_or_else(|| panic!("no {name} {attrs:?}"))
}

/// `(count, sum, non-cumulative bucket counts)` of one histogram point.
fn histogram(rm: &ResourceMetrics, name: &str, attrs: &[(&str, &str)]) -> (u64, f64, Vec<u64>) {
    let AggregatedMetrics::F64(MetricData::Histogram(h)) = find(rm, name).data() else {
        panic!("{name} is not an f64 histogram");
    };
    let p = h
        .data_points()
        .find(|p| attributes(p.attributes()) == want(attrs))
        .unwrap_or_else(|| panic!("no {name} {attrs:?}"));
    assert_eq!(
        p.bounds().collect::<Vec<_>>(),
        ripcord_metrics::DEFAULT_BUCKETS.to_vec()
    );
    (p.count(), p.sum(), p.bucket_counts().collect())
}

fn breaker_state(rm: &ResourceMetrics, name: &str) -> Vec<(String, f64)> {
    let mut v: Vec<_> = gauges(rm, "ripcord.breaker.state")
        .into_iter()
        .filter(|(a, _)| a["name"] == name)
        .map(|(a, v)| (a["state"].clone(), v))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn open_is(state: &str) -> Vec<(String, f64)> {
    let mut v: Vec<_> = [
        "closed",
        "open",
        "half_open",
        "forced_open",
        "disabled",
        "metrics_only",
    ]
    .iter()
    .map(|s| (s.to_string(), if *s == state { 1.0 } else { 0.0 }))
    .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_breaker_through_trip_and_recovery() {
    let metrics = Metrics::new();
    let otel = Otel::new(&metrics);
    let p = [("name", "payments")];
    breaker_scenario(&metrics, |checkpoint| {
        let rm = otel.collect();
        match checkpoint {
            Checkpoint::BeforeTrip => {
                assert_eq!(breaker_state(&rm, "payments"), open_is("closed"));
                assert_eq!(gauge(&rm, "ripcord.breaker.failure_rate", &p), 0.4);
                assert_eq!(gauge(&rm, "ripcord.breaker.slow_rate", &p), 0.2);
                assert_eq!(gauge(&rm, "ripcord.breaker.window_calls", &p), 5.0);
                assert_eq!(gauge(&rm, "ripcord.breaker.consecutive_failures", &p), 2.0);
            }
            Checkpoint::Probing => {
                assert_eq!(breaker_state(&rm, "payments"), open_is("half_open"));
                assert_eq!(
                    gauge(&rm, "ripcord.breaker.half_open.permits_in_use", &p),
                    1.0
                );
            }
            Checkpoint::End => {}
        }
    });

    let rm = otel.collect();
    let calls = |outcome| {
        counter(
            &rm,
            "ripcord.calls",
            &[
                ("policy", "circuit_breaker"),
                ("name", "payments"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        ["success", "slow", "failure", "ignored", "rejected"].map(calls),
        [5, 1, 3, 1, 2]
    );
    assert_eq!(counters(&rm, "ripcord.calls").len(), 5, "no other series");

    let duration = |outcome| {
        histogram(
            &rm,
            "ripcord.call.duration",
            &[
                ("policy", "circuit_breaker"),
                ("name", "payments"),
                ("outcome", outcome),
            ],
        )
    };
    let (count, sum, buckets) = duration("success");
    assert_eq!(count, 5);
    assert!((sum - 0.08).abs() < 1e-9, "{sum}");
    assert_eq!(buckets, [0, 0, 0, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let (count, sum, buckets) = duration("slow");
    assert_eq!((count, sum), (1, 1.0));
    assert_eq!(buckets, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
    let (count, sum, buckets) = duration("failure");
    assert_eq!(count, 3);
    assert!((sum - 0.3).abs() < 1e-9, "{sum}");
    assert_eq!(buckets, [0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(duration("ignored").0, 1);

    let transitions = counters(&rm, "ripcord.breaker.transitions");
    let t = |from, to, reason| {
        want(&[
            ("name", "payments"),
            ("from", from),
            ("to", to),
            ("reason", reason),
        ])
    };
    assert_eq!(
        transitions,
        BTreeMap::from([
            (t("closed", "open", "failure_rate"), 1),
            (t("open", "half_open", "open_elapsed"), 1),
            (t("half_open", "closed", "probes_succeeded"), 1),
        ])
    );
    assert_eq!(breaker_state(&rm, "payments"), open_is("closed"));
    assert_eq!(gauge(&rm, "ripcord.breaker.window_calls", &p), 1.0);
    assert_eq!(gauge(&rm, "ripcord.breaker.consecutive_failures", &p), 0.0);
    assert_eq!(
        gauge(&rm, "ripcord.breaker.half_open.permits_in_use", &p),
        0.0
    );
    assert_eq!(counter(&rm, "ripcord.breaker.trips_suppressed", &p), 0);

    // Units and descriptions come from the metric list.
    for m in ripcord_metrics::Metric::ALL {
        let Some(inst) = rm
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|i| i.name() == m.otel_name())
        else {
            continue;
        };
        assert_eq!(inst.unit(), m.unit(), "{m}");
        assert_eq!(inst.description(), m.help(), "{m}");
    }
    assert_eq!(find(&rm, "ripcord.call.duration").unit(), "s");
    assert_eq!(
        names(&rm),
        [
            "ripcord.breaker.consecutive_failures",
            "ripcord.breaker.failure_rate",
            "ripcord.breaker.half_open.permits_in_use",
            "ripcord.breaker.recovery_checks",
            "ripcord.breaker.slow_rate",
            "ripcord.breaker.state",
            "ripcord.breaker.transitions",
            "ripcord.breaker.trips_suppressed",
            "ripcord.breaker.window_calls",
            "ripcord.call.duration",
            "ripcord.calls",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_through_trip_and_recovery() {
    let metrics = Metrics::new();
    let otel = Otel::new(&metrics);
    pipeline_scenario(&metrics).await;
    let rm = otel.collect();
    let n = [("name", "checkout")];
    let cb = |outcome| {
        counter(
            &rm,
            "ripcord.calls",
            &[
                ("policy", "circuit_breaker"),
                ("name", "checkout"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        ["success", "slow", "failure", "ignored", "rejected"].map(cb),
        [2, 0, 3, 0, 1]
    );
    assert_eq!(
        counter(
            &rm,
            "ripcord.calls",
            &[
                ("policy", "bulkhead"),
                ("name", "checkout"),
                ("outcome", "rejected")
            ]
        ),
        0
    );
    assert_eq!(counter(&rm, "ripcord.retry_attempts", &n), 6);
    assert_eq!(counter(&rm, "ripcord.retries", &n), 3);
    assert_eq!(counter(&rm, "ripcord.retries_exhausted", &n), 1);
    assert_eq!(counter(&rm, "ripcord.retry_budget_exhausted", &n), 0);
    assert_eq!(counter(&rm, "ripcord.timeouts", &n), 1);
    assert_eq!(
        counter(
            &rm,
            "ripcord.fallbacks",
            &[("name", "checkout"), ("result", "used")]
        ),
        1
    );
    assert_eq!(gauge(&rm, "ripcord.bulkhead.in_use", &n), 0.0);
    assert_eq!(breaker_state(&rm, "checkout"), open_is("closed"));
    let (count, sum, _) = histogram(
        &rm,
        "ripcord.call.duration",
        &[
            ("policy", "circuit_breaker"),
            ("name", "checkout"),
            ("outcome", "failure"),
        ],
    );
    assert_eq!(count, 3);
    assert!((sum - 0.202).abs() < 1e-9, "{sum}");
    assert_eq!(counters(&rm, "ripcord.breaker.transitions").len(), 3);
}

#[test]
fn store_metrics_and_a_second_export() {
    let metrics = Metrics::new();
    let otel = Otel::new(&metrics);
    metrics.store_sync(std::time::Duration::from_millis(3), true);
    metrics.store_sync(std::time::Duration::from_millis(700), false);
    metrics.set_store_degraded(true);
    let rm = otel.collect();
    let (count, sum, _) = histogram(&rm, "ripcord.store.sync.duration", &[("result", "ok")]);
    assert_eq!((count, sum), (1, 0.003));
    let (count, _, _) = histogram(&rm, "ripcord.store.sync.duration", &[("result", "error")]);
    assert_eq!(count, 1);
    assert_eq!(gauge(&rm, "ripcord.store.degraded", &[]), 1.0);

    let again = metrics.export_to(&otel.provider.meter("again"));
    assert_eq!(again, Err(MetricsError::AlreadyExported));
}
