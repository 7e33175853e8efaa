//! Building and validating a rate limiter.

use std::fmt;
use std::time::Duration;

use super::RateLimiter;
use crate::clock::ClockHandle;
use crate::event::Listener;
use crate::{Clock, ConfigError, Name};

/// The data part of a rate limiter's configuration. Deserializable (feature
/// `serde`):
///
/// ```toml
/// rate = 100          # permits…
/// period = "1s"       # …per period
/// burst = 10          # taken at once after a quiet spell (default: rate)
/// max_wait = "50ms"   # wait up to this for a permit, else refuse (default 0)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RateLimiterConfig {
    /// Permits per `period` (at least 1; default 100).
    pub rate: u32,
    /// The period of `rate` (default 1 s; at least `rate` nanoseconds).
    #[cfg_attr(feature = "serde", serde(with = "crate::duration"))]
    pub period: Duration,
    /// Permits that may be taken at once after a quiet spell (at least 1;
    /// default: `rate`).
    pub burst: Option<u32>,
    /// How long [`acquire`](RateLimiter::acquire) and
    /// [`execute`](RateLimiter::execute) wait for a permit before refusing
    /// (default 0: refuse at once).
    #[cfg_attr(feature = "serde", serde(with = "crate::duration"))]
    pub max_wait: Duration,
}

impl Default for RateLimiterConfig {
    fn default() -> Self {
        RateLimiterConfig {
            rate: 100,
            period: Duration::from_secs(1),
            burst: None,
            max_wait: Duration::ZERO,
        }
    }
}

impl RateLimiterConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rate == 0 {
            return Err(ConfigError::new("rate", 0, "at least 1 permit per period"));
        }
        let period = u64::try_from(self.period.as_nanos()).unwrap_or(u64::MAX);
        if period < u64::from(self.rate) || self.period > Duration::from_secs(365 * 24 * 3600) {
            return Err(ConfigError::new(
                "period",
                self.period,
                "a period of at least `rate` nanoseconds and at most one year",
            ));
        }
        if let Some(b) = self.burst {
            let t = period / u64::from(self.rate);
            if b == 0 || t.checked_mul(u64::from(b)).is_none() {
                return Err(ConfigError::new(
                    "burst",
                    b,
                    "at least 1 permit, and at most a burst whose refill fits in 584 years",
                ));
            }
        }
        if self.max_wait > Duration::from_secs(365 * 24 * 3600) {
            return Err(ConfigError::new(
                "max_wait",
                self.max_wait,
                "a wait of at most one year",
            ));
        }
        Ok(())
    }
}

/// Builds a [`RateLimiter`]; every value is checked by [`build`](Self::build).
///
/// ```
/// use ripcord::RateLimiter;
/// use std::time::Duration;
///
/// let limiter = RateLimiter::builder("api")
///     .rate(100, Duration::from_secs(1))
///     .burst(10)
///     .max_wait(Duration::from_millis(50))
///     .build()?;
/// # let _ = limiter;
///
/// let err = RateLimiter::builder("bad").rate(0, Duration::from_secs(1)).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `rate` = 0: expected at least 1 permit per period");
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
#[derive(Clone)]
pub struct RateLimiterBuilder {
    pub(super) name: Name,
    pub(super) config: RateLimiterConfig,
    pub(super) clock: ClockHandle,
    pub(super) listeners: Vec<Listener>,
    pub(super) event_capacity: usize,
}

impl fmt::Debug for RateLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiterBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("clock", &self.clock)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl RateLimiterBuilder {
    pub(super) fn new(name: &str) -> Self {
        RateLimiterBuilder {
            name: Name::new(name),
            config: RateLimiterConfig::default(),
            clock: ClockHandle::default(),
            listeners: Vec::new(),
            event_capacity: 1024,
        }
    }

    /// Replaces the whole data configuration (e.g. one read from a file),
    /// keeping the name, clock and callbacks.
    pub fn config(mut self, config: RateLimiterConfig) -> Self {
        self.config = config;
        self
    }

    /// Renames the limiter.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Name::new(name);
        self
    }

    /// `permits` per `period` (default 100 per second).
    pub fn rate(mut self, permits: u32, period: Duration) -> Self {
        self.config.rate = permits;
        self.config.period = period;
        self
    }

    /// Permits that may be taken at once after a quiet spell (default: the
    /// rate's `permits`).
    pub fn burst(mut self, burst: u32) -> Self {
        self.config.burst = Some(burst);
        self
    }

    /// How long to wait for a permit before refusing (default 0: refuse at
    /// once). [`try_acquire`](RateLimiter::try_acquire) never waits.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.config.max_wait = wait;
        self
    }

    /// The clock the limiter reads (default [`SystemClock`](crate::SystemClock),
    /// with 1 ms resolution: for rates above about 1000 a second with small
    /// bursts, use [`PreciseClock`](crate::PreciseClock)). Waits sleep on
    /// tokio's timer; under paused tokio time, use
    /// [`TokioClock`](crate::TokioClock) so both agree.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    crate::event::listener_methods!();

    /// Checks the configuration and builds the limiter.
    pub fn build(self) -> Result<RateLimiter, ConfigError> {
        self.config.validate()?;
        crate::event::check_capacity(self.event_capacity)?;
        Ok(RateLimiter::from_builder(self))
    }
}
