//! Building and validating a circuit breaker.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{CircuitBreaker, WindowStats};
use crate::clock::ClockHandle;
use crate::event::Listener;
use crate::{Backoff, Clock, ConfigError, Name, Window};

/// A custom trip rule over the window's statistics.
pub type TripRule = Arc<dyn Fn(&WindowStats) -> bool + Send + Sync>;

/// The data part of a breaker's configuration: everything but callbacks and the
/// clock. Deserializable (feature `serde`), so a TOML file can describe it:
///
/// ```toml
/// failure_rate = 0.5
/// slow_calls = { duration = "800ms", rate = 0.5 }
/// consecutive_failures = 20
/// minimum_calls = 20
/// window = { time = "10s", buckets = 10 }
/// open_for = { kind = "exponential", base = "5s", max = "2m", jitter = 0.2 }
/// half_open_calls = 3
/// max_half_open_wait = "30s"
/// ```
///
/// Missing fields take the defaults below. When no trip rule is given at all,
/// the breaker trips at a 50 % failure rate.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct CircuitBreakerConfig {
    /// Trip when at least this share of the window's calls failed (0 < r ≤ 1).
    pub failure_rate: Option<f64>,
    /// Trip when at least `rate` of the window's calls took `duration` or longer.
    pub slow_calls: Option<SlowCalls>,
    /// Trip after this many failures in a row (≥ 1), whatever the window says.
    pub consecutive_failures: Option<u32>,
    /// Rate rules (and the custom rule) need at least this many calls in the
    /// window (default 20).
    pub minimum_calls: u32,
    /// The window rate rules look at (default: the last 100 calls).
    pub window: Window,
    /// How long the breaker stays open, by number of consecutive openings
    /// (default: 30 s fixed).
    pub open_for: Backoff,
    /// Probes admitted while half-open (1 to 10000, default 3).
    pub half_open_calls: u32,
    /// Probe successes needed to close (1 to `half_open_calls`; default all of
    /// them). The breaker re-opens as soon as closing has become impossible.
    pub half_open_successes: Option<u32>,
    /// Re-open when the probes give no verdict within this time (default 60 s).
    #[cfg_attr(feature = "serde", serde(with = "crate::duration"))]
    pub max_half_open_wait: Duration,
    /// Move from open to half-open on a timer rather than on the next call
    /// (needs a tokio runtime; default false).
    pub eager_transitions: bool,
    /// Keep a latency histogram so custom rules can ask for quantiles (default:
    /// on when a custom rule is set).
    pub latency_histogram: Option<bool>,
}

/// The slow-call rule: calls taking `duration` or longer are slow; trip when
/// `rate` of the window's calls are slow.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct SlowCalls {
    /// The slow-call threshold.
    #[cfg_attr(feature = "serde", serde(with = "crate::duration"))]
    pub duration: Duration,
    /// The slow-call rate that trips the breaker (0 < r ≤ 1).
    pub rate: f64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_rate: None,
            slow_calls: None,
            consecutive_failures: None,
            minimum_calls: 20,
            window: Window::default(),
            open_for: Backoff::fixed(Duration::from_secs(30)),
            half_open_calls: 3,
            half_open_successes: None,
            max_half_open_wait: Duration::from_secs(60),
            eager_transitions: false,
            latency_histogram: None,
        }
    }
}

/// Most half-open probes a breaker may admit at once.
pub const MAX_HALF_OPEN_CALLS: u32 = 10_000;

fn check_rate(field: &'static str, r: f64) -> Result<(), ConfigError> {
    if r.is_finite() && r > 0.0 && r <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::new(field, r, "a rate in (0, 1]"))
    }
}

impl CircuitBreakerConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(r) = self.failure_rate {
            check_rate("failure_rate", r)?;
        }
        if let Some(s) = self.slow_calls {
            if s.duration.is_zero() {
                return Err(ConfigError::new(
                    "slow_calls.duration",
                    s.duration,
                    "a slow-call threshold greater than zero",
                ));
            }
            check_rate("slow_calls.rate", s.rate)?;
        }
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                0,
                "at least 1 failure in a row",
            ));
        }
        self.window.validate()?;
        if self.minimum_calls == 0 {
            return Err(ConfigError::new("minimum_calls", 0, "at least 1 call"));
        }
        if let Some(cap) = self.window.capacity() {
            if u64::from(self.minimum_calls) > cap {
                return Err(ConfigError::new(
                    "minimum_calls",
                    self.minimum_calls,
                    "at most the size of the count window (else rate rules never apply)",
                ));
            }
        }
        self.open_for.validate("open_for")?;
        if !(1..=MAX_HALF_OPEN_CALLS).contains(&self.half_open_calls) {
            return Err(ConfigError::new(
                "half_open_calls",
                self.half_open_calls,
                "1 to 10000 probes",
            ));
        }
        if let Some(k) = self.half_open_successes {
            if k == 0 || k > self.half_open_calls {
                return Err(ConfigError::new(
                    "half_open_successes",
                    k,
                    "1 to half_open_calls successes",
                ));
            }
        }
        if self.max_half_open_wait.is_zero() {
            return Err(ConfigError::new(
                "max_half_open_wait",
                self.max_half_open_wait,
                "a wait greater than zero",
            ));
        }
        Ok(())
    }
}

