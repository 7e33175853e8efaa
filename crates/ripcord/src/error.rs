//! Error types shared by every policy.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::chaos::Injected;
use crate::fallback::FallbackError;
use crate::{Name, State};

/// The error of a call made through a policy: either the policy refused the call,
/// or the call itself failed.
///
/// `Display` says which, in a few words; the error behind it — the policy's
/// own error ([`Rejected`], [`Timeout`], …) or the call's — is returned by
/// [`source`](std::error::Error::source), never repeated in the message, so
/// error reporters that walk the chain (`{:#}` in anyhow) print each cause
/// once, and callers can downcast the source:
///
/// ```text
/// the circuit breaker refused the call
/// caused by: circuit breaker `payments` is open and rejected the call; next probe in 30s
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The circuit breaker refused the call without running it.
    Rejected(Rejected),
    /// The timeout policy cancelled the call at its deadline.
    Timeout(Timeout),
    /// The bulkhead was full (and its wait queue too, or the wait expired).
    BulkheadFull(BulkheadFull),
    /// The rate limiter refused the call (or the wait for a permit would be
    /// too long).
    RateLimited(RateLimited),
    /// The call ran and returned this error.
    Inner(E),
    /// A fallback chain ran and every fallback failed too; the
    /// [`FallbackError`] keeps the primary error and each fallback's error.
    Fallback(Box<FallbackError<E>>),
    /// A fault-injection policy ([`Chaos`](crate::chaos::Chaos)) did not let
    /// the call through.
    Injected(Injected),
}

/// `PolicyKind` and its names, from the one list of policies.
macro_rules! policy_kind {
    ($([$kind:ident, $name:ident, $label:literal, $config:ident, $slot:ident, $policy:ty, $builder:ty])*) => {
        /// Which policy stopped a call (see [`Error::policy`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum PolicyKind {
            $(
                #[doc = concat!("The ", $label, ".")]
                $kind,
            )*
        }

        impl PolicyKind {
            /// The policy's name in `snake_case`, as used in metrics and headers
            /// (and in configuration files).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(PolicyKind::$kind => stringify!($name),)*
                }
            }

            /// Every kind.
            #[allow(dead_code)] // without the pipeline (feature `tokio`)
            pub(crate) const ALL: &'static [PolicyKind] = &[$(PolicyKind::$kind),*];
        }
    };
}

crate::kinds::policy_list!(policy_kind);

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The timeout policy cancelled a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeout {
    pub(crate) name: Name,
    pub(crate) elapsed: Duration,
}

impl Timeout {
    /// Makes a timeout error (for policies and adapters built on ripcord).
    pub fn new(name: &str, elapsed: Duration) -> Self {
        Timeout {
            name: Name::new(name),
            elapsed,
        }
    }

    /// The name of the timeout policy.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// How long the call ran before it was cancelled.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timeout `{}` cancelled the call after {:?}",
            self.name, self.elapsed
        )
    }
}

impl StdError for Timeout {}

/// A bulkhead refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadFull {
    pub(crate) name: Name,
    pub(crate) max_concurrent: u32,
    pub(crate) waited: Duration,
}

impl BulkheadFull {
    /// Makes a bulkhead-full error.
    pub fn new(name: &str, max_concurrent: u32, waited: Duration) -> Self {
        BulkheadFull {
            name: Name::new(name),
            max_concurrent,
            waited,
        }
    }

    /// The name of the bulkhead.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Its limit of concurrent calls.
    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent
    }

    /// How long the call waited in the queue before being refused (zero when
    /// the queue was full).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bulkhead `{}` is full ({} concurrent calls)",
            self.name, self.max_concurrent
        )?;
        if !self.waited.is_zero() {
            write!(f, " after waiting {:?}", self.waited)?;
        }
        Ok(())
    }
}

impl StdError for BulkheadFull {}

/// A rate limiter refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    pub(crate) name: Name,
    pub(crate) retry_after: Duration,
}

impl RateLimited {
    /// Makes a rate-limited error.
    pub fn new(name: &str, retry_after: Duration) -> Self {
        RateLimited {
            name: Name::new(name),
            retry_after,
        }
    }

    /// The name of the rate limiter.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// How long until a permit would be available.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limiter `{}` refused the call; next permit in {:?}",
            self.name, self.retry_after
        )
    }
}

