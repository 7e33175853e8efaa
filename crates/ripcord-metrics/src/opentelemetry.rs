//! Export to an OpenTelemetry [`Meter`] (feature `opentelemetry`).
//!
//! [`Metrics::export_to`] registers one instrument per [`Metric`]: counters
//! and gauges as **observable** instruments whose callbacks read ripcord's own
//! atomics when the SDK collects (nothing is added to the call path), and the
//! two duration histograms as synchronous histograms, since OpenTelemetry has
//! no observable histogram: from then on, each recorded breaker outcome and
//! each store sync is also recorded into them (with attributes built once per
//! series). Names, units and attributes: see [`Metric`].
//!
//! ```
//! use opentelemetry::metrics::MeterProvider as _;
//! use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
//! use ripcord_metrics::Metrics;
//!
//! let exporter = InMemoryMetricExporter::default();
//! let provider = SdkMeterProvider::builder()
//!     .with_reader(PeriodicReader::builder(exporter.clone()).build())
//!     .build();
//! let metrics = Metrics::new();
//! metrics.export_to(&provider.meter("ripcord"))?;
//! # Ok::<(), ripcord_metrics::MetricsError>(())
//! ```

use std::sync::Arc;

use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry::KeyValue;

use crate::metric::{Metric, MetricKind};
use crate::series::{Series, OUTCOMES};
use crate::snapshot::{needs_live, Sample, Snapshot};
use crate::{Metrics, MetricsError};

/// The synchronous instruments, recorded from the event path.
pub(crate) struct Histograms {
    call: Histogram<f64>,
    store_sync: Histogram<f64>,
}

impl Histograms {
    pub(crate) fn record_call(&self, series: &Series, outcome: usize, nanos: u64) {
        let attributes = series.otel_attributes.get_or_init(|| {
            std::array::from_fn(|i| {
                vec![
                    KeyValue::new("policy", series.policy().as_str()),
                    KeyValue::new("name", series.name.to_string()),
                    KeyValue::new("outcome", OUTCOMES[i]),
                ]
            })
        });
        self.call.record(seconds(nanos), &attributes[outcome]);
    }

    pub(crate) fn record_store_sync(&self, nanos: u64, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.store_sync
            .record(seconds(nanos), &[KeyValue::new("result", result)]);
    }
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

impl Metrics {
    /// Registers every metric with `meter` (feature `opentelemetry`); see the
    /// [`opentelemetry`](crate::opentelemetry) module. Once per `Metrics`: a
    /// second call returns [`MetricsError::AlreadyExported`].
    ///
    /// The observable instruments hold only a weak handle: once every clone of
    /// this `Metrics` is dropped they report nothing.
    pub fn export_to(&self, meter: &Meter) -> Result<(), MetricsError> {
        let histogram = |metric: Metric| {
            meter
                .f64_histogram(metric.otel_name())
                .with_description(metric.help())
                .with_unit(metric.unit())
                .with_boundaries(self.shared.bounds_seconds.to_vec())
                .build()
        };
        let histograms = Histograms {
            call: histogram(Metric::CallDuration),
            store_sync: histogram(Metric::StoreSyncDuration),
        };
        self.shared
            .otel
            .set(histograms)
            .map_err(|_| MetricsError::AlreadyExported)?;

        for metric in Metric::ALL {
            let shared = Arc::downgrade(&self.shared);
            let observe = move |f: &mut dyn FnMut(&[KeyValue], &Sample)| {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let snapshot = Snapshot::take(&shared, needs_live(metric));
                snapshot.visit(metric, &mut |values, value| {
                    let attributes: Vec<KeyValue> = metric
                        .labels()
                        .iter()
                        .zip(values)
                        .map(|(k, v)| KeyValue::new(*k, v.to_string()))
                        .collect();
                    f(&attributes, &value);
                });
            };
            match metric.kind() {
                MetricKind::Counter => {
                    let mut b = meter
                        .u64_observable_counter(metric.otel_name())
                        .with_description(metric.help());
                    if !metric.unit().is_empty() {
                        b = b.with_unit(metric.unit());
                    }
                    b.with_callback(move |o| {
                        observe(&mut |attributes, value| {
                            if let Sample::Counter(v) = value {
                                o.observe(*v, attributes);
                            }
                        })
                    })
                    .build();
                }
                MetricKind::Gauge => {
                    let mut b = meter
                        .f64_observable_gauge(metric.otel_name())
                        .with_description(metric.help());
                    if !metric.unit().is_empty() {
                        b = b.with_unit(metric.unit());
                    }
                    b.with_callback(move |o| {
                        observe(&mut |attributes, value| {
                            if let Sample::Gauge(v) = value {
                                o.observe(*v, attributes);
                            }
                        })
                    })
                    .build();
                }
                MetricKind::Histogram => {}
            }
        }
        Ok(())
    }
}
