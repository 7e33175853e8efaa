//! [`Metrics`]: the series of every instrumented policy, fed by events.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ripcord::registry::RegistryBuilder;
use ripcord::{
    CircuitBreaker, CircuitBreakerBuilder, ConfigError, Event, EventKind, Name, PolicyKind,
    Registry,
};

use crate::instrument::{Instrument, Watch};
use crate::interner::Interner;
use crate::series::{nanos, policy_index, Histogram, Recorded, Series, POLICIES};
use crate::MetricsError;

/// Upper bounds (seconds) of the duration histograms unless configured:
/// 1 ms to 10 s.
pub const DEFAULT_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Names per policy with series of their own unless configured.
pub const DEFAULT_MAX_NAMES: usize = 1000;

/// Most buckets a duration histogram may have.
pub const MAX_BUCKETS: usize = 64;

/// The metrics of every policy instrumented with it. Cheap to clone: clones
/// share the series.
///
/// Each `(policy, name)` pair gets its own series, created on its first event
/// and updated with per-thread counter stripes or relaxed atomic adds; nothing
/// locks or allocates on the call path.
/// Breaker gauges that need the breaker itself (window failure rate, half-open
/// probes) are read at scrape time from the breakers you [`watch`](Self::watch).
///
/// ```
/// use ripcord::CircuitBreaker;
/// use ripcord_metrics::Metrics;
///
/// let metrics = Metrics::new();
/// // instrument + build + watch, in one call:
/// let breaker = metrics.breaker(CircuitBreaker::builder("payments").consecutive_failures(5))?;
/// let _ = breaker.call_sync(|| Ok::<_, ()>(()));
/// # #[cfg(feature = "prometheus")]
/// assert!(metrics
///     .render()
///     .contains(r#"ripcord_calls_total{policy="circuit_breaker",name="payments",outcome="success"} 1"#));
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Metrics {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) interner: Interner,
    /// Histogram upper bounds in nanoseconds (for recording) and seconds (for
    /// exposition).
    pub(crate) bounds_nanos: Box<[u64]>,
    pub(crate) bounds_seconds: Box<[f64]>,
    pub(crate) max_names: usize,
    pub(crate) watched: Mutex<Vec<Box<dyn Watch>>>,
    pub(crate) store: StoreSeries,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: bool,
    #[cfg(feature = "opentelemetry")]
    pub(crate) otel: OnceLock<crate::opentelemetry::Histograms>,
    /// Whether events are also emitted through the `metrics` facade.
    #[cfg(feature = "metrics")]
    pub(crate) facade: bool,
    /// The facade's families are described once, at the first registration.
    #[cfg(feature = "metrics")]
    pub(crate) facade_described: std::sync::Once,
}

/// Series of the shared state store (one per [`Metrics`]).
pub(crate) struct StoreSeries {
    /// Sync round trips: ok, error.
    pub(crate) sync: [Histogram; 2],
    pub(crate) degraded: AtomicBool,
    /// Whether a store reported anything (its series are exported from then on).
    pub(crate) used: AtomicBool,
}

/// Configures [`Metrics`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct MetricsBuilder {
    max_names: usize,
    buckets: Vec<f64>,
    #[cfg(feature = "tracing")]
    tracing: bool,
    #[cfg(feature = "metrics")]
    facade: bool,
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        MetricsBuilder {
            max_names: DEFAULT_MAX_NAMES,
            buckets: DEFAULT_BUCKETS.to_vec(),
            #[cfg(feature = "tracing")]
            tracing: true,
            #[cfg(feature = "metrics")]
            facade: true,
        }
    }
}

impl MetricsBuilder {
    /// At most `n` names per policy get series of their own (default 1000);
    /// names seen after that share the series labelled `name="other"`. A name
    /// keeps its series once it has one.
    pub fn max_names(mut self, n: usize) -> Self {
        self.max_names = n;
        self
    }

    /// Upper bounds, in seconds, of the call-duration and store-sync
    /// histograms (default [`DEFAULT_BUCKETS`]): finite, positive, strictly
    /// increasing, at most [`MAX_BUCKETS`]. A `+Inf` bucket is always added.
    pub fn duration_buckets(mut self, bounds: &[f64]) -> Self {
        self.buckets = bounds.to_vec();
        self
    }

    /// Whether instrumented policies also report to `tracing` (feature
    /// `tracing`, default on): see [`crate::tracing`].
    #[cfg(feature = "tracing")]
    pub fn tracing(mut self, on: bool) -> Self {
        self.tracing = on;
        self
    }

