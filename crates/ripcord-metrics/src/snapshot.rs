//! One read of every series, walked metric by metric: what both exporters
//! (Prometheus text, OpenTelemetry observers) are built on, so that they can
//! never disagree.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use ripcord::{CircuitBreaker, Name, PolicyKind, State};

use crate::metric::Metric;
use crate::metrics::Shared;
use crate::series::{
    policy_index, reason_label, state_index, Body, HistogramSample, Series, OUTCOMES, REJECTED,
};

/// The value of one series (see [`Metrics::collect`](crate::Metrics::collect)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Sample {
    /// A counter's total.
    Counter(u64),
    /// A gauge's value.
    Gauge(f64),
    /// A duration histogram.
    Histogram(HistogramSample),
}

/// What a watched breaker says at scrape time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Live {
    state: State,
    failure_rate: f64,
    slow_rate: f64,
    window_calls: u64,
    consecutive_failures: u32,
    probes: u32,
}

impl Live {
    fn of(b: &CircuitBreaker) -> Live {
        let stats = b.stats();
        Live {
            state: b.state(),
            failure_rate: stats.failure_rate(),
            slow_rate: stats.slow_rate(),
            window_calls: stats.calls(),
            consecutive_failures: b.consecutive_failures(),
            probes: b.probes_in_flight(),
        }
    }
}

/// Every series and every watched breaker, read once.
pub(crate) struct Snapshot<'a> {
    shared: &'a Shared,
    series: Vec<Arc<Series>>,
    /// Watched breakers with series of their own, by name.
    live: HashMap<Name, Live>,
    /// Watched breakers folded into `other`, counted by state.
    other_states: Option<[u64; 6]>,
    /// Watched bulkheads with series of their own: in use, queued.
    bulkheads: HashMap<Name, (u32, u32)>,
}

impl<'a> Snapshot<'a> {
    /// Reads every series, and every watched policy when `live_too` (the
    /// gauges that need them: see [`needs_live`]).
    pub(crate) fn take(shared: &'a Shared, live_too: bool) -> Self {
        let breaker = policy_index(PolicyKind::CircuitBreaker).unwrap_or(0);
        let bulkhead = policy_index(PolicyKind::Bulkhead).unwrap_or(0);
        let mut live = HashMap::new();
        let mut other_states: Option<[u64; 6]> = None;
        let mut bulkheads = HashMap::new();
        if live_too {
            let watched = shared.watched.lock().unwrap_or_else(|e| e.into_inner());
            for w in watched.iter() {
                w.for_each_breaker(&mut |b| {
                    let name = Name::new(b.name());
                    let series = shared.interner.resolve(breaker, &name);
                    if series.folded {
                        other_states.get_or_insert([0; 6])[state_index(b.state())] += 1;
                    } else {
                        live.insert(name, Live::of(b));
                    }
                });
                w.for_each_bulkhead(&mut |b| {
                    let name = Name::new(b.name());
                    if !shared.interner.resolve(bulkhead, &name).folded {
                        bulkheads.insert(name, (b.in_use(), b.queued()));
                    }
                });
            }
        }
        Snapshot {
            shared,
            series: shared.interner.all(),
            live,
            other_states,
            bulkheads,
        }
    }

    /// A snapshot that reads nothing up front: no series list, no watched
    /// policy (so the gauges read from watched policies come from the series'
    /// own atomics, or are left out). For exporters that visit one series at
    /// a time on the event path; allocates nothing.
    #[cfg(feature = "metrics")]
    pub(crate) fn events_only(shared: &'a Shared) -> Self {
        Snapshot {
            shared,
            series: Vec::new(),
            live: HashMap::new(),
            other_states: None,
            bulkheads: HashMap::new(),
        }
    }

    /// Calls `f` with the label values (in [`Metric::labels`] order) and value
    /// of each sample of `metric`.
    pub(crate) fn visit(&self, metric: Metric, f: &mut dyn FnMut(&[&str], Sample)) {
        match metric {
            Metric::StoreSyncDuration => {
                let store = &self.shared.store;
                if store.used.load(Relaxed) {
                    for (i, result) in ["ok", "error"].into_iter().enumerate() {
                        f(&[result], Sample::Histogram(store.sync[i].snapshot()));
                    }
                }
                return;
            }
            Metric::StoreDegraded => {
                let store = &self.shared.store;
                if store.used.load(Relaxed) {
                    f(&[], Sample::Gauge(gauge(store.degraded.load(Relaxed))));
                }
                return;
            }
            _ => {}
        }
        for s in &self.series {
            self.visit_series(s, metric, f);
        }
    }

