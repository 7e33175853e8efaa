//! `tracing` for every policy (feature `tracing`): a span per protected call
//! whose fields carry the policies' decisions, and events for transitions,
//! rejections and the other decisions.
//!
//! Wrap a protected call in [`traced`] (or enter a [`call_span`] yourself).
//! Instrumented policies (see [`MetricsBuilder::tracing`]) — or any policy
//! given [`record`] as its `on_event` listener — then record, on the span
//! current when the event happens:
//!
//! | field | set when |
//! |---|---|
//! | `ripcord.rejected` = `true`, `ripcord.rejected_by` = `circuit_breaker` / `bulkhead` / `rate_limiter` | a policy refused the call |
//! | `ripcord.breaker` (name), `ripcord.breaker.outcome` (`success`, `slow`, `failure`, `ignored`, `rejected`), `ripcord.breaker.probe`, `ripcord.breaker.state` (on rejection), `ripcord.breaker.epoch` | a breaker recorded or rejected the call |
//! | `ripcord.retry.attempts`, `ripcord.retry.exhausted`, `ripcord.retry.budget_exhausted` | a retry policy started an attempt, gave up, or was refused a retry by its budget |
//! | `ripcord.timeout.timed_out` | a timeout cancelled the call |
//! | `ripcord.bulkhead.waited_ms` | a bulkhead admitted or refused the call after a wait |
//! | `ripcord.fallback` (`used` / `failed`), `ripcord.fallback.index` | a fallback chain ran |
//! | `ripcord.hedge.hedges`, `ripcord.hedge.winner` | hedged attempts started; which one won |
//! | `ripcord.store.degraded` = `true` | a breaker decided while its fleet's store was unreachable (recorded by [`Metrics`](crate::Metrics) only) |
//! | `otel.status_code` = `ERROR` | a ripcord policy stopped the call (rejection, timeout, retries or fallbacks exhausted) |
//!
//! `otel.status_code` is the field `tracing-opentelemetry` maps to the span's
//! status, so a rejected call shows as an error in the trace.
//!
//! Events (target `ripcord`): a breaker transition at `WARN` when it opens
//! (`INFO` otherwise), a trip the registry's open cap suppressed and a store
//! becoming unreachable at `WARN`, a fleet override at `INFO`; per-call
//! decisions (rejections, timeouts, scheduled and exhausted retries,
//! fallbacks) at `DEBUG`, so a busy open breaker does not flood the logs —
//! the span fields carry them at any level. Transition and rejection events
//! recorded inside a call span become span events in `tracing-opentelemetry`.
//! A transition lands in the span of the call that caused it even when
//! another thread delivers it (this feature turns on `ripcord/tracing`).
//!
//! Cost: with the option on, each event also looks up the current span
//! (`Span::current()`) and records a few fields on it; turn it off with
//! [`MetricsBuilder::tracing(false)`](crate::MetricsBuilder::tracing) on hot
//! paths that are not traced.
//!
//! ```
//! use ripcord::CircuitBreaker;
//! use ripcord_metrics::{tracing::traced, Metrics};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ripcord::ConfigError> {
//! let metrics = Metrics::new(); // reports to tracing too (feature `tracing`)
//! let breaker = metrics.breaker(CircuitBreaker::builder("payments"))?;
//! let paid = traced("payments.charge", breaker.call(|| async { Ok::<_, std::io::Error>(42) })).await;
//! assert_eq!(paid.unwrap(), 42);
//! # Ok(()) }
//! ```
//!
//! [`MetricsBuilder::tracing`]: crate::MetricsBuilder::tracing

use std::future::Future;

use ripcord::{Event, EventKind, Outcome, State};
use tracing::field::Empty;
use tracing::instrument::Instrumented;
use tracing::{Instrument as _, Span};

use crate::series::reason_label;

/// The target of ripcord's spans and events.
pub const TARGET: &str = "ripcord";

/// The name of the span [`call_span`] creates.
pub const CALL_SPAN: &str = "ripcord.call";

