//! The rules of a pipeline that do not depend on how it is run: both
//! interpreters — the walk of [`Pipeline::execute`](super::Pipeline::execute)
//! (`execute.rs`) and [`Pipeline::admit`](super::Pipeline::admit) with its
//! [`Admitted`](super::Admitted) (`admit.rs`) — decide through these
//! functions, and `tests/pipeline_differential.rs` checks that they agree.
//!
//! - **Deadlines**: [`timeout_deadline`] says what deadline a timeout sets
//!   inside the deadlines already in force; [`expired`] makes its error.
//! - **What a breaker records** (the table in the [module docs](super)):
//!   [`outcome`] for a call that ended, as an [`Ended`]. A call cancelled from
//!   outside records nothing here: both interpreters drop the breaker's
//!   permit, whose `Drop` counts the call as [`Outcome::Ignored`].

use tokio::time::Instant;

use crate::{Classify, Error, Outcome, TimeoutPolicy};

/// A deadline set by a timeout.
#[derive(Clone, Copy)]
pub(super) struct Started {
    /// When it expires.
    pub(super) at: Instant,
    /// When the timeout started.
    pub(super) now: Instant,
}

/// The deadline the timeout `t`, entered now, sets inside the deadline
/// `outer` of the policies outside it: its own, capped by the enclosing
/// task's ([`current_deadline`](crate::timeout::current_deadline)) — or
/// `None` if `outer` comes first, which then stays in force.
#[inline]
pub(super) fn timeout_deadline(t: &TimeoutPolicy, outer: Option<Instant>) -> Option<Started> {
    let now = Instant::now();
    // An enclosing deadline (set around the pipeline) caps it.
    let at = crate::timeout::earliest(now + t.duration());
    match outer {
        // The outer deadline comes first: it stays in force.
        Some(o) if o < at => None,
        _ => Some(Started { at, now }),
    }
}

/// The error of the timeout `t`, started at `started`, whose deadline
/// expired: emits its `TimedOut` event and makes [`Error::Timeout`].
#[inline]
pub(super) fn expired<E>(t: &TimeoutPolicy, started: Instant) -> Error<E> {
    Error::Timeout(t.timed_out(Instant::now().saturating_duration_since(started)))
}

/// How a call ended, as a breaker outside it sees it.
pub(super) enum Ended<'a, T, E> {
    /// The call returned this (its value, or its own error, perhaps passed on
    /// by a retry).
    Call(&'a Result<T, E>),
    /// A policy inside the breaker stopped it with this error (never
    /// [`Error::Inner`], which is a [`Call`](Ended::Call)).
    Stopped(&'a Error<E>),
    /// A deadline cut it off: of a timeout inside the breaker or outside it.
    CutOff,
}

/// What a breaker records for a call that ended so; `classify` is the
/// pipeline's classifier.
#[inline]
pub(super) fn outcome<T, E>(
    classify: Option<&(dyn Classify<T, E> + Send + Sync)>,
    ended: Ended<'_, T, E>,
) -> Outcome {
    match ended {
        Ended::Call(result) => match classify {
            Some(c) => c.classify(result),
            None => unclassified(result.is_ok()),
        },
        Ended::Stopped(error) => match error {
            // Refusals by policies inside the breaker say nothing about the
            // dependency (an inner breaker's rejection neither).
            Error::Rejected(_) | Error::BulkheadFull(_) | Error::RateLimited(_) => Outcome::Ignored,
            // A timeout inside the breaker, a failed inner fallback chain, a
            // fault injected inside it (what a failing dependency looks like).
            Error::Timeout(_) | Error::Fallback(_) | Error::Injected(_) => Outcome::Failure,
            // Not a refusal (see `Ended::Stopped`): judged as an error is
            // without a classifier.
            Error::Inner(_) => unclassified(false),
        },
        // The dependency did not answer in time.
        Ended::CutOff => Outcome::Failure,
    }
}

/// What a breaker records for the call's own result without a classifier:
/// `Ok` is a success, `Err` a failure. For a caller that knows only whether
/// the result is `Ok` (see [`outcome`]).
#[inline]
pub(super) fn unclassified(ok: bool) -> Outcome {
    if ok {
        Outcome::Success
    } else {
        Outcome::Failure
    }
}
