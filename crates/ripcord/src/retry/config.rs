//! Building and validating a retry policy.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::retry_on::Rules;
use super::{Attempt, Retry, RetryBudget, RetryBudgetConfig};
use crate::clock::ClockHandle;
use crate::event::Listener;
use crate::{Backoff, Classify, Clock, ConfigError, Name, Outcome};

/// A per-attempt hook.
pub(super) type AttemptHook = Arc<dyn Fn(&Attempt) + Send + Sync>;

/// The most attempts a retry policy may make per call.
pub const MAX_ATTEMPTS: u32 = 1000;

/// The data part of a retry policy's configuration: everything but
/// predicates, hooks and the clock. Deserializable (feature `serde`):
///
/// ```toml
/// max_attempts = 4                 # the first call and up to 3 retries
/// max_total_time = "5s"
/// backoff = { kind = "exponential", base = "100ms", max = "2s", jitter = "full" }
/// budget = { ratio = 0.2, min_per_second = 10, window = "10s" }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RetryConfig {
    /// Attempts per call, the first one included (1 to 1000, default 3).
    pub max_attempts: u32,
    /// No retry starts this long or later after the first attempt started
    /// (default: no limit).
    #[cfg_attr(feature = "serde", serde(with = "crate::duration::option"))]
    pub max_total_time: Option<Duration>,
    /// The delay before the `n`-th retry (default: exponential from 100 ms to
    /// 10 s, full jitter).
    pub backoff: Backoff,
    /// A retry budget private to this policy (default: none). To share one
    /// between policies, give the builder a [`RetryBudget`] instead.
    pub budget: Option<RetryBudgetConfig>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            max_total_time: None,
            backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10))
                .full_jitter(),
            budget: None,
        }
    }
}

impl RetryConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                self.max_attempts,
                "1 to 1000 attempts (the first call included)",
            ));
        }
        if let Some(t) = self.max_total_time {
            if t.is_zero() {
                return Err(ConfigError::new(
                    "max_total_time",
                    t,
                    "a total time greater than zero",
                ));
            }
        }
        self.backoff.validate("backoff")?;
        if let Some(b) = &self.budget {
            b.validate_as(true)?;
        }
        Ok(())
    }
}

/// Builds a [`Retry`]; every value is checked by [`build`](Self::build).
///
/// ```
/// use ripcord::{Backoff, Retry};
/// use std::time::Duration;
///
/// let retry = Retry::builder("payments")
///     .max_attempts(4)
///     .max_total_time(Duration::from_secs(5))
///     .backoff(Backoff::decorrelated_jitter(Duration::from_millis(100), Duration::from_secs(2)))
///     .build()?;
/// # let _ = retry;
///
/// let err = Retry::builder("bad").max_attempts(0).build().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid `max_attempts` = 0: expected 1 to 1000 attempts (the first call included)"
/// );
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
#[derive(Clone)]
pub struct RetryBuilder {
    pub(super) name: Name,
    pub(super) config: RetryConfig,
    pub(super) budget: Option<RetryBudget>,
    pub(super) rules: Rules,
    pub(super) hooks: Vec<AttemptHook>,
    pub(super) clock: ClockHandle,
    pub(super) listeners: Vec<Listener>,
    pub(super) event_capacity: usize,
    pub(super) seed: Option<u64>,
}