/// Builds a [`CircuitBreaker`]; every value is checked by [`build`](Self::build).
///
/// ```
/// use ripcord::{Backoff, CircuitBreaker, Window};
/// use std::time::Duration;
///
/// let breaker = CircuitBreaker::builder("payments")
///     .failure_rate(0.5)
///     .slow_calls(Duration::from_millis(800), 0.5)
///     .consecutive_failures(20)
///     .minimum_calls(20)
///     .window(Window::time(Duration::from_secs(10)))
///     .open_for(Backoff::exponential(Duration::from_secs(5), Duration::from_secs(120)).jitter(0.2))
///     .half_open_calls(3)
///     .build()?;
/// # let _ = breaker;
///
/// let err = CircuitBreaker::builder("bad").failure_rate(1.5).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `failure_rate` = 1.5: expected a rate in (0, 1]");
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
pub struct CircuitBreakerBuilder {
    pub(super) name: Name,
    pub(super) config: CircuitBreakerConfig,
    pub(super) custom_rule: Option<TripRule>,
    pub(crate) clock: ClockHandle,
    pub(super) listeners: Vec<Listener>,
    pub(super) event_capacity: usize,
    pub(super) seed: Option<u64>,
    pub(super) recovery: Option<super::recovery::RecoveryCheck>,
    pub(super) ramp_up: Duration,
    pub(crate) open_gate: Option<Arc<super::gate::OpenGate>>,
    #[cfg(feature = "tokio")]
    pub(crate) fleet: Option<crate::store::Fleet>,
}

impl Clone for CircuitBreakerBuilder {
    fn clone(&self) -> Self {
        CircuitBreakerBuilder {
            name: self.name.clone(),
            config: self.config.clone(),
            custom_rule: self.custom_rule.clone(),
            clock: self.clock.clone(),
            listeners: self.listeners.clone(),
            event_capacity: self.event_capacity,
            seed: self.seed,
            recovery: self.recovery.clone(),
            ramp_up: self.ramp_up,
            open_gate: self.open_gate.clone(),
            #[cfg(feature = "tokio")]
            fleet: self.fleet.clone(),
        }
    }
}