    /// Whether instrumented policies also emit through the `metrics` facade
    /// (feature `metrics`, default on): see [`crate::facade`].
    #[cfg(feature = "metrics")]
    pub fn facade(mut self, on: bool) -> Self {
        self.facade = on;
        self
    }

    /// Checks the configuration and builds the metrics.
    pub fn build(self) -> Result<Metrics, MetricsError> {
        if self.max_names == 0 {
            return Err(MetricsError::config("max_names", 0, "at least 1 name"));
        }
        let b = &self.buckets;
        if b.is_empty() || b.len() > MAX_BUCKETS {
            return Err(MetricsError::config(
                "duration_buckets",
                b,
                "1 to 64 upper bounds",
            ));
        }
        if !b.iter().all(|x| x.is_finite() && *x > 0.0) || !b.windows(2).all(|w| w[0] < w[1]) {
            return Err(MetricsError::config(
                "duration_buckets",
                b,
                "finite, positive, strictly increasing bounds in seconds",
            ));
        }
        let bounds_nanos: Box<[u64]> = b.iter().map(|s| (s * 1e9).round() as u64).collect();
        if !bounds_nanos.windows(2).all(|w| w[0] < w[1]) || bounds_nanos[0] == 0 {
            return Err(MetricsError::config(
                "duration_buckets",
                b,
                "bounds at least one nanosecond apart",
            ));
        }
        Ok(Metrics {
            shared: Arc::new(Shared {
                interner: Interner::new(self.max_names, b.len()),
                bounds_seconds: b.clone().into_boxed_slice(),
                bounds_nanos,
                max_names: self.max_names,
                watched: Mutex::new(Vec::new()),
                store: StoreSeries {
                    sync: [Histogram::new(b.len()), Histogram::new(b.len())],
                    degraded: AtomicBool::new(false),
                    used: AtomicBool::new(false),
                },
                #[cfg(feature = "tracing")]
                tracing: self.tracing,
                #[cfg(feature = "opentelemetry")]
                otel: OnceLock::new(),
                #[cfg(feature = "metrics")]
                facade: self.facade,
                #[cfg(feature = "metrics")]
                facade_described: std::sync::Once::new(),
            }),
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Metrics with the default configuration.
    pub fn new() -> Self {
        match MetricsBuilder::default().build() {
            Ok(m) => m,
            Err(e) => unreachable!("the default configuration is valid: {e}"),
        }
    }

    /// Starts configuring metrics.
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder::default()
    }

    /// A listener that records every event it receives, for any policy
    /// builder's `on_event` (what [`instrument`](Self::instrument) attaches).
    ///
    /// The series of the first name each listener sees (per policy) is
    /// cached in the listener, so a listener attached to one policy never
    /// looks its name up again; a listener shared by many names (a registry's
    /// template) looks each event's name up in a lock-free table. Updating a
    /// breaker's per-call counters costs a plain load and store on the
    /// calling thread's own stripe (see the crate docs' *Cost*).
    pub fn listener(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let recorder = Recorder {
            shared: self.shared.clone(),
            last: Default::default(),
        };
        move |e: &Event| recorder.record(e)
    }

    /// Adds [`listener`](Self::listener) to a policy builder, so that the
    /// policy it builds is exported.
    ///
    /// ```
    /// use ripcord::{CircuitBreaker, Fallback};
    /// use ripcord_metrics::Metrics;
    ///
    /// let metrics = Metrics::new();
    /// let breaker = metrics.instrument(CircuitBreaker::builder("payments")).build()?;
    /// let fallback = metrics
    ///     .instrument(Fallback::<u32, std::io::Error>::builder("payments").then_value(0))
    ///     .build()?;
    /// # let _ = (breaker, fallback);
    /// # Ok::<(), ripcord::ConfigError>(())
    /// ```
    pub fn instrument<B: Instrument>(&self, builder: B) -> B {
        builder.with_listener(self.listener())
    }

    /// Records one event (for events read from a policy's `subscribe()`
    /// channel, or from a policy built without [`instrument`](Self::instrument)).
    pub fn record(&self, event: &Event) {
        if let Some(p) = event_policy(&event.kind) {
            self.shared
                .interner
                .with(p, &event.name, |s| self.shared.apply(s, event));
        }
    }

    /// Reads the gauges that only a live policy knows from `target` at every
    /// scrape — a breaker's state, window failure and slow rates, window
    /// calls, consecutive failures and half-open probes in use; a bulkhead's
    /// calls in use and queued — where `target` is a [`CircuitBreaker`], a
    /// [`Bulkhead`](ripcord::Bulkhead), a [`Pipeline`](ripcord::Pipeline)
    /// (its breakers and outermost bulkhead), or a [`Registry`] of breakers or
    /// pipelines (whose members are listed at each scrape, so evicted ones
    /// disappear).
    ///
    /// Watching keeps `target` alive (a registry handle keeps the registry,
    /// not its evicted members).
    pub fn watch(&self, target: impl Watch) {
        self.shared
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(target));
    }

    /// Instruments, builds and [`watch`](Self::watch)es a circuit breaker.
    pub fn breaker(&self, builder: CircuitBreakerBuilder) -> Result<CircuitBreaker, ConfigError> {
        let breaker = self.instrument(builder).build()?;
        self.watch(breaker.clone());
        Ok(breaker)
    }

    /// A registry whose breakers, built from `template`, are all exported and
    /// watched: the one-line way to attach metrics to a [`Registry`].
    /// `configure` sets the registry's options.
    ///
    /// ```
    /// use ripcord::{CircuitBreaker, Registry};
    /// use ripcord_metrics::Metrics;
    ///
    /// let metrics = Metrics::new();
    /// let registry: Registry<String> = metrics.registry(
    ///     CircuitBreaker::builder("template").consecutive_failures(5),
    ///     |r| r.max_keys(10_000),
    /// )?;
    /// let orders = registry.get(&"orders".to_string())?;
    /// # let _ = orders;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn registry<K>(
        &self,
        template: CircuitBreakerBuilder,
        configure: impl FnOnce(RegistryBuilder<K, CircuitBreaker>) -> RegistryBuilder<K, CircuitBreaker>,
    ) -> Result<Registry<K>, ConfigError>
    where
        K: Eq + Hash + Clone + fmt::Display + Send + Sync + 'static,
    {
        let registry = configure(Registry::builder(self.instrument(template))).build()?;
        self.watch(registry.clone());
        Ok(registry)
    }

