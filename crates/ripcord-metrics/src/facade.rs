//! Emit through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`), to whatever recorder the application installed
//! (`metrics-exporter-prometheus`, StatsD, …).
//!
//! The series are the ones of the Prometheus exposition — same names, same
//! label keys and values (see the [crate docs](crate#metrics)) — and are read
//! from the same per-series counters through the same mapping, so the facade
//! and [`Metrics::render`](crate::Metrics::render) agree on every counter.
//! Instrumented policies emit with no further call (see
//! [`MetricsBuilder::facade`](crate::MetricsBuilder::facade) to turn it off):
//!
//! ```
//! use ripcord::CircuitBreaker;
//! use ripcord_metrics::Metrics;
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//!
//! let recorder = DebuggingRecorder::new(); // or `PrometheusBuilder::new().install()?`
//! let snapshotter = recorder.snapshotter();
//! metrics::with_local_recorder(&recorder, || -> Result<(), ripcord::ConfigError> {
//!     let metrics = Metrics::new();
//!     let payments = metrics.breaker(CircuitBreaker::builder("payments").consecutive_failures(1))?;
//!     let _ = payments.call_sync(|| Err::<(), _>("down")); // trips
//!     let _ = payments.call_sync(|| Ok::<_, &str>(()));    // rejected
//!     Ok(())
//! })?;
//! let rejected = snapshotter.snapshot().into_vec().into_iter().find(|(k, ..)| {
//!     let key = k.key();
//!     key.name() == "ripcord_calls_total"
//!         && key.labels().any(|l| l.key() == "name" && l.value() == "payments")
//!         && key.labels().any(|l| l.key() == "outcome" && l.value() == "rejected")
//! });
//! assert!(matches!(rejected, Some((_, _, _, DebugValue::Counter(1)))));
//! # Ok::<(), ripcord::ConfigError>(())
//! ```
//!
//! # Handles and recorders
//!
//! Each policy instance (`policy` + `name`) registers the handles of its
//! fixed series with the recorder current at its **first event** and keeps
//! them: install the global recorder (`metrics::set_global_recorder`, or your
//! exporter's `install`) before the first protected call. The series whose
//! label sets appear over time (`ripcord_breaker_transitions_total`), the
//! store's series and those [`Metrics::publish_gauges`](crate::Metrics::publish_gauges)
//! sets are registered with the recorder current where the event is handled,
//! so a local recorder (`metrics::with_local_recorder`, as in the example)
//! sees them only for events delivered on its thread. The families are
//! described (help text, unit `seconds` for the histograms) at the first
//! registration.
//!
//! Cost: on the call path, a breaker outcome adds one counter increment and
//! one histogram record on cached handles (what they cost is the recorder's);
//! nothing allocates after a series' first event, except at transitions.
//!
//! # When each series is updated
//!
//! The facade has no scrape hook, so every series is pushed by the event
//! that changes it:
//!
//! | series | updated |
//! |---|---|
//! | every series of a policy instance with a fixed label set | registered at its first event (counters at 0; `ripcord_breaker_state` with `closed` = 1, the bulkhead gauges at 0) |
//! | `ripcord_calls_total{policy="circuit_breaker"}`, `ripcord_call_duration_seconds` | each outcome (incremented, duration recorded in seconds) and rejection (incremented); stale outcomes increment the counter only |
//! | `ripcord_breaker_state` | each transition: 1 for the state entered, 0 for the five others |
//! | `ripcord_breaker_transitions_total` | each transition (its own `from`/`to`/`reason` series, registered then) |
//! | `ripcord_breaker_trips_suppressed_total`, `ripcord_breaker_recovery_checks_total` | each such event |
//! | retry, timeout, fallback and hedge counters; `ripcord_calls_total` of bulkheads and rate limiters | each event of that policy instance (set to ripcord's count) |
//! | `ripcord_bulkhead_in_use`, `ripcord_bulkhead_queued` | each bulkhead event (admission, release, refusal): as of that event |
//! | `ripcord_store_sync_duration_seconds` | each [`Metrics::store_sync`](crate::Metrics::store_sync) |
//! | `ripcord_store_degraded` | each `StoreDegraded` event and [`Metrics::set_store_degraded`](crate::Metrics::set_store_degraded) |
//! | `ripcord_breaker_failure_rate`, `_slow_rate`, `_window_calls`, `_consecutive_failures`, `_half_open_permits_in_use`; the live state of watched breakers (and `name="other"` state counts); the live gauges of watched bulkheads | only by [`Metrics::publish_gauges`](crate::Metrics::publish_gauges), which reads the [watched](crate::Metrics::watch) policies now: call it on a timer, or before your exporter renders |
//!
//! Counters other than the breaker's per-call ones are set to ripcord's own
//! count ([`Counter::absolute`]) rather than incremented, so they cannot drift
//! from the Prometheus exposition. Histograms receive each observation (the
//! recorder buckets them its own way; ripcord's
//! [`duration_buckets`](crate::MetricsBuilder::duration_buckets) are not
//! passed on).

