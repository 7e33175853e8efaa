//! # ripcord-metrics
//!
//! Prometheus, OpenTelemetry and `tracing` for every ripcord policy, built on
//! the policies' [events](ripcord::event): attach a [`Metrics`] to a policy
//! builder (or a registry template) and every call, rejection and transition
//! is counted, with a few nanoseconds and no lock added per call.
//!
//! ```
//! use ripcord::{CircuitBreaker, ManualClock, Registry};
//! use ripcord_metrics::Metrics;
//!
//! let metrics = Metrics::new();
//!
//! // One breaker: instrument, build and watch it.
//! let clock = ManualClock::new();
//! let payments = metrics.breaker(
//!     CircuitBreaker::builder("payments").consecutive_failures(2).clock(clock.clone()),
//! )?;
//! let _ = payments.call_sync(|| Err::<(), _>("down"));
//! let _ = payments.call_sync(|| Err::<(), _>("down")); // trips
//! let _ = payments.call_sync(|| Ok::<_, &str>(()));    // rejected
//!
//! // A registry of breakers, one per key, all exported: one line.
//! let per_host: Registry<String> =
//!     metrics.registry(CircuitBreaker::builder("template"), |r| r.max_keys(10_000))?;
//! let _ = per_host.get(&"api.example.com".to_string())?.call_sync(|| Ok::<_, ()>(()));
//!
//! # #[cfg(feature = "prometheus")] {
//! let text = metrics.render(); // Prometheus text exposition
//! for line in [
//!     r#"ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="failure"} 2"#,
//!     r#"ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="rejected"} 1"#,
//!     r#"ripcord_breaker_state{name="payments",state="open"} 1"#,
//!     r#"ripcord_breaker_transitions_total{name="payments",from="closed",to="open",reason="consecutive_failures"} 1"#,
//!     r#"ripcord_calls_total{policy="circuit_breaker",name="api.example.com",outcome="success"} 1"#,
//! ] {
//!     assert!(text.lines().any(|l| l == line), "{line}");
//! }
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Metrics
//!
//! Every metric, with its labels. The OpenTelemetry instrument has the same
//! attributes; its name drops the `_total` / `_seconds` suffix and writes
//! namespace separators as dots (see [`Metric`]).
//!
//! | Prometheus | OpenTelemetry | type | labels | from |
//! |---|---|---|---|---|
//! | `ripcord_calls_total` | `ripcord.calls` | counter | `policy`, `name`, `outcome` | breaker outcomes (`success`, `slow`, `failure`, `ignored`) and rejections (`rejected`) by a breaker, bulkhead or rate limiter |
//! | `ripcord_call_duration_seconds` | `ripcord.call.duration` | histogram | `policy`, `name`, `outcome` | breaker outcomes, on the breaker's clock |
//! | `ripcord_breaker_state` | `ripcord.breaker.state` | gauge | `name`, `state` | 1 for the current state, 0 for the five others |
//! | `ripcord_breaker_transitions_total` | `ripcord.breaker.transitions` | counter | `name`, `from`, `to`, `reason` | transitions |
//! | `ripcord_breaker_failure_rate` | `ripcord.breaker.failure_rate` | gauge | `name` | the window, at scrape time (watched breakers) |
//! | `ripcord_breaker_slow_rate` | `ripcord.breaker.slow_rate` | gauge | `name` | the window, at scrape time (watched breakers) |
//! | `ripcord_breaker_window_calls` | `ripcord.breaker.window_calls` | gauge | `name` | the window, at scrape time (watched breakers) |
//! | `ripcord_breaker_consecutive_failures` | `ripcord.breaker.consecutive_failures` | gauge | `name` | at scrape time (watched breakers) |
//! | `ripcord_breaker_half_open_permits_in_use` | `ripcord.breaker.half_open.permits_in_use` | gauge | `name` | probes running, at scrape time (watched breakers) |
//! | `ripcord_breaker_trips_suppressed_total` | `ripcord.breaker.trips_suppressed` | counter | `name` | trips a registry's open cap prevented |
//! | `ripcord_breaker_recovery_checks_total` | `ripcord.breaker.recovery_checks` | counter | `name`, `result` (`passed`, `failed`) | active recovery checks |
//! | `ripcord_retry_attempts_total` | `ripcord.retry_attempts` | counter | `name` | attempts, first ones included |
//! | `ripcord_retries_total` | `ripcord.retries` | counter | `name` | retries scheduled |
//! | `ripcord_retry_budget_exhausted_total` | `ripcord.retry_budget_exhausted` | counter | `name` | retries the budget refused |
//! | `ripcord_retries_exhausted_total` | `ripcord.retries_exhausted` | counter | `name` | calls out of attempts or time |
//! | `ripcord_timeouts_total` | `ripcord.timeouts` | counter | `name` | calls cancelled at their deadline |
//! | `ripcord_bulkhead_in_use` | `ripcord.bulkhead.in_use` | gauge | `name` | calls running: at scrape time (watched bulkheads), else as of the latest bulkhead event |
//! | `ripcord_bulkhead_queued` | `ripcord.bulkhead.queued` | gauge | `name` | calls waiting: at scrape time (watched bulkheads), else as of the latest admission |
//! | `ripcord_fallbacks_total` | `ripcord.fallbacks` | counter | `name`, `result` (`used`, `failed`) | fallback chains |
//! | `ripcord_hedges_total` | `ripcord.hedges` | counter | `name` | hedged attempts started |
//! | `ripcord_hedge_wins_total` | `ripcord.hedge.wins` | counter | `name`, `winner` (`original`, `hedge`) | hedged calls |
//! | `ripcord_store_sync_duration_seconds` | `ripcord.store.sync.duration` | histogram | `result` (`ok`, `error`) | [`Metrics::store_sync`] |
//! | `ripcord_store_degraded` | `ripcord.store.degraded` | gauge | — | [`StoreDegraded`](ripcord::EventKind::StoreDegraded) events, [`Metrics::set_store_degraded`] |
//!
//! Label values: `policy` is [`PolicyKind::as_str`](ripcord::PolicyKind::as_str)
//! (`circuit_breaker`, `retry`, `timeout`, `bulkhead`, `rate_limiter`,
//! `fallback`, `hedge`); `state`, `from` and `to` are
//! [`State::as_str`](ripcord::State::as_str) (`closed`, `open`, `half_open`,
//! `forced_open`, `disabled`, `metrics_only`); `reason` is the
//! [`TransitionReason`](ripcord::TransitionReason) in snake case
//! (`failure_rate`, `slow_call_rate`, `consecutive_failures`, `custom_rule`,
//! `open_elapsed`, `recovery_check_passed`, `probes_succeeded`,
//! `probe_failed`, `half_open_timeout`, `manual`).
//!
//! Outcomes are exclusive, so `sum(ripcord_calls_total)` counts each call once
//! per policy: `slow` is a *success* slower than the breaker's slow-call
//! threshold (a slow failure is a `failure`). A breaker that measures no time
//! (no slow-call rule, no time window, no latency histogram) reports every
//! duration as 0. Outcomes that arrive after the breaker moved on (stale) are
//! counted in `ripcord_calls_total` but not in the histogram. Rate-limited
//! calls are `ripcord_calls_total{policy="rate_limiter",outcome="rejected"}`,
//! bulkhead refusals the same with `policy="bulkhead"`.
//!
//! Every series with a fixed label set is exported from the first event of
//! its policy instance (at 0 until it happens); transitions appear at their
//! first occurrence; the `failure_rate` family and the other scrape-time
//! gauges exist for [watched](Metrics::watch) breakers only.
//!
//! # Cardinality
//!
//! Each policy kind gets at most [`max_names`](MetricsBuilder::max_names)
//! names (default 1000) with series of their own; events of further names
//! are counted in one series per policy labelled `name="other"` (for
//! `ripcord_breaker_state`, `other` counts the watched breakers folded into it
//! per state; the other gauges are not exported for it). A name keeps its
//! series for the life of the `Metrics`, even after its breaker is evicted
//! from a registry.
//!
//! # Cost
//!
//! A listener caches the series of the name it first sees, so for a policy
//! built from an instrumented builder an event costs a name comparison and a
//! counter update; a registry's template listener serves every key and looks
//! each event's name up in a lock-free table (one hash, one comparison). A
//! breaker's per-call counters (its duration histograms and rejections) are
//! striped per thread like the breaker's own window: the first `2 × cores`
//! threads each own a stripe and update it with a plain load and store, so
//! calls on different cores never write the same cache line and need no atomic
//! read-modify-write. Rarer events (transitions, retries, timeouts…) use one
//! relaxed `fetch_add`. Gauges that need the breaker (window rates, probes in
//! use) are computed at scrape time, not per call. Nothing allocates or locks
//! per call. `benches/README.md` has the numbers: about 15 ns added to a
//! breaker call, 25 ns for a registry member.
//!
//! # Features
//!
//! - `prometheus` (default): `Metrics::render` and `Metrics::http_response`
//!   (for axum or hyper); see the `prometheus` module.
//! - `opentelemetry`: `Metrics::export_to` an OpenTelemetry `Meter`; see the
//!   `opentelemetry` module.
//! - `tracing`: call spans and events; see the `tracing` module.
//! - `metrics`: emit the same series (names and labels) through the
//!   [`metrics`](https://docs.rs/metrics) facade, to any installed recorder
//!   (`metrics-exporter-prometheus`…); see the `facade` module.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod error;
mod instrument;
mod interner;
mod metric;
mod metrics;
mod series;
mod snapshot;
mod stripes;

#[cfg(feature = "metrics")]
pub mod facade;
#[cfg(feature = "opentelemetry")]
pub mod opentelemetry;
#[cfg(feature = "prometheus")]
pub mod prometheus;
#[cfg(feature = "tracing")]
pub mod tracing;

pub use self::metrics::{Metrics, MetricsBuilder, DEFAULT_BUCKETS, DEFAULT_MAX_NAMES, MAX_BUCKETS};
pub use error::MetricsError;
pub use instrument::{Instrument, Watch};
pub use interner::OTHER;
pub use metric::{Metric, MetricKind};
pub use series::HistogramSample;
pub use snapshot::Sample;