    /// [`visit`](Self::visit) for the samples of one series.
    pub(crate) fn visit_series(
        &self,
        s: &Series,
        metric: Metric,
        f: &mut dyn FnMut(&[&str], Sample),
    ) {
        let name = s.name.as_str();
        let policy = s.policy().as_str();
        match (&s.body, metric) {
            (Body::Breaker(b), Metric::Calls) => {
                let calls = b.calls();
                for (i, outcome) in OUTCOMES.iter().chain([&REJECTED]).enumerate() {
                    f(&[policy, name, outcome], Sample::Counter(calls[i]));
                }
            }
            (Body::Bulkhead(b), Metric::Calls) => {
                f(
                    &[policy, name, REJECTED],
                    Sample::Counter(b.rejected.load(Relaxed)),
                );
            }
            (Body::RateLimiter(r), Metric::Calls) => {
                f(&[policy, name, REJECTED], Sample::Counter(r.load(Relaxed)));
            }
            (Body::Breaker(b), Metric::CallDuration) => {
                for (i, outcome) in OUTCOMES.iter().enumerate() {
                    f(&[policy, name, outcome], Sample::Histogram(b.durations(i)));
                }
            }
            (Body::Breaker(b), Metric::BreakerState) => {
                let counts = if s.folded {
                    match self.other_states {
                        Some(c) => c,
                        None => return,
                    }
                } else {
                    let current = match self.live.get(name) {
                        Some(l) => state_index(l.state),
                        None => usize::from(b.state.load(Relaxed)),
                    };
                    let mut c = [0; 6];
                    c[current] = 1;
                    c
                };
                for (state, count) in State::ALL.iter().zip(counts) {
                    f(&[name, state.as_str()], Sample::Gauge(count as f64));
                }
            }
            (Body::Breaker(b), Metric::BreakerTransitions) => {
                let mut list = b.transitions();
                list.sort_by_key(|(from, to, reason, _)| {
                    (state_index(*from), state_index(*to), reason_label(*reason))
                });
                for (from, to, reason, n) in list {
                    f(
                        &[name, from.as_str(), to.as_str(), reason_label(reason)],
                        Sample::Counter(n),
                    );
                }
            }
            (Body::Breaker(_), m @ Metric::BreakerFailureRate)
            | (Body::Breaker(_), m @ Metric::BreakerSlowRate)
            | (Body::Breaker(_), m @ Metric::BreakerWindowCalls)
            | (Body::Breaker(_), m @ Metric::BreakerConsecutiveFailures)
            | (Body::Breaker(_), m @ Metric::BreakerHalfOpenPermitsInUse) => {
                let Some(l) = self.live.get(name).filter(|_| !s.folded) else {
                    return;
                };
                let v = match m {
                    Metric::BreakerFailureRate => l.failure_rate,
                    Metric::BreakerSlowRate => l.slow_rate,
                    Metric::BreakerWindowCalls => l.window_calls as f64,
                    Metric::BreakerConsecutiveFailures => f64::from(l.consecutive_failures),
                    _ => f64::from(l.probes),
                };
                f(&[name], Sample::Gauge(v));
            }
            (Body::Breaker(b), Metric::BreakerTripsSuppressed) => {
                f(&[name], Sample::Counter(b.trips_suppressed.load(Relaxed)));
            }
            (Body::Breaker(b), Metric::BreakerRecoveryChecks) => {
                for (i, result) in ["passed", "failed"].into_iter().enumerate() {
                    f(
                        &[name, result],
                        Sample::Counter(b.recovery_checks[i].load(Relaxed)),
                    );
                }
            }
            (Body::Retry(r), Metric::RetryAttempts) => {
                f(&[name], Sample::Counter(r.attempts.load(Relaxed)));
            }
            (Body::Retry(r), Metric::Retries) => {
                f(&[name], Sample::Counter(r.retries.load(Relaxed)));
            }
            (Body::Retry(r), Metric::RetryBudgetExhausted) => {
                f(&[name], Sample::Counter(r.budget_exhausted.load(Relaxed)));
            }
            (Body::Retry(r), Metric::RetriesExhausted) => {
                f(&[name], Sample::Counter(r.exhausted.load(Relaxed)));
            }
            (Body::Timeout(t), Metric::Timeouts) => {
                f(&[name], Sample::Counter(t.load(Relaxed)));
            }
            (Body::Bulkhead(b), Metric::BulkheadInUse) if !s.folded => {
                let v = match self.bulkheads.get(name) {
                    Some((in_use, _)) => u64::from(*in_use),
                    None => b.in_use.load(Relaxed),
                };
                f(&[name], Sample::Gauge(v as f64));
            }
            (Body::Bulkhead(b), Metric::BulkheadQueued) if !s.folded => {
                let v = match self.bulkheads.get(name) {
                    Some((_, queued)) => u64::from(*queued),
                    None => b.queued.load(Relaxed),
                };
                f(&[name], Sample::Gauge(v as f64));
            }
            (Body::Fallback(fb), Metric::Fallbacks) => {
                f(&[name, "used"], Sample::Counter(fb.used.load(Relaxed)));
                f(&[name, "failed"], Sample::Counter(fb.failed.load(Relaxed)));
            }
            (Body::Hedge(h), Metric::Hedges) => {
                f(&[name], Sample::Counter(h.started.load(Relaxed)));
            }
            (Body::Hedge(h), Metric::HedgeWins) => {
                f(
                    &[name, "original"],
                    Sample::Counter(h.wins[0].load(Relaxed)),
                );
                f(&[name, "hedge"], Sample::Counter(h.wins[1].load(Relaxed)));
            }
            _ => {}
        }
    }
}

/// Whether `metric` reads watched policies.
#[cfg(any(feature = "opentelemetry", feature = "metrics"))]
pub(crate) fn needs_live(metric: Metric) -> bool {
    matches!(
        metric,
        Metric::BreakerState
            | Metric::BreakerFailureRate
            | Metric::BreakerSlowRate
            | Metric::BreakerWindowCalls
            | Metric::BreakerConsecutiveFailures
            | Metric::BreakerHalfOpenPermitsInUse
            | Metric::BulkheadInUse
            | Metric::BulkheadQueued
    )
}

fn gauge(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}