impl fmt::Debug for RetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("budget", &self.budget)
            .field("rules", &self.rules)
            .field("hooks", &self.hooks.len())
            .field("clock", &self.clock)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl RetryBuilder {
    pub(super) fn new(name: &str) -> Self {
        RetryBuilder {
            name: Name::new(name),
            config: RetryConfig::default(),
            budget: None,
            rules: Rules::default(),
            hooks: Vec::new(),
            clock: ClockHandle::default(),
            listeners: Vec::new(),
            event_capacity: 1024,
            seed: None,
        }
    }

    /// Replaces the whole data configuration (e.g. one read from a file),
    /// keeping the name, clock, predicates, hooks and a shared budget.
    pub fn config(mut self, config: RetryConfig) -> Self {
        self.config = config;
        self
    }

    /// Renames the policy.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Name::new(name);
        self
    }

    /// Attempts per call, the first one included (default 3; 1 disables
    /// retries).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// No retry may start `total` or later after the first attempt started.
    /// This does not cancel a running attempt: put a
    /// [`TimeoutPolicy`](crate::TimeoutPolicy) around the retry for that.
    pub fn max_total_time(mut self, total: Duration) -> Self {
        self.config.max_total_time = Some(total);
        self
    }

    /// The delay before the `n`-th retry (default: exponential from 100 ms to
    /// 10 s with full jitter). A longer delay asked for by the result
    /// ([`retry_after`](Self::retry_after)) wins.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Retries only when `budget` has a retry to spare (see [`RetryBudget`]);
    /// clones of one budget can be given to several policies.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Decides which results of type `Result<T, E>` to retry: `true` retries
    /// (if attempts, time and budget allow). Replaces the default (retry every
    /// `Err`) for calls of exactly that type; calls of other types keep their
    /// own rule. Several predicates may be given; the first whose type matches
    /// decides.
    ///
    /// A retried `Ok` value is returned as it is once no attempt is left.
    ///
    /// ```
    /// use ripcord::Retry;
    ///
    /// #[derive(Debug)]
    /// struct HttpError { status: u16 }
    ///
    /// let retry = Retry::builder("api")
    ///     // Retry 5xx and 429 (and a 503 returned as a value), never other 4xx.
    ///     .retry_on(|r: &Result<u16, HttpError>| match r {
    ///         Ok(status) => *status == 503,
    ///         Err(e) => e.status >= 500 || e.status == 429,
    ///     })
    ///     .build()?;
    /// # let _ = retry;
    /// # Ok::<(), ripcord::ConfigError>(())
    /// ```
    ///
    /// In [`execute_composed`](Retry::execute_composed), a predicate typed
    /// over the composed result `Result<T, ripcord::Error<E>>` is asked first
    /// (it sees the errors of inner policies too); then one over
    /// `Result<T, E>`, for values and inner errors.
    pub fn retry_on<T: 'static, E: 'static>(
        mut self,
        predicate: impl Fn(&Result<T, E>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.rules.add_predicate(predicate);
        self
    }

    /// Retries the results that `classifier` finds a [`Outcome::Failure`] —
    /// never a success or an ignored outcome. With the classifier a breaker
    /// uses, retry and breaker agree on what failed.
    ///
    /// ```
    /// use ripcord::{Outcome, Retry};
    ///
    /// let retry = Retry::builder("api")
    ///     .classify(|r: &Result<(), std::io::Error>| match r {
    ///         Ok(()) => Outcome::Success,
    ///         Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::Ignored,
    ///         Err(_) => Outcome::Failure,
    ///     })
    ///     .build()?;
    /// # let _ = retry;
    /// # Ok::<(), ripcord::ConfigError>(())
    /// ```
    pub fn classify<T: 'static, E: 'static>(
        self,
        classifier: impl Classify<T, E> + Send + Sync + 'static,
    ) -> Self {
        self.retry_on(move |r: &Result<T, E>| classifier.classify(r) == Outcome::Failure)
    }

    /// Honours a delay the result asks for, e.g. an HTTP `Retry-After` header:
    /// `f` gets the error (or a retried `Ok` value) when its type is `X`, and
    /// the retry waits at least the delay it returns (the backoff's delay, if
    /// longer, wins). Several may be given; the first whose type matches is
    /// used.
    ///
    /// The errors of inner policies carry their own delay without this:
    /// a breaker's [`Rejected::retry_after`](crate::Rejected::retry_after) and
    /// a rate limiter's [`RateLimited::retry_after`](crate::RateLimited::retry_after).
    ///
    /// ```
    /// use ripcord::Retry;
    /// use std::time::Duration;
    ///
    /// #[derive(Debug)]
    /// struct HttpError { status: u16, retry_after: Option<Duration> }
    ///
    /// let retry = Retry::builder("api")
    ///     // A 429 or 503 may say how long to wait.
    ///     .retry_after(|e: &HttpError| e.retry_after.filter(|_| matches!(e.status, 429 | 503)))
    ///     .build()?;
    /// # let _ = retry;
    /// # Ok::<(), ripcord::ConfigError>(())
    /// ```
    pub fn retry_after<X: 'static>(
        mut self,
        f: impl Fn(&X) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.rules.add_delay(f);
        self
    }

    /// Calls `hook` before every attempt, the first one included, with its
    /// number, the time since the first attempt and the delay waited before it.
    pub fn on_attempt(mut self, hook: impl Fn(&Attempt) + Send + Sync + 'static) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// The clock that measures `max_total_time` and stamps events (default
    /// [`SystemClock`](crate::SystemClock)). Retries wait on tokio's timer;
    /// under paused tokio time, use [`TokioClock`](crate::TokioClock) so both
    /// agree. A budget built from [`RetryConfig::budget`] uses this clock too.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    crate::event::listener_methods!();

    /// Seeds the jitter, for reproducible delays: the `k`-th call through
    /// the policy that needs a delay always draws the same ones.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the configuration and builds the policy.
    pub fn build(self) -> Result<Retry, ConfigError> {
        self.config.validate()?;
        crate::event::check_capacity(self.event_capacity)?;
        Ok(Retry::from_builder(self))
    }
}
