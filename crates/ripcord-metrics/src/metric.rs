//! The metric names, their labels and what they mean: one list that the
//! Prometheus and OpenTelemetry exporters (and the docs) are built from.

/// What kind of instrument a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// A monotonic count (Prometheus `counter`, OpenTelemetry observable counter).
    Counter,
    /// A value that goes up and down (Prometheus `gauge`, OpenTelemetry observable gauge).
    Gauge,
    /// A distribution over fixed buckets (Prometheus `histogram`, OpenTelemetry histogram).
    Histogram,
}

impl MetricKind {
    /// The Prometheus `# TYPE` keyword.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// Every metric ripcord exports.
///
/// The OpenTelemetry name is the Prometheus name with its `_total` or
/// `_seconds` suffix dropped and its namespace separators written as dots, and
/// units are chosen so that an OpenTelemetry → Prometheus bridge turns it back
/// into the Prometheus name: `ripcord.calls` (unit `{call}`) becomes
/// `ripcord_calls_total`, `ripcord.call.duration` (unit `s`) becomes
/// `ripcord_call_duration_seconds`. Labels (OpenTelemetry attributes) have the
/// same keys and values in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Metric {
    /// `ripcord_calls_total{policy,name,outcome}`.
    Calls,
    /// `ripcord_call_duration_seconds{policy,name,outcome}`.
    CallDuration,
    /// `ripcord_breaker_state{name,state}`.
    BreakerState,
    /// `ripcord_breaker_transitions_total{name,from,to,reason}`.
    BreakerTransitions,
    /// `ripcord_breaker_failure_rate{name}`.
    BreakerFailureRate,
    /// `ripcord_breaker_slow_rate{name}`.
    BreakerSlowRate,
    /// `ripcord_breaker_window_calls{name}`.
    BreakerWindowCalls,
    /// `ripcord_breaker_consecutive_failures{name}`.
    BreakerConsecutiveFailures,
    /// `ripcord_breaker_half_open_permits_in_use{name}`.
    BreakerHalfOpenPermitsInUse,
    /// `ripcord_breaker_trips_suppressed_total{name}`.
    BreakerTripsSuppressed,
    /// `ripcord_breaker_recovery_checks_total{name,result}`.
    BreakerRecoveryChecks,
    /// `ripcord_retry_attempts_total{name}`.
    RetryAttempts,
    /// `ripcord_retries_total{name}`.
    Retries,
    /// `ripcord_retry_budget_exhausted_total{name}`.
    RetryBudgetExhausted,
    /// `ripcord_retries_exhausted_total{name}`.
    RetriesExhausted,
    /// `ripcord_timeouts_total{name}`.
    Timeouts,
    /// `ripcord_bulkhead_in_use{name}`.
    BulkheadInUse,
    /// `ripcord_bulkhead_queued{name}`.
    BulkheadQueued,
    /// `ripcord_fallbacks_total{name,result}`.
    Fallbacks,
    /// `ripcord_hedges_total{name}`.
    Hedges,
    /// `ripcord_hedge_wins_total{name,winner}`.
    HedgeWins,
    /// `ripcord_store_sync_duration_seconds{result}`.
    StoreSyncDuration,
    /// `ripcord_store_degraded`.
    StoreDegraded,
}

impl Metric {
    /// Every metric, in the order the Prometheus exposition lists them.
    pub const ALL: [Metric; 23] = [
        Metric::Calls,
        Metric::CallDuration,
        Metric::BreakerState,
        Metric::BreakerTransitions,
        Metric::BreakerFailureRate,
        Metric::BreakerSlowRate,
        Metric::BreakerWindowCalls,
        Metric::BreakerConsecutiveFailures,
        Metric::BreakerHalfOpenPermitsInUse,
        Metric::BreakerTripsSuppressed,
        Metric::BreakerRecoveryChecks,
        Metric::RetryAttempts,
        Metric::Retries,
        Metric::RetryBudgetExhausted,
        Metric::RetriesExhausted,
        Metric::Timeouts,
        Metric::BulkheadInUse,
        Metric::BulkheadQueued,
        Metric::Fallbacks,
        Metric::Hedges,
        Metric::HedgeWins,
        Metric::StoreSyncDuration,
        Metric::StoreDegraded,
    ];