use std::sync::atomic::Ordering;
use std::time::Duration;

use ::metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, SharedString, Unit,
};
use ripcord::{Event, EventKind};

use crate::metric::{Metric, MetricKind};
use crate::metrics::Shared;
use crate::series::{outcome_index, Body, Recorded, Series, OUTCOMES};
use crate::snapshot::{needs_live, Sample, Snapshot};
use crate::Metrics;

/// The metadata of every handle ripcord registers.
static METADATA: Metadata<'static> = Metadata::new("ripcord", Level::INFO, Some(module_path!()));

/// One registered facade handle.
enum Handle {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

impl Handle {
    fn register(metric: Metric, values: &[&str]) -> Handle {
        let key = key(metric, values);
        ::metrics::with_recorder(|r| match metric.kind() {
            MetricKind::Counter => Handle::Counter(r.register_counter(&key, &METADATA)),
            MetricKind::Gauge => Handle::Gauge(r.register_gauge(&key, &METADATA)),
            MetricKind::Histogram => Handle::Histogram(r.register_histogram(&key, &METADATA)),
        })
    }

    /// Sets the handle to ripcord's value (histograms are fed per observation).
    fn set(&self, sample: &Sample) {
        match (self, sample) {
            (Handle::Counter(c), Sample::Counter(v)) => c.absolute(*v),
            (Handle::Gauge(g), Sample::Gauge(v)) => g.set(*v),
            _ => {}
        }
    }
}

/// The facade key of one series.
fn key(metric: Metric, values: &[&str]) -> Key {
    let labels: Vec<Label> = metric
        .labels()
        .iter()
        .zip(values)
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect();
    Key::from_parts(metric.prometheus_name(), labels)
}

/// Sets (registering it now) every sample `visit` yields: for the rare
/// series, and those with labels that appear over time.
fn set_fresh(metric: Metric, values: &[&str], sample: &Sample) {
    match Handle::register(metric, values) {
        Handle::Histogram(_) => {}
        h => h.set(sample),
    }
}

/// The handles of one series' metrics with a fixed label set, in the order
/// [`Snapshot::visit_series`] yields their samples.
pub(crate) struct Handles {
    metrics: Vec<(Metric, Vec<Handle>)>,
}

impl Handles {
    /// Registers a handle for each sample the series has now (transitions
    /// excepted: their label sets appear over time), setting gauges to their
    /// value.
    fn register(shared: &Shared, series: &Series) -> Handles {
        shared.facade_described.call_once(describe);
        let snapshot = Snapshot::events_only(shared);
        let mut metrics = Vec::new();
        for metric in Metric::ALL {
            if metric == Metric::BreakerTransitions {
                continue;
            }
            let mut handles = Vec::new();
            snapshot.visit_series(series, metric, &mut |values, sample| {
                let h = Handle::register(metric, values);
                if let Handle::Gauge(_) = h {
                    h.set(&sample);
                }
                handles.push(h);
            });
            if !handles.is_empty() {
                metrics.push((metric, handles));
            }
        }
        Handles { metrics }
    }

    fn of(&self, metric: Metric) -> &[Handle] {
        self.metrics
            .iter()
            .find(|(m, _)| *m == metric)
            .map_or(&[], |(_, h)| h.as_slice())
    }

    /// Sets the handles of `metric` to the series' values now.
    fn push(&self, shared: &Shared, series: &Series, metric: Metric) {
        let handles = self.of(metric);
        let mut i = 0;
        Snapshot::events_only(shared).visit_series(series, metric, &mut |_, sample| {
            if let Some(h) = handles.get(i) {
                h.set(&sample);
            }
            i += 1;
        });
    }