    /// Exports the sync round trips of a fleet's store (latency and errors):
    /// adds an [`on_sync`](ripcord::store::FleetBuilder::on_sync) hook that
    /// calls [`store_sync`](Self::store_sync).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use ripcord::store::{Fleet, MemoryStore};
    /// let metrics = ripcord_metrics::Metrics::new();
    /// let fleet = metrics.fleet(Fleet::builder(MemoryStore::new())).build().unwrap();
    /// # let _ = fleet;
    /// # }
    /// ```
    pub fn fleet(&self, builder: ripcord::store::FleetBuilder) -> ripcord::store::FleetBuilder {
        let m = self.clone();
        builder.on_sync(move |latency, ok| m.store_sync(latency, ok))
    }

    /// Records one sync round trip of the shared state store: how long it
    /// took, and whether it succeeded ([`fleet`](Self::fleet) wires it to a
    /// fleet's sync task); exported as
    /// `ripcord_store_sync_duration_seconds{result="ok"|"error"}`.
    pub fn store_sync(&self, latency: Duration, ok: bool) {
        let s = &self.shared.store;
        s.used.store(true, Ordering::Relaxed);
        let n = nanos(latency);
        s.sync[usize::from(!ok)].observe(&self.shared.bounds_nanos, n);
        #[cfg(feature = "opentelemetry")]
        if let Some(h) = self.shared.otel.get() {
            h.record_store_sync(n, ok);
        }
        #[cfg(feature = "metrics")]
        self.shared.facade_store_sync(latency, ok);
    }

    /// Reports whether the shared state store is degraded (unreachable or too
    /// slow, so breakers decide on local data only). For store
    /// implementations; exported as `ripcord_store_degraded` (0 or 1), and, with
    /// the `tracing` feature, a change is logged as a `tracing` event.
    ///
    /// Breakers linked to a fleet report this themselves
    /// ([`StoreDegraded`](EventKind::StoreDegraded) events), so instrumented
    /// breakers keep the flag up to date without this call.
    pub fn set_store_degraded(&self, degraded: bool) {
        self.shared.store_degraded(degraded, true);
    }

    /// Names of `policy` that have series of their own (the others share
    /// `name="other"`).
    pub fn tracked_names(&self, policy: PolicyKind) -> usize {
        policy_index(policy).map_or(0, |p| self.shared.interner.len(p))
    }

    /// The cap on names per policy.
    pub fn max_names(&self) -> usize {
        self.shared.max_names
    }

    /// The upper bounds, in seconds, of the duration histograms (the `+Inf`
    /// bucket is implied).
    pub fn duration_buckets(&self) -> &[f64] {
        &self.shared.bounds_seconds
    }

