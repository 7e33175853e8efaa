//! The series of one policy instance (one `policy` + `name` label pair): plain
//! atomics that an event updates with one or two relaxed `fetch_add`s.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use ripcord::{EventKind, Name, Outcome, PolicyKind, State, TransitionReason};

use crate::stripes::Striped;

/// The policies that have series, in exposition order.
pub(crate) const POLICIES: [PolicyKind; 7] = [
    PolicyKind::CircuitBreaker,
    PolicyKind::Retry,
    PolicyKind::Timeout,
    PolicyKind::Bulkhead,
    PolicyKind::RateLimiter,
    PolicyKind::Fallback,
    PolicyKind::Hedge,
];

/// Index of a policy in [`POLICIES`]; `None` for a policy this crate does not
/// know yet (its events are ignored).
#[inline]
pub(crate) fn policy_index(p: PolicyKind) -> Option<usize> {
    Some(match p {
        PolicyKind::CircuitBreaker => 0,
        PolicyKind::Retry => 1,
        PolicyKind::Timeout => 2,
        PolicyKind::Bulkhead => 3,
        PolicyKind::RateLimiter => 4,
        PolicyKind::Fallback => 5,
        PolicyKind::Hedge => 6,
        _ => return None,
    })
}

/// The `outcome` label values of recorded (not rejected) calls, by index.
pub(crate) const OUTCOMES: [&str; 4] = ["success", "slow", "failure", "ignored"];

/// The `outcome` label of a refused call.
pub(crate) const REJECTED: &str = "rejected";

#[inline]
pub(crate) fn outcome_index(outcome: Outcome, slow: bool) -> usize {
    match outcome {
        Outcome::Success if slow => 1,
        Outcome::Success => 0,
        Outcome::Failure => 2,
        Outcome::Ignored => 3,
    }
}

pub(crate) fn state_index(s: State) -> usize {
    match s {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
        State::ForcedOpen => 3,
        State::Disabled => 4,
        State::MetricsOnly => 5,
    }
}

/// The `reason` label of a transition.
pub(crate) fn reason_label(r: TransitionReason) -> &'static str {
    match r {
        TransitionReason::FailureRate => "failure_rate",
        TransitionReason::SlowCallRate => "slow_call_rate",
        TransitionReason::ConsecutiveFailures => "consecutive_failures",
        TransitionReason::CustomRule => "custom_rule",
        TransitionReason::OpenElapsed => "open_elapsed",
        TransitionReason::RecoveryCheckPassed => "recovery_check_passed",
        TransitionReason::ProbesSucceeded => "probes_succeeded",
        TransitionReason::ProbeFailed => "probe_failed",
        TransitionReason::HalfOpenTimeout => "half_open_timeout",
        TransitionReason::Manual => "manual",
        _ => "other",
    }
}

#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// A fixed-bucket histogram: one counter per bucket (not cumulative) and the
/// sum in nanoseconds. The count is the sum of the buckets.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A duration histogram read at one moment (see [`Metrics::collect`](crate::Metrics::collect)).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample {
    pub(crate) cumulative: Vec<u64>,
    pub(crate) sum_seconds: f64,
}

impl HistogramSample {
    /// Cumulative counts: one per upper bound of
    /// [`Metrics::duration_buckets`](crate::Metrics::duration_buckets) (calls
    /// that took at most that long), then the `+Inf` bucket (every call).
    pub fn cumulative_counts(&self) -> &[u64] {
        &self.cumulative
    }

    /// The sum of the observed durations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_seconds
    }

    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