impl fmt::Debug for CircuitBreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("custom_rule", &self.custom_rule.is_some())
            .field("clock", &self.clock)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerBuilder {
    pub(super) fn new(name: &str) -> Self {
        CircuitBreakerBuilder {
            name: Name::new(name),
            config: CircuitBreakerConfig::default(),
            custom_rule: None,
            clock: ClockHandle::default(),
            listeners: Vec::new(),
            event_capacity: 1024,
            seed: None,
            recovery: None,
            ramp_up: Duration::ZERO,
            open_gate: None,
            #[cfg(feature = "tokio")]
            fleet: None,
        }
    }

    /// Replaces the whole data configuration (e.g. one read from a file),
    /// keeping the name, clock, callbacks and custom rule.
    pub fn config(mut self, config: CircuitBreakerConfig) -> Self {
        self.config = config;
        self
    }

    /// Renames the breaker.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Name::new(name);
        self
    }

    /// Trip when at least `rate` (0 < rate ≤ 1) of the window's calls failed.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = Some(rate);
        self
    }

    /// Calls taking `threshold` or longer are slow; trip when at least `rate` of
    /// the window's calls were slow.
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.config.slow_calls = Some(SlowCalls {
            duration: threshold,
            rate,
        });
        self
    }

    /// Trip after `n` failures in a row (not guarded by `minimum_calls`).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }

    /// Trip when `rule` holds for the window's statistics (with at least
    /// `minimum_calls` calls). Evaluated with the other rules whenever a
    /// failure or a slow call is recorded. In a [fleet](crate::store::Fleet)
    /// the rate rules judge the fleet-wide counts, while `rule` judges this
    /// instance's own window, so its counts and its latency quantiles always
    /// describe the same calls.
    ///
    /// ```
    /// use ripcord::CircuitBreaker;
    /// use std::time::Duration;
    ///
    /// // Error rate ≥ 20 % AND p90 latency > 800 ms.
    /// let b = CircuitBreaker::builder("search")
    ///     .trip_when(|s| {
    ///         s.failure_rate() >= 0.2
    ///             && s.latency_quantile(0.9).is_some_and(|p90| p90 > Duration::from_millis(800))
    ///     })
    ///     .build()?;
    /// # let _ = b;
    /// # Ok::<(), ripcord::ConfigError>(())
    /// ```
    pub fn trip_when(
        mut self,
        rule: impl Fn(&WindowStats) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.custom_rule = Some(Arc::new(rule));
        self
    }

    /// Rate rules need at least `n` calls in the window (default 20).
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// The window that rate rules look at (default [`Window::count(100)`](Window::count)).
    pub fn window(mut self, window: Window) -> Self {
        self.config.window = window;
        self
    }

    /// How long the breaker stays open (default 30 s); grows with consecutive
    /// openings when the backoff does, and starts over once the breaker closes.
    pub fn open_for(mut self, backoff: Backoff) -> Self {
        self.config.open_for = backoff;
        self
    }

    /// Probes admitted while half-open (default 3).
    pub fn half_open_calls(mut self, n: u32) -> Self {
        self.config.half_open_calls = n;
        self
    }

    /// Close after `n` successful probes (default: all `half_open_calls`).
    pub fn half_open_successes(mut self, n: u32) -> Self {
        self.config.half_open_successes = Some(n);
        self
    }

    /// Close when at least `ratio` (0 < ratio ≤ 1) of the `half_open_calls`
    /// probes succeed: sets [`half_open_successes`](Self::half_open_successes)
    /// to `ceil(ratio × half_open_calls)`; call it after `half_open_calls`.
    pub fn half_open_success_ratio(mut self, ratio: f64) -> Self {
        let n = (ratio * f64::from(self.config.half_open_calls)).ceil();
        self.config.half_open_successes =
            Some(if ratio.is_finite() && ratio > 0.0 && ratio <= 1.0 {
                n as u32
            } else {
                0 // rejected by validation
            });
        self
    }

    /// Re-open when no verdict comes from the probes within `wait` (default 60 s).
    pub fn max_half_open_wait(mut self, wait: Duration) -> Self {
        self.config.max_half_open_wait = wait;
        self
    }

    /// Move from open to half-open by a timer when the open duration elapses,
    /// rather than on the next call (default: on the next call). The timer runs
    /// on the tokio runtime current when the breaker opens, if there is one.
    pub fn eager_transitions(mut self, eager: bool) -> Self {
        self.config.eager_transitions = eager;
        self
    }

    /// Keep a latency histogram for [`WindowStats::latency_quantile`] (on by
    /// default when a custom rule is set). Costs one counter update per call.
    pub fn latency_histogram(mut self, on: bool) -> Self {
        self.config.latency_histogram = Some(on);
        self
    }

    /// The clock the breaker reads (default [`SystemClock`](crate::SystemClock)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    crate::event::listener_methods!();

    /// Seeds the jitter of the open duration, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// While open, poll `check` every `interval`; the breaker moves to half-open
    /// only when the open duration has elapsed **and** a check has passed (needs
    /// a tokio runtime; without one, call
    /// [`CircuitBreaker::run_recovery_check`] yourself).
    pub fn recovery_check<F, Fut>(mut self, interval: Duration, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        self.recovery = Some(super::recovery::RecoveryCheck::new(interval, check));
        self
    }

    /// After a recovery (half-open → closed), admit a share of calls that grows
    /// linearly from 0 to 100 % over `ramp`, instead of all at once; the rest
    /// are rejected. Default: no ramp.
    pub fn ramp_up(mut self, ramp: Duration) -> Self {
        self.ramp_up = ramp;
        self
    }

    /// Shares this breaker's state with every instance linked to `fleet`
    /// under the same name (feature `tokio`; see [`store`](crate::store)).
    /// Calls are still decided locally; the fleet is synced in the background.
    #[cfg(feature = "tokio")]
    pub fn fleet(mut self, fleet: &crate::store::Fleet) -> Self {
        self.fleet = Some(fleet.clone());
        self
    }

    /// Checks the configuration and builds the breaker.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        self.config.validate()?;
        crate::event::check_capacity(self.event_capacity)?;
        if let Some(r) = &self.recovery {
            if r.interval.is_zero() {
                return Err(ConfigError::new(
                    "recovery_check",
                    r.interval,
                    "a check interval greater than zero",
                ));
            }
        }
        Ok(CircuitBreaker::from_builder(self))
    }
}
