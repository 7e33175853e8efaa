//! What a finished call means to a policy.

use std::fmt;

/// How a call ended, as far as a policy is concerned.
///
/// Whether a call was *slow* is not part of the outcome: a breaker measures the
/// call's duration itself and counts it as slow when it exceeds the configured
/// threshold, whatever its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Outcome {
    /// The dependency did its job.
    Success,
    /// The dependency failed; counts against it.
    Failure,
    /// Neither: the call is not counted (a client error such as HTTP 404, a call
    /// cancelled by the caller, a permit dropped without a verdict).
    Ignored,
}

impl Outcome {
    /// Classifies a `Result` the default way: `Ok` is a success, `Err` a failure.
    pub fn of<T, E>(result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Ignored => "ignored",
        })
    }
}

/// Decides the [`Outcome`] of a call from its result.
///
/// Any `Fn(&Result<T, E>) -> Outcome` is a classifier, so a closure works:
///
/// ```
/// use ripcord::{Classify, Outcome};
///
/// #[derive(Debug)]
/// struct HttpError { status: u16 }
///
/// // 5xx and 429 count against the dependency; other 4xx are the caller's fault.
/// let classify = |r: &Result<u16, HttpError>| match r {
///     Ok(_) => Outcome::Success,
///     Err(e) if e.status >= 500 || e.status == 429 => Outcome::Failure,
///     Err(_) => Outcome::Ignored,
/// };
/// assert_eq!(classify.classify(&Err(HttpError { status: 404 })), Outcome::Ignored);
/// assert_eq!(classify.classify(&Err(HttpError { status: 503 })), Outcome::Failure);
/// ```
pub trait Classify<T, E> {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAsFailures;

impl<T, E> Classify<T, E> for ErrorsAsFailures {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        Outcome::of(result)
    }
}