impl Histogram {
    pub(crate) fn new(bounds: usize) -> Self {
        Histogram {
            buckets: (0..=bounds).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation. `bounds` are the upper bounds in nanoseconds,
    /// ascending; an observation equal to a bound falls in that bound's bucket
    /// (Prometheus `le`).
    #[inline]
    pub(crate) fn observe(&self, bounds: &[u64], nanos: u64) {
        let i = bounds.partition_point(|&b| b < nanos);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSample {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Relaxed);
                total
            })
            .collect();
        HistogramSample {
            cumulative,
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// One transition counter: `(from, to, reason, count)`.
pub(crate) type TransitionCount = (State, State, TransitionReason, u64);

/// Series of one circuit breaker.
pub(crate) struct BreakerSeries {
    /// Per-call counters, striped per thread: for each outcome index
    /// ([`OUTCOMES`]) its duration buckets (not cumulative, `+Inf` last) and
    /// the sum of its durations in nanoseconds; then the rejections.
    hot: Striped,
    /// Bounds of the duration histograms.
    bounds: usize,
    /// Calls whose outcome came without a duration (stale outcomes: the
    /// breaker had moved on), by outcome index.
    pub(crate) untimed: [AtomicU64; 4],
    /// The state entered by the latest transition ([`state_index`]).
    pub(crate) state: AtomicU8,
    /// Transitions are rare: a short list behind a lock.
    pub(crate) transitions: Mutex<Vec<TransitionCount>>,
    pub(crate) trips_suppressed: AtomicU64,
    /// Recovery checks: passed, failed.
    pub(crate) recovery_checks: [AtomicU64; 2],
}

impl BreakerSeries {
    fn new(bounds: usize) -> Self {
        BreakerSeries {
            hot: Striped::new(4 * (bounds + 2) + 1),
            bounds,
            untimed: Default::default(),
            state: AtomicU8::new(0),
            transitions: Mutex::new(Vec::new()),
            trips_suppressed: AtomicU64::new(0),
            recovery_checks: Default::default(),
        }
    }

    /// First counter of outcome `i`'s histogram.
    fn base(&self, i: usize) -> usize {
        i * (self.bounds + 2)
    }

    fn rejected_index(&self) -> usize {
        4 * (self.bounds + 2)
    }

    /// Counts a call of outcome `i` that took `nanos`.
    #[inline]
    fn observe(&self, bounds: &[u64], i: usize, nanos: u64) {
        let bucket = bounds.partition_point(|&b| b < nanos);
        let base = self.base(i);
        let stripe = self.hot.stripe();
        stripe.add(base + bucket, 1);
        if nanos != 0 {
            stripe.add(base + self.bounds + 1, nanos);
        }
    }

    #[inline]
    fn reject(&self) {
        self.hot.stripe().add(self.rejected_index(), 1);
    }

    /// The duration histogram of outcome `i`.
    pub(crate) fn durations(&self, i: usize) -> HistogramSample {
        let base = self.base(i);
        let mut total = 0;
        let cumulative = (0..=self.bounds)
            .map(|b| {
                total += self.hot.get(base + b);
                total
            })
            .collect();
        HistogramSample {
            cumulative,
            sum_seconds: self.hot.get(base + self.bounds + 1) as f64 / 1e9,
        }
    }

    /// Calls by outcome index, rejected last.
    pub(crate) fn calls(&self) -> [u64; 5] {
        let mut out = [0; 5];
        for (i, o) in out.iter_mut().take(4).enumerate() {
            let base = self.base(i);
            let timed: u64 = (0..=self.bounds).map(|b| self.hot.get(base + b)).sum();
            *o = timed + self.untimed[i].load(Relaxed);
        }
        out[4] = self.hot.get(self.rejected_index());
        out
    }

    pub(crate) fn transitions(&self) -> Vec<TransitionCount> {
        self.transitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Series of one retry policy.
#[derive(Default)]
pub(crate) struct RetrySeries {
    pub(crate) attempts: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) budget_exhausted: AtomicU64,
    pub(crate) exhausted: AtomicU64,
}

/// Series of one bulkhead.
#[derive(Default)]
pub(crate) struct BulkheadSeries {
    pub(crate) rejected: AtomicU64,
    pub(crate) in_use: AtomicU64,
    pub(crate) queued: AtomicU64,
}

/// Series of one fallback chain.
#[derive(Default)]
pub(crate) struct FallbackSeries {
    pub(crate) used: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// Series of one hedge policy.
#[derive(Default)]
pub(crate) struct HedgeSeries {
    pub(crate) started: AtomicU64,
    /// Wins: the original attempt, a hedge.
    pub(crate) wins: [AtomicU64; 2],
}

/// The counters of one policy instance, by policy.
pub(crate) enum Body {
    Breaker(Box<BreakerSeries>),
    Retry(RetrySeries),
    Timeout(AtomicU64),
    Bulkhead(BulkheadSeries),
    RateLimiter(AtomicU64),
    Fallback(FallbackSeries),
    Hedge(HedgeSeries),
}

/// What [`Series::record`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Counted (or not of interest).
    Counted,
    /// A breaker call's outcome (index in [`OUTCOMES`]) and duration, for
    /// exporters that record durations themselves.
    Call { outcome: usize, nanos: u64 },
    /// The shared state store became degraded (or recovered).
    StoreDegraded(bool),
}

/// Everything exported for one `(policy, name)`.
pub(crate) struct Series {
    /// Index in [`POLICIES`].
    pub(crate) policy: usize,
    /// The `name` label: the policy's name, or `other` for the overflow series.
    pub(crate) name: Name,
    /// Whether this is the overflow series of names past the cap.
    pub(crate) folded: bool,
    pub(crate) body: Body,
    /// OpenTelemetry attributes of the duration histogram, by outcome index,
    /// built on first use.
    #[cfg(feature = "opentelemetry")]
    pub(crate) otel_attributes: std::sync::OnceLock<[Vec<opentelemetry::KeyValue>; 4]>,
    /// The `metrics` facade handles of this series, registered at its first
    /// event.
    #[cfg(feature = "metrics")]
    pub(crate) facade: std::sync::OnceLock<crate::facade::Handles>,
}

impl Series {
    pub(crate) fn new(policy: usize, name: Name, folded: bool, bounds: usize) -> Self {
        let body = match POLICIES[policy] {
            PolicyKind::CircuitBreaker => Body::Breaker(Box::new(BreakerSeries::new(bounds))),
            PolicyKind::Retry => Body::Retry(RetrySeries::default()),
            PolicyKind::Timeout => Body::Timeout(AtomicU64::new(0)),
            PolicyKind::Bulkhead => Body::Bulkhead(BulkheadSeries::default()),
            PolicyKind::RateLimiter => Body::RateLimiter(AtomicU64::new(0)),
            PolicyKind::Fallback => Body::Fallback(FallbackSeries::default()),
            _ => Body::Hedge(HedgeSeries::default()),
        };
        Series {
            policy,
            name,
            folded,
            body,
            #[cfg(feature = "opentelemetry")]
            otel_attributes: std::sync::OnceLock::new(),
            #[cfg(feature = "metrics")]
            facade: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn policy(&self) -> PolicyKind {
        POLICIES[self.policy]
    }

    /// Applies one event; says what else the event asks for.
    #[inline]
    pub(crate) fn record(&self, kind: &EventKind, bounds: &[u64]) -> Recorded {
        match (&self.body, kind) {
            (
                Body::Breaker(b),
                EventKind::Outcome {
                    outcome,
                    duration,
                    slow,
                    ..
                },
            ) => {
                let i = outcome_index(*outcome, *slow);
                let n = nanos(*duration);
                b.observe(bounds, i, n);
                return Recorded::Call {
                    outcome: i,
                    nanos: n,
                };
            }
            (Body::Breaker(b), EventKind::Rejected { .. }) => {
                b.reject();
            }
            (Body::Breaker(b), EventKind::StaleOutcome { outcome, .. }) => {
                b.untimed[outcome_index(*outcome, false)].fetch_add(1, Relaxed);
            }
            (Body::Breaker(b), EventKind::Transition { from, to, reason }) => {
                b.state.store(state_index(*to) as u8, Relaxed);
                let mut list = b.transitions.lock().unwrap_or_else(|e| e.into_inner());
                match list
                    .iter_mut()
                    .find(|(f, t, r, _)| f == from && t == to && r == reason)
                {
                    Some(entry) => entry.3 += 1,
                    None => list.push((*from, *to, *reason, 1)),
                }
            }
            (Body::Breaker(b), EventKind::TripSuppressed { .. }) => {
                b.trips_suppressed.fetch_add(1, Relaxed);
            }
            (Body::Breaker(b), EventKind::RecoveryCheck { passed }) => {
                b.recovery_checks[usize::from(!passed)].fetch_add(1, Relaxed);
            }
            (Body::Retry(r), EventKind::Attempt { .. }) => {
                r.attempts.fetch_add(1, Relaxed);
            }
            (Body::Retry(r), EventKind::RetryScheduled { .. }) => {
                r.retries.fetch_add(1, Relaxed);
            }
            (Body::Retry(r), EventKind::RetryBudgetExhausted) => {
                r.budget_exhausted.fetch_add(1, Relaxed);
            }
            (Body::Retry(r), EventKind::RetriesExhausted { .. }) => {
                r.exhausted.fetch_add(1, Relaxed);
            }
            (Body::Timeout(t), EventKind::TimedOut { .. }) => {
                t.fetch_add(1, Relaxed);
            }
            (Body::Bulkhead(b), EventKind::BulkheadFull { .. }) => {
                b.rejected.fetch_add(1, Relaxed);
            }
            (Body::Bulkhead(b), EventKind::BulkheadAcquired { in_use, queued, .. }) => {
                b.in_use.store(u64::from(*in_use), Relaxed);
                b.queued.store(u64::from(*queued), Relaxed);
            }
            (Body::Bulkhead(b), EventKind::BulkheadReleased { in_use }) => {
                b.in_use.store(u64::from(*in_use), Relaxed);
            }
            (Body::RateLimiter(r), EventKind::RateLimited { .. }) => {
                r.fetch_add(1, Relaxed);
            }
            (Body::Fallback(f), EventKind::FallbackUsed { .. }) => {
                f.used.fetch_add(1, Relaxed);
            }
            (Body::Fallback(f), EventKind::FallbackFailed) => {
                f.failed.fetch_add(1, Relaxed);
            }
            (Body::Hedge(h), EventKind::HedgeStarted { .. }) => {
                h.started.fetch_add(1, Relaxed);
            }
            (Body::Hedge(h), EventKind::HedgeWon { attempt }) => {
                h.wins[usize::from(*attempt != 0)].fetch_add(1, Relaxed);
            }
            (_, EventKind::StoreDegraded { degraded, .. }) => {
                return Recorded::StoreDegraded(*degraded);
            }
            _ => {}
        }
        Recorded::Counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_le() {
        let h = Histogram::new(3);
        let bounds = [10, 20, 30];
        for n in [0, 10, 11, 20, 30, 31, 1000] {
            h.observe(&bounds, n);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![2, 4, 5, 7]);
        assert_eq!(s.count(), 7);
        assert!((s.sum_seconds - 1102e-9).abs() < 1e-15);
    }

    #[test]
    fn breaker_durations_and_calls() {
        let b = BreakerSeries::new(3);
        let bounds = [10, 20, 30];
        b.observe(&bounds, 0, 5);
        b.observe(&bounds, 0, 25);
        b.observe(&bounds, 2, 100);
        b.reject();
        b.untimed[3].fetch_add(1, Relaxed);
        assert_eq!(b.calls(), [2, 0, 1, 1, 1]);
        assert_eq!(b.durations(0).cumulative_counts(), [1, 1, 2, 2]);
        assert_eq!(b.durations(2).cumulative_counts(), [0, 0, 0, 1]);
        assert!((b.durations(0).sum_seconds() - 30e-9).abs() < 1e-18);
    }

    #[test]
    fn every_policy_has_an_index() {
        for (i, p) in POLICIES.iter().enumerate() {
            assert_eq!(policy_index(*p), Some(i));
            assert!(matches!(
                (Series::new(i, Name::new("x"), false, 1).policy(), p),
                (a, b) if a == *b
            ));
        }
    }
}