/// An `INFO` span named [`CALL_SPAN`] for one protected call, with the fields
/// listed in the [module docs](self) declared (empty) so that policies can
/// record them. `name` is recorded as `ripcord.name`.
pub fn call_span(name: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        CALL_SPAN,
        ripcord.name = name,
        ripcord.rejected = Empty,
        ripcord.rejected_by = Empty,
        ripcord.breaker = Empty,
        ripcord.breaker.outcome = Empty,
        ripcord.breaker.probe = Empty,
        ripcord.breaker.state = Empty,
        ripcord.breaker.epoch = Empty,
        ripcord.retry.attempts = Empty,
        ripcord.retry.exhausted = Empty,
        ripcord.retry.budget_exhausted = Empty,
        ripcord.timeout.timed_out = Empty,
        ripcord.bulkhead.waited_ms = Empty,
        ripcord.fallback = Empty,
        ripcord.fallback.index = Empty,
        ripcord.hedge.hedges = Empty,
        ripcord.hedge.winner = Empty,
        ripcord.store.degraded = Empty,
        otel.status_code = Empty,
    )
}

/// Runs `future` inside a new [`call_span`] named `name`.
pub fn traced<F: Future>(name: &str, future: F) -> Instrumented<F> {
    future.instrument(call_span(name))
}

/// A listener that reports events to `tracing` (what [`Metrics`](crate::Metrics)
/// does when its `tracing` option is on); usable alone as any policy's
/// `on_event`:
///
/// ```
/// let breaker = ripcord::CircuitBreaker::builder("payments")
///     .on_event(ripcord_metrics::tracing::record)
///     .build()?;
/// # let _ = breaker;
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
pub fn record(event: &Event) {
    record_with(event, false);
}

fn outcome_label(outcome: Outcome, slow: bool) -> &'static str {
    match outcome {
        Outcome::Success if slow => "slow",
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Ignored => "ignored",
    }
}

fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Reports `event`; `store_degraded`: whether the fleet's store is known to
/// be degraded now.
pub(crate) fn record_with(event: &Event, store_degraded: bool) {
    let span = Span::current();
    let name = event.name.as_str();
    let stopped = |span: &Span| {
        span.record("otel.status_code", "ERROR");
    };
    match &event.kind {
        EventKind::Outcome {
            outcome,
            slow,
            probe,
            ..
        } => {
            if span.is_disabled() {
                return;
            }
            span.record("ripcord.breaker", name);
            span.record("ripcord.breaker.outcome", outcome_label(*outcome, *slow));
            span.record("ripcord.breaker.probe", *probe);
            span.record("ripcord.breaker.epoch", event.epoch);
            if store_degraded {
                span.record("ripcord.store.degraded", true);
            }
        }
        EventKind::Rejected { state, retry_after } => {
            span.record("ripcord.rejected", true);
            span.record("ripcord.rejected_by", "circuit_breaker");
            span.record("ripcord.breaker", name);
            span.record("ripcord.breaker.outcome", "rejected");
            span.record("ripcord.breaker.state", state.as_str());
            span.record("ripcord.breaker.epoch", event.epoch);
            if store_degraded {
                span.record("ripcord.store.degraded", true);
            }
            stopped(&span);
            tracing::debug!(
                target: TARGET,
                breaker = name,
                state = state.as_str(),
                retry_after_ms = millis(*retry_after),
                epoch = event.epoch,
                "call rejected by circuit breaker"
            );
        }
        EventKind::Transition { from, to, reason } => {
            let state = *to;
            let (from, to, reason) = (from.as_str(), to.as_str(), reason_label(*reason));
            macro_rules! transition {
                ($level:ident, $message:literal) => {
                    tracing::$level!(
                        target: TARGET,
                        breaker = name,
                        from,
                        to,
                        reason,
                        epoch = event.epoch,
                        $message
                    )
                };
            }
            match state {
                State::Open => transition!(warn, "circuit breaker opened"),
                State::ForcedOpen => transition!(warn, "circuit breaker forced open"),
                State::HalfOpen => transition!(info, "circuit breaker half-open"),
                State::Closed => transition!(info, "circuit breaker closed"),
                State::Disabled => transition!(info, "circuit breaker disabled"),
                State::MetricsOnly => transition!(info, "circuit breaker in metrics-only mode"),
            }
        }
        EventKind::StaleOutcome {
            outcome,
            admitted_in,
        } => {
            tracing::debug!(
                target: TARGET,
                breaker = name,
                outcome = outcome_label(*outcome, false),
                admitted_in,
                epoch = event.epoch,
                "outcome of an earlier epoch not counted"
            );
        }
        EventKind::TripSuppressed { reason } => {
            tracing::warn!(
                target: TARGET,
                breaker = name,
                reason = reason_label(*reason),
                "circuit breaker trip suppressed by the registry's cap on open breakers"
            );
        }
        EventKind::RecoveryCheck { passed } => {
            tracing::debug!(target: TARGET, breaker = name, passed, "recovery check ran");
        }
        EventKind::StoreDegraded { degraded, detail } => {
            let detail = detail.as_deref().unwrap_or("");
            if *degraded {
                tracing::warn!(
                    target: TARGET,
                    breaker = name,
                    detail,
                    "fleet state store unreachable: deciding on local data"
                );
            } else {
                tracing::info!(target: TARGET, breaker = name, "fleet state store reachable again");
            }
        }
        EventKind::FleetOverride {
            to,
            actor,
            reason,
            expires_in,
        } => {
            tracing::info!(
                target: TARGET,
                breaker = name,
                to = to.as_str(),
                actor = actor.as_str(),
                reason = reason.as_str(),
                expires_in_s = expires_in.map(|d| d.as_secs_f64()),
                "fleet-wide override"
            );
        }
        EventKind::Attempt { attempt } => {
            span.record("ripcord.retry.attempts", *attempt);
        }
        EventKind::RetryScheduled { attempt, delay } => {
            tracing::debug!(
                target: TARGET,
                retry = name,
                attempt,
                delay_ms = millis(*delay),
                "retry scheduled"
            );
        }
        EventKind::RetryBudgetExhausted => {
            span.record("ripcord.retry.budget_exhausted", true);
            tracing::debug!(target: TARGET, retry = name, "retry refused by the retry budget");
        }
        EventKind::RetriesExhausted { attempts } => {
            span.record("ripcord.retry.attempts", *attempts);
            span.record("ripcord.retry.exhausted", true);
            stopped(&span);
            tracing::debug!(target: TARGET, retry = name, attempts, "retries exhausted");
        }
        EventKind::TimedOut { elapsed } => {
            span.record("ripcord.timeout.timed_out", true);
            stopped(&span);
            tracing::debug!(
                target: TARGET,
                timeout = name,
                elapsed_ms = millis(*elapsed),
                "call timed out"
            );
        }
        EventKind::BulkheadFull { waited } => {
            span.record("ripcord.rejected", true);
            span.record("ripcord.rejected_by", "bulkhead");
            span.record("ripcord.bulkhead.waited_ms", millis(*waited));
            stopped(&span);
            tracing::debug!(
                target: TARGET,
                bulkhead = name,
                waited_ms = millis(*waited),
                "call rejected by bulkhead"
            );
        }
        EventKind::BulkheadAcquired { waited, .. } if !waited.is_zero() => {
            span.record("ripcord.bulkhead.waited_ms", millis(*waited));
        }
        EventKind::RateLimited { retry_after } => {
            span.record("ripcord.rejected", true);
            span.record("ripcord.rejected_by", "rate_limiter");
            stopped(&span);
            tracing::debug!(
                target: TARGET,
                rate_limiter = name,
                retry_after_ms = millis(*retry_after),
                "call rejected by rate limiter"
            );
        }
        EventKind::FallbackUsed { index } => {
            span.record("ripcord.fallback", "used");
            span.record("ripcord.fallback.index", *index as u64);
            tracing::debug!(target: TARGET, fallback = name, index, "fallback used");
        }
        EventKind::FallbackFailed => {
            span.record("ripcord.fallback", "failed");
            stopped(&span);
            tracing::debug!(target: TARGET, fallback = name, "every fallback failed");
        }
        EventKind::HedgeStarted { hedge } => {
            span.record("ripcord.hedge.hedges", *hedge);
        }
        EventKind::HedgeWon { attempt } => {
            span.record("ripcord.hedge.winner", *attempt);
        }
        _ => {}
    }
}

/// Reports a change of the store's degraded flag made through
/// [`Metrics::set_store_degraded`](crate::Metrics::set_store_degraded).
pub(crate) fn store_degraded(degraded: bool) {
    if degraded {
        tracing::warn!(
            target: TARGET,
            "fleet state store unreachable: deciding on local data"
        );
    } else {
        tracing::info!(target: TARGET, "fleet state store reachable again");
    }
}