    /// The Prometheus metric family name.
    pub const fn prometheus_name(self) -> &'static str {
        match self {
            Metric::Calls => "ripcord_calls_total",
            Metric::CallDuration => "ripcord_call_duration_seconds",
            Metric::BreakerState => "ripcord_breaker_state",
            Metric::BreakerTransitions => "ripcord_breaker_transitions_total",
            Metric::BreakerFailureRate => "ripcord_breaker_failure_rate",
            Metric::BreakerSlowRate => "ripcord_breaker_slow_rate",
            Metric::BreakerWindowCalls => "ripcord_breaker_window_calls",
            Metric::BreakerConsecutiveFailures => "ripcord_breaker_consecutive_failures",
            Metric::BreakerHalfOpenPermitsInUse => "ripcord_breaker_half_open_permits_in_use",
            Metric::BreakerTripsSuppressed => "ripcord_breaker_trips_suppressed_total",
            Metric::BreakerRecoveryChecks => "ripcord_breaker_recovery_checks_total",
            Metric::RetryAttempts => "ripcord_retry_attempts_total",
            Metric::Retries => "ripcord_retries_total",
            Metric::RetryBudgetExhausted => "ripcord_retry_budget_exhausted_total",
            Metric::RetriesExhausted => "ripcord_retries_exhausted_total",
            Metric::Timeouts => "ripcord_timeouts_total",
            Metric::BulkheadInUse => "ripcord_bulkhead_in_use",
            Metric::BulkheadQueued => "ripcord_bulkhead_queued",
            Metric::Fallbacks => "ripcord_fallbacks_total",
            Metric::Hedges => "ripcord_hedges_total",
            Metric::HedgeWins => "ripcord_hedge_wins_total",
            Metric::StoreSyncDuration => "ripcord_store_sync_duration_seconds",
            Metric::StoreDegraded => "ripcord_store_degraded",
        }
    }

    /// The OpenTelemetry instrument name.
    pub const fn otel_name(self) -> &'static str {
        match self {
            Metric::Calls => "ripcord.calls",
            Metric::CallDuration => "ripcord.call.duration",
            Metric::BreakerState => "ripcord.breaker.state",
            Metric::BreakerTransitions => "ripcord.breaker.transitions",
            Metric::BreakerFailureRate => "ripcord.breaker.failure_rate",
            Metric::BreakerSlowRate => "ripcord.breaker.slow_rate",
            Metric::BreakerWindowCalls => "ripcord.breaker.window_calls",
            Metric::BreakerConsecutiveFailures => "ripcord.breaker.consecutive_failures",
            Metric::BreakerHalfOpenPermitsInUse => "ripcord.breaker.half_open.permits_in_use",
            Metric::BreakerTripsSuppressed => "ripcord.breaker.trips_suppressed",
            Metric::BreakerRecoveryChecks => "ripcord.breaker.recovery_checks",
            Metric::RetryAttempts => "ripcord.retry_attempts",
            Metric::Retries => "ripcord.retries",
            Metric::RetryBudgetExhausted => "ripcord.retry_budget_exhausted",
            Metric::RetriesExhausted => "ripcord.retries_exhausted",
            Metric::Timeouts => "ripcord.timeouts",
            Metric::BulkheadInUse => "ripcord.bulkhead.in_use",
            Metric::BulkheadQueued => "ripcord.bulkhead.queued",
            Metric::Fallbacks => "ripcord.fallbacks",
            Metric::Hedges => "ripcord.hedges",
            Metric::HedgeWins => "ripcord.hedge.wins",
            Metric::StoreSyncDuration => "ripcord.store.sync.duration",
            Metric::StoreDegraded => "ripcord.store.degraded",
        }
    }

    /// The OpenTelemetry unit (UCUM; curly braces are annotations that a
    /// Prometheus bridge drops).
    pub const fn unit(self) -> &'static str {
        match self {
            Metric::Calls => "{call}",
            Metric::CallDuration | Metric::StoreSyncDuration => "s",
            Metric::BreakerState => "{state}",
            Metric::BreakerTransitions => "{transition}",
            // No unit for rates: unit `1` would make a bridge add `_ratio`.
            Metric::BreakerFailureRate | Metric::BreakerSlowRate => "",
            Metric::BreakerWindowCalls => "{call}",
            Metric::BreakerConsecutiveFailures => "{failure}",
            Metric::BreakerHalfOpenPermitsInUse => "{permit}",
            Metric::BreakerTripsSuppressed => "{trip}",
            Metric::BreakerRecoveryChecks => "{check}",
            Metric::RetryAttempts => "{attempt}",
            Metric::Retries => "{retry}",
            Metric::RetryBudgetExhausted | Metric::RetriesExhausted => "{call}",
            Metric::Timeouts => "{timeout}",
            Metric::BulkheadInUse | Metric::BulkheadQueued => "{call}",
            Metric::Fallbacks => "{fallback}",
            Metric::Hedges => "{hedge}",
            Metric::HedgeWins => "{call}",
            Metric::StoreDegraded => "{flag}",
        }
    }

    /// What kind of instrument it is.
    pub const fn kind(self) -> MetricKind {
        match self {
            Metric::CallDuration | Metric::StoreSyncDuration => MetricKind::Histogram,
            Metric::BreakerState
            | Metric::BreakerFailureRate
            | Metric::BreakerSlowRate
            | Metric::BreakerWindowCalls
            | Metric::BreakerConsecutiveFailures
            | Metric::BreakerHalfOpenPermitsInUse
            | Metric::BulkheadInUse
            | Metric::BulkheadQueued
            | Metric::StoreDegraded => MetricKind::Gauge,
            _ => MetricKind::Counter,
        }
    }

    /// Its label keys (OpenTelemetry attribute keys), in exposition order.
    pub const fn labels(self) -> &'static [&'static str] {
        match self {
            Metric::Calls | Metric::CallDuration => &["policy", "name", "outcome"],
            Metric::BreakerState => &["name", "state"],
            Metric::BreakerTransitions => &["name", "from", "to", "reason"],
            Metric::BreakerRecoveryChecks | Metric::Fallbacks => &["name", "result"],
            Metric::HedgeWins => &["name", "winner"],
            Metric::StoreSyncDuration => &["result"],
            Metric::StoreDegraded => &[],
            _ => &["name"],
        }
    }

    /// A one-line description (the Prometheus `# HELP`, the OpenTelemetry
    /// description).
    pub const fn help(self) -> &'static str {
        match self {
            Metric::Calls => "Calls through a policy by outcome: success, slow (a success slower than the slow-call threshold), failure, ignored, or rejected (refused by a breaker, bulkhead or rate limiter).",
            Metric::CallDuration => "Duration of calls through a circuit breaker, by outcome, as measured on the breaker's clock.",
            Metric::BreakerState => "Circuit breaker state: 1 for the current state, 0 for the others (for name=\"other\": the number of breakers in each state).",
            Metric::BreakerTransitions => "Circuit breaker state transitions, by from/to state and reason.",
            Metric::BreakerFailureRate => "Failure rate of the breaker's current window (0 to 1), computed at scrape time.",
            Metric::BreakerSlowRate => "Slow-call rate of the breaker's current window (0 to 1), computed at scrape time.",
            Metric::BreakerWindowCalls => "Calls counted in the breaker's current window (rate rules need minimum_calls).",
            Metric::BreakerConsecutiveFailures => "Failures in a row recorded by the breaker while closed.",
            Metric::BreakerHalfOpenPermitsInUse => "Half-open probe calls admitted and still running.",
            Metric::BreakerTripsSuppressed => "Trips that the registry's cap on open breakers prevented (the breaker stayed closed).",
            Metric::BreakerRecoveryChecks => "Runs of the breaker's active recovery check while open, by result.",
            Metric::RetryAttempts => "Attempts started by a retry policy (first attempts included).",
            Metric::Retries => "Retries scheduled by a retry policy.",
            Metric::RetryBudgetExhausted => "Retries a retry policy wanted but its retry budget refused.",
            Metric::RetriesExhausted => "Calls whose retry policy ran out of attempts or time.",
            Metric::Timeouts => "Calls cancelled by a timeout policy at their deadline.",
            Metric::BulkheadInUse => "Calls running inside a bulkhead (read at scrape time from watched bulkheads, else as of its latest event).",
            Metric::BulkheadQueued => "Calls waiting for a bulkhead slot (read at scrape time from watched bulkheads, else as of its latest admission).",
            Metric::Fallbacks => "Fallback chains run: used (a fallback answered) or failed (every fallback failed).",
            Metric::Hedges => "Hedged (extra) attempts started.",
            Metric::HedgeWins => "Hedged calls by winning attempt: original or hedge.",
            Metric::StoreSyncDuration => "Duration of the shared state store's sync round trips, by result.",
            Metric::StoreDegraded => "1 while the shared state store is unreachable or slow and breakers decide on local data only.",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.prometheus_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        for m in Metric::ALL {
            let p = m.prometheus_name();
            assert!(p.starts_with("ripcord_"), "{p}");
            assert!(p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
            match m.kind() {
                MetricKind::Counter => assert!(p.ends_with("_total"), "{p}"),
                MetricKind::Histogram => assert!(p.ends_with("_seconds"), "{p}"),
                MetricKind::Gauge => assert!(!p.ends_with("_total"), "{p}"),
            }
            // The OTel name maps back to the Prometheus one.
            let suffix = match m.kind() {
                MetricKind::Counter => "_total",
                MetricKind::Histogram => "_seconds",
                MetricKind::Gauge => "",
            };
            assert_eq!(format!("{}{suffix}", m.otel_name().replace('.', "_")), p);
        }
    }
}