    /// Reads every series now and calls `f` with each: its metric, its label
    /// values (in [`Metric::labels`] order) and its value — what the exporters
    /// are built on, for a dashboard or an exporter of your own. Series come
    /// metric by metric, in the order of [`Metric::ALL`](crate::Metric::ALL).
    ///
    /// ```
    /// use ripcord::CircuitBreaker;
    /// use ripcord_metrics::{Metric, Metrics, Sample};
    ///
    /// let metrics = Metrics::new();
    /// let b = metrics.breaker(CircuitBreaker::builder("payments"))?;
    /// b.call_sync(|| Ok::<_, ()>(())).unwrap();
    /// let mut open = Vec::new();
    /// metrics.collect(|metric, labels, sample| {
    ///     if metric == Metric::BreakerState && labels[1] == "open" {
    ///         open.push((labels[0].to_string(), sample.clone()));
    ///     }
    /// });
    /// assert_eq!(open, [("payments".to_string(), Sample::Gauge(0.0))]);
    /// # Ok::<(), ripcord::ConfigError>(())
    /// ```
    ///
    /// [`Metric::labels`]: crate::Metric::labels
    pub fn collect(&self, mut f: impl FnMut(crate::Metric, &[&str], &crate::Sample)) {
        let snapshot = crate::snapshot::Snapshot::take(&self.shared, true);
        for metric in crate::Metric::ALL {
            snapshot.visit(metric, &mut |labels, sample| f(metric, labels, &sample));
        }
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Metrics");
        for (i, p) in POLICIES.iter().enumerate() {
            let n = self.shared.interner.len(i);
            if n > 0 {
                d.field(p.as_str(), &n);
            }
        }
        d.field("max_names", &self.shared.max_names)
            .finish_non_exhaustive()
    }
}

/// The policy index of an event, matching the hot kinds without a call.
#[inline]
fn event_policy(kind: &EventKind) -> Option<usize> {
    match kind {
        EventKind::Outcome { .. } | EventKind::Rejected { .. } => Some(0),
        other => policy_index(other.policy()),
    }
}

impl Shared {
    /// Sets the store's degraded flag; `log`: report a change to `tracing`
    /// (events from breakers are reported by the breaker's own event).
    fn store_degraded(&self, degraded: bool, log: bool) {
        let s = &self.store;
        s.used.store(true, Ordering::Relaxed);
        let was = s.degraded.swap(degraded, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.facade_store_degraded(degraded);
        #[cfg(feature = "tracing")]
        if log && self.tracing && was != degraded {
            crate::tracing::store_degraded(degraded);
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (was, log);
    }

    #[inline]
    pub(crate) fn apply(&self, series: &Series, event: &Event) {
        #[cfg(feature = "metrics")]
        let facade = self.facade_handles(series);
        let recorded = series.record(&event.kind, &self.bounds_nanos);
        #[cfg(feature = "metrics")]
        if let Some(handles) = facade {
            self.facade_push(handles, series, event, recorded);
        }
        match recorded {
            Recorded::Counted => {}
            #[cfg(feature = "opentelemetry")]
            Recorded::Call { outcome, nanos } => {
                if let Some(h) = self.otel.get() {
                    h.record_call(series, outcome, nanos);
                }
            }
            #[cfg(not(feature = "opentelemetry"))]
            Recorded::Call { .. } => {}
            Recorded::StoreDegraded(d) => self.store_degraded(d, false),
        }
        #[cfg(feature = "tracing")]
        if self.tracing {
            crate::tracing::record_with(event, self.store.degraded.load(Ordering::Relaxed));
        }
    }
}

/// The state behind a [`Metrics::listener`] closure.
struct Recorder {
    shared: Arc<Shared>,
    /// The first name seen per policy, and its series.
    last: [OnceLock<(Name, Arc<Series>)>; POLICIES.len()],
}

impl Recorder {
    #[inline]
    fn record(&self, event: &Event) {
        let Some(p) = event_policy(&event.kind) else {
            return;
        };
        if let Some((name, series)) = self.last[p].get() {
            if name.as_bytes() == event.name.as_bytes() {
                self.shared.apply(series, event);
                return;
            }
        }
        self.record_uncached(p, event);
    }

    #[cold]
    #[inline(never)]
    fn record_uncached(&self, p: usize, event: &Event) {
        let first = self.shared.interner.with(p, &event.name, |series| {
            self.shared.apply(series, event);
            self.last[p].get().is_none().then(|| series.clone())
        });
        if let Some(series) = first {
            let _ = self.last[p].set((event.name.clone(), series));
        }
    }
}
