//! Error types shared by every policy.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::{Name, State};

/// The error of a call made through a policy: either the policy refused the call,
/// or the call itself failed.
///
/// `Display` says which; the inner error is returned by
/// [`source`](std::error::Error::source), never repeated in the message, so error
/// reporters that walk the chain print each cause once.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The circuit breaker refused the call without running it.
    Rejected(Rejected),
    /// The call ran and returned this error.
    Inner(E),
}

impl<E> Error<E> {
    /// The inner error, if the call ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(e) => Some(e),
            Error::Rejected(_) => None,
        }
    }

    /// The rejection, if a policy refused the call.
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            Error::Rejected(r) => Some(r),
            Error::Inner(_) => None,
        }
    }

    /// Whether a policy refused the call.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Error::Rejected(_))
    }
}

impl<E> From<Rejected> for Error<E> {
    fn from(r: Rejected) -> Self {
        Error::Rejected(r)
    }
}

impl<E> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Rejected(r) => fmt::Display::fmt(r, f),
            Error::Inner(_) => f.write_str("the protected call failed"),
        }
    }
}

impl<E: StdError + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Rejected(r) => Some(r),
            Error::Inner(e) => Some(e),
        }
    }
}

/// A circuit breaker refused a call.
///
/// A plain value: making one copies the breaker's name (inline for names up to
/// 22 bytes) and never allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub(crate) name: Name,
    pub(crate) state: State,
    pub(crate) retry_after: Duration,
    pub(crate) epoch: u64,
}

impl Rejected {
    /// The name of the breaker that refused the call.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The state the breaker was in.
    pub fn state(&self) -> State {
        self.state
    }

    /// How long until the breaker lets a probe through (zero when unknown, e.g.
    /// while half-open probes are in flight or when forced open).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The breaker's epoch when it refused the call.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker `{}` is {} and rejected the call",
            self.name, self.state
        )?;
        if !self.retry_after.is_zero() {
            write!(f, "; next probe in {:?}", self.retry_after)?;
        }
        Ok(())
    }
}

impl StdError for Rejected {}

/// A configuration value is out of range or inconsistent.
///
/// The message names the field, the value given and what is allowed, e.g.
/// ``invalid `failure_rate` = 1.5: expected a rate in (0, 1]``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}` = {value}: expected {expected}")]
pub struct ConfigError {
    field: &'static str,
    value: String,
    expected: &'static str,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, value: impl fmt::Debug, expected: &'static str) -> Self {
        ConfigError {
            field,
            value: format!("{value:?}"),
            expected,
        }
    }

    /// The configuration field that is wrong (its builder method's name).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The value that was given, as written in Rust debug syntax.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What the field accepts.
    pub fn expected(&self) -> &'static str {
        self.expected
    }
}