    fn increment(&self, metric: Metric, i: usize) {
        if let Some(Handle::Counter(c)) = self.of(metric).get(i) {
            c.increment(1);
        }
    }
}

/// Describes every family to the current recorder.
fn describe() {
    ::metrics::with_recorder(|r| {
        for metric in Metric::ALL {
            let name = KeyName::from_const_str(metric.prometheus_name());
            let help = SharedString::const_str(metric.help());
            match metric.kind() {
                MetricKind::Counter => r.describe_counter(name, None, help),
                MetricKind::Gauge => r.describe_gauge(name, None, help),
                MetricKind::Histogram => r.describe_histogram(name, Some(Unit::Seconds), help),
            }
        }
    });
}

impl Shared {
    /// The series' handles, registered on its first event: called before the
    /// event is counted, so that the facade sees every event ripcord counts.
    #[inline]
    pub(crate) fn facade_handles<'s>(&self, series: &'s Series) -> Option<&'s Handles> {
        self.facade.then(|| {
            series
                .facade
                .get_or_init(|| Handles::register(self, series))
        })
    }

    /// Pushes what `event` (already counted, with `recorded` the result)
    /// changed in `series`.
    pub(crate) fn facade_push(
        &self,
        handles: &Handles,
        series: &Series,
        event: &Event,
        recorded: Recorded,
    ) {
        match (&series.body, &event.kind) {
            (Body::Breaker(_), _) => match (recorded, &event.kind) {
                (Recorded::Call { outcome, nanos }, _) => {
                    handles.increment(Metric::Calls, outcome);
                    if let Some(Handle::Histogram(h)) =
                        handles.of(Metric::CallDuration).get(outcome)
                    {
                        h.record(nanos as f64 / 1e9);
                    }
                }
                (_, EventKind::Rejected { .. }) => handles.increment(Metric::Calls, OUTCOMES.len()),
                (_, EventKind::StaleOutcome { outcome, .. }) => {
                    handles.increment(Metric::Calls, outcome_index(*outcome, false));
                }
                (_, EventKind::Transition { .. }) => {
                    handles.push(self, series, Metric::BreakerState);
                    Snapshot::events_only(self).visit_series(
                        series,
                        Metric::BreakerTransitions,
                        &mut |values, sample| {
                            set_fresh(Metric::BreakerTransitions, values, &sample)
                        },
                    );
                }
                (_, EventKind::TripSuppressed { .. }) => {
                    handles.push(self, series, Metric::BreakerTripsSuppressed);
                }
                (_, EventKind::RecoveryCheck { .. }) => {
                    handles.push(self, series, Metric::BreakerRecoveryChecks);
                }
                _ => {}
            },
            // The other policies have a few counters and gauges each: set
            // them all.
            _ => {
                for (metric, _) in &handles.metrics {
                    handles.push(self, series, *metric);
                }
            }
        }
    }

    /// Reports the store's degraded flag to the facade.
    pub(crate) fn facade_store_degraded(&self, degraded: bool) {
        if self.facade {
            set_fresh(
                Metric::StoreDegraded,
                &[],
                &Sample::Gauge(if degraded { 1.0 } else { 0.0 }),
            );
        }
    }

    /// Records one store sync round trip in the facade.
    pub(crate) fn facade_store_sync(&self, latency: Duration, ok: bool) {
        if self.facade {
            let result = if ok { "ok" } else { "error" };
            if let Handle::Histogram(h) = Handle::register(Metric::StoreSyncDuration, &[result]) {
                h.record(latency.as_secs_f64());
            }
        }
    }
}

impl Metrics {
    /// Sets the facade gauges that only a live policy knows (feature
    /// `metrics`), reading every [watched](Self::watch) breaker and bulkhead
    /// now: the breakers' state (and, for `name="other"`, the number of
    /// folded breakers per state), window failure and slow rates, window
    /// calls, consecutive failures and half-open probes in use; the
    /// bulkheads' calls in use and queued. The facade has no scrape hook:
    /// call this on a timer (or before your exporter renders) — the
    /// Prometheus exposition reads the same values at each scrape. Does
    /// nothing when the facade is [turned off](crate::MetricsBuilder::facade).
    ///
    /// ```
    /// use ripcord::CircuitBreaker;
    /// use ripcord_metrics::Metrics;
    ///
    /// let metrics = Metrics::new();
    /// let breaker = metrics.breaker(CircuitBreaker::builder("payments"))?;
    /// let _ = breaker.call_sync(|| Ok::<_, ()>(()));
    /// metrics.publish_gauges(); // e.g. every 10 s from a background task
    /// # Ok::<(), ripcord::ConfigError>(())
    /// ```
    pub fn publish_gauges(&self) {
        let shared = &self.shared;
        if !shared.facade {
            return;
        }
        shared.facade_described.call_once(describe);
        let snapshot = Snapshot::take(shared, true);
        for metric in Metric::ALL {
            if needs_live(metric) && metric != Metric::StoreDegraded {
                snapshot.visit(metric, &mut |values, sample| {
                    set_fresh(metric, values, &sample)
                });
            }
        }
        let store = &shared.store;
        if store.used.load(Ordering::Relaxed) {
            shared.facade_store_degraded(store.degraded.load(Ordering::Relaxed));
        }
    }
}