impl StdError for RateLimited {}

impl<E> Error<E> {
    /// The inner error, if the call ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// The circuit breaker's rejection, if the breaker refused the call.
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            Error::Rejected(r) => Some(r),
            _ => None,
        }
    }

    /// Whether the circuit breaker refused the call.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Error::Rejected(_))
    }

    /// The policy that stopped the call, or `None` if the call itself failed.
    pub fn policy(&self) -> Option<PolicyKind> {
        match self {
            Error::Rejected(_) => Some(PolicyKind::CircuitBreaker),
            Error::Timeout(_) => Some(PolicyKind::Timeout),
            Error::BulkheadFull(_) => Some(PolicyKind::Bulkhead),
            Error::RateLimited(_) => Some(PolicyKind::RateLimiter),
            Error::Inner(_) => None,
            Error::Fallback(_) => Some(PolicyKind::Fallback),
            Error::Injected(_) => Some(PolicyKind::Chaos),
        }
    }

    /// How long the caller should wait before trying again, when the policy
    /// that stopped the call knows (an open breaker, a rate limiter; for a
    /// failed fallback chain, the primary error's).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Rejected(r) => Some(r.retry_after()),
            Error::RateLimited(r) => Some(r.retry_after),
            Error::Fallback(f) => f.primary().retry_after(),
            _ => None,
        }
    }

    /// Maps the inner error, keeping policy errors as they are. `f` runs once
    /// per inner error: once for [`Error::Inner`], once per error kept in an
    /// [`Error::Fallback`].
    pub fn map_inner<F, E2>(self, mut f: F) -> Error<E2>
    where
        F: FnMut(E) -> E2,
    {
        match self {
            Error::Rejected(r) => Error::Rejected(r),
            Error::Timeout(t) => Error::Timeout(t),
            Error::BulkheadFull(b) => Error::BulkheadFull(b),
            Error::RateLimited(r) => Error::RateLimited(r),
            Error::Inner(e) => Error::Inner(f(e)),
            Error::Fallback(fb) => {
                Error::Fallback(Box::new(fb.map_inner(&mut f as &mut dyn FnMut(E) -> E2)))
            }
            Error::Injected(i) => Error::Injected(i),
        }
    }
}

impl<E> From<Rejected> for Error<E> {
    fn from(r: Rejected) -> Self {
        Error::Rejected(r)
    }
}

impl<E> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Rejected(_) => "the circuit breaker refused the call",
            Error::Timeout(_) => "the timeout cancelled the call",
            Error::BulkheadFull(_) => "the bulkhead refused the call",
            Error::RateLimited(_) => "the rate limiter refused the call",
            Error::Inner(_) => "the protected call failed",
            Error::Fallback(_) => "the call and every fallback failed",
            Error::Injected(_) => "fault injection stopped the call",
        })
    }
}

impl<E: fmt::Display> Error<E> {
    /// Writes the error this one stands for: the policy's own message, or the
    /// call's error (what [`source`](std::error::Error::source) would show).
    pub(crate) fn fmt_cause(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Rejected(r) => fmt::Display::fmt(r, f),
            Error::Timeout(t) => fmt::Display::fmt(t, f),
            Error::BulkheadFull(b) => fmt::Display::fmt(b, f),
            Error::RateLimited(r) => fmt::Display::fmt(r, f),
            Error::Inner(e) => fmt::Display::fmt(e, f),
            Error::Fallback(fb) => fmt::Display::fmt(fb, f),
            Error::Injected(i) => fmt::Display::fmt(i, f),
        }
    }
}

impl<E: StdError + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Rejected(r) => Some(r),
            Error::Timeout(t) => Some(t),
            Error::BulkheadFull(b) => Some(b),
            Error::RateLimited(r) => Some(r),
            Error::Inner(e) => Some(e),
            Error::Fallback(fb) => Some(&**fb),
            Error::Injected(i) => Some(i),
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
    /// Nanoseconds until the next probe (kept raw: making a rejection is then
    /// a few plain stores).
    pub(crate) retry_after_nanos: u64,
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
        Duration::from_nanos(self.retry_after_nanos)
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
        if self.retry_after_nanos != 0 {
            write!(f, "; next probe in {:?}", self.retry_after())?;
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
