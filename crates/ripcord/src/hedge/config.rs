//! Building and validating a hedge.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::state::LatencyHistogram;
use super::{Hedge, Inner};
use crate::clock::ClockHandle;
use crate::event::{Events, Listener};
use crate::{Clock, ConfigError, Name};

/// Most extra attempts a hedge may start for one call.
pub const MAX_HEDGES: u32 = 16;

/// The data part of a hedge's configuration. Deserializable (feature `serde`):
///
/// ```toml
/// delay = "50ms"          # a fixed delay, or:
/// # delay = { percentile = 0.95, initial = "50ms", min = "5ms", max = "1s" }
/// max_hedges = 2
/// hedge_on_failure = false
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct HedgeConfig {
    /// How long to wait for an attempt before starting the next one (default
    /// 100 ms fixed).
    pub delay: HedgeDelay,
    /// Extra attempts at most, besides the original call (1 to 16, default 1).
    pub max_hedges: u32,
    /// Start the next hedge at once when an attempt fails, rather than
    /// waiting for the delay (default false: a failed attempt ends the call
    /// unless another attempt is still running).
    pub hedge_on_failure: bool,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            delay: HedgeDelay::Fixed(Duration::from_millis(100)),
            max_hedges: 1,
            hedge_on_failure: false,
        }
    }
}

/// When to start a hedge.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(untagged))]
pub enum HedgeDelay {
    /// Always after this long (`"50ms"` in TOML; zero starts every attempt at
    /// once).
    Fixed(#[cfg_attr(feature = "serde", serde(with = "crate::duration"))] Duration),
    /// After the observed latency percentile of recent successful calls.
    Percentile(PercentileDelay),
}

/// A hedge delay from observed latencies: start a hedge once the call has
/// taken longer than, say, 95 % of recent successful calls did.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct PercentileDelay {
    /// The latency quantile, in (0, 1): 0.95 for p95.
    pub percentile: f64,
    /// The delay while fewer than `min_samples` latencies are known.
    #[cfg_attr(feature = "serde", serde(with = "crate::duration"))]
    pub initial: Duration,
    /// Never hedge sooner than this (default 0).
    #[cfg_attr(feature = "serde", serde(default, with = "crate::duration"))]
    pub min: Duration,
    /// Never wait longer than this (default 1 hour, i.e. no bound in practice).
    #[cfg_attr(
        feature = "serde",
        serde(default = "PercentileDelay::default_max", with = "crate::duration")
    )]
    pub max: Duration,
    /// Latencies needed before the percentile is trusted (default 20).
    #[cfg_attr(
        feature = "serde",
        serde(default = "PercentileDelay::default_min_samples")
    )]
    pub min_samples: u32,
    /// Latencies are kept for one to two windows (default 60 s).
    #[cfg_attr(
        feature = "serde",
        serde(default = "PercentileDelay::default_window", with = "crate::duration")
    )]
    pub window: Duration,
}

impl PercentileDelay {
    /// The `percentile` delay, `initial` until enough latencies are known,
    /// with the default bounds, sample count and window.
    pub fn new(percentile: f64, initial: Duration) -> Self {
        PercentileDelay {
            percentile,
            initial,
            min: Duration::ZERO,
            max: Self::default_max(),
            min_samples: Self::default_min_samples(),
            window: Self::default_window(),
        }
    }

    fn default_max() -> Duration {
        Duration::from_secs(3600)
    }

    fn default_min_samples() -> u32 {
        20
    }

    fn default_window() -> Duration {
        Duration::from_secs(60)
    }
}

impl HedgeConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_HEDGES).contains(&self.max_hedges) {
            return Err(ConfigError::new(
                "max_hedges",
                self.max_hedges,
                "1 to 16 extra attempts",
            ));
        }
        if let HedgeDelay::Percentile(p) = &self.delay {
            if !(p.percentile.is_finite() && p.percentile > 0.0 && p.percentile < 1.0) {
                return Err(ConfigError::new(
                    "delay.percentile",
                    p.percentile,
                    "a quantile in (0, 1), e.g. 0.95",
                ));
            }
            if p.max < p.min {
                return Err(ConfigError::new(
                    "delay.max",
                    p.max,
                    "a maximum delay at least as long as the minimum delay",
                ));
            }
            if p.min_samples == 0 {
                return Err(ConfigError::new(
                    "delay.min_samples",
                    0,
                    "at least 1 sample",
                ));
            }
            if p.window.is_zero() {
                return Err(ConfigError::new(
                    "delay.window",
                    p.window,
                    "a window greater than zero",
                ));
            }
        }
        Ok(())
    }
}

/// Builds a [`Hedge`]; every value is checked by [`build`](Self::build).
///
/// ```
/// use ripcord::Hedge;
/// use std::time::Duration;
///
/// let hedge = Hedge::builder("search")
///     .percentile_delay(0.95, Duration::from_millis(50)) // p95 of recent calls
///     .delay_bounds(Duration::from_millis(5), Duration::from_secs(1))
///     .max_hedges(2)
///     .build()?;
/// # let _ = hedge;
///
/// let err = Hedge::builder("bad").max_hedges(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_hedges");
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct HedgeBuilder {
    pub(super) name: Name,
    pub(super) config: HedgeConfig,
    pub(super) clock: ClockHandle,
    pub(super) listeners: Vec<Listener>,
    pub(super) event_capacity: usize,
}

impl fmt::Debug for HedgeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("clock", &self.clock)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl HedgeBuilder {
    pub(super) fn new(name: &str) -> Self {
        HedgeBuilder {
            name: Name::new(name),
            config: HedgeConfig::default(),
            clock: ClockHandle::default(),
            listeners: Vec::new(),
            event_capacity: 1024,
        }
    }

    /// Replaces the whole data configuration (e.g. one read from a file),
    /// keeping the name, clock and callbacks.
    pub fn config(mut self, config: HedgeConfig) -> Self {
        self.config = config;
        self
    }

    /// Renames the hedge.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Name::new(name);
        self
    }

    /// Start a hedge after a fixed `delay` (default 100 ms).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.config.delay = HedgeDelay::Fixed(delay);
        self
    }

    /// Start a hedge after the `percentile` (in (0, 1)) of recent successful
    /// calls' latencies; `initial` until 20 latencies are known.
    pub fn percentile_delay(mut self, percentile: f64, initial: Duration) -> Self {
        self.config.delay = HedgeDelay::Percentile(PercentileDelay::new(percentile, initial));
        self
    }

    /// Bounds a percentile delay to `[min, max]` (call after
    /// [`percentile_delay`](Self::percentile_delay)).
    pub fn delay_bounds(mut self, min: Duration, max: Duration) -> Self {
        if let HedgeDelay::Percentile(p) = &mut self.config.delay {
            p.min = min;
            p.max = max;
        }
        self
    }

    /// Latencies a percentile delay needs before it is trusted (default 20;
    /// call after [`percentile_delay`](Self::percentile_delay)).
    pub fn min_samples(mut self, n: u32) -> Self {
        if let HedgeDelay::Percentile(p) = &mut self.config.delay {
            p.min_samples = n;
        }
        self
    }

    /// How long latencies are remembered: one to two `window`s (default 60 s;
    /// call after [`percentile_delay`](Self::percentile_delay)).
    pub fn window(mut self, window: Duration) -> Self {
        if let HedgeDelay::Percentile(p) = &mut self.config.delay {
            p.window = window;
        }
        self
    }

    /// Extra attempts at most, besides the original call (default 1).
    pub fn max_hedges(mut self, n: u32) -> Self {
        self.config.max_hedges = n;
        self
    }

    /// Start the next hedge at once when an attempt fails (default false).
    pub fn hedge_on_failure(mut self, on: bool) -> Self {
        self.config.hedge_on_failure = on;
        self
    }

    /// The clock latencies are measured with (default
    /// [`SystemClock`](crate::SystemClock)). Delays are waited on tokio's timer;
    /// use [`TokioClock`](crate::TokioClock) to keep both on tokio's (pausable)
    /// time in tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    crate::event::listener_methods!();

    /// Checks the configuration and builds the hedge.
    pub fn build(self) -> Result<Hedge, ConfigError> {
        self.config.validate()?;
        crate::event::check_capacity(self.event_capacity)?;
        let window = match &self.config.delay {
            HedgeDelay::Percentile(p) => p.window,
            HedgeDelay::Fixed(_) => Duration::from_secs(60),
        };
        Ok(Hedge {
            inner: Arc::new(Inner {
                name: self.name,
                histogram: matches!(self.config.delay, HedgeDelay::Percentile(_))
                    .then(|| LatencyHistogram::new(window)),
                config: self.config,
                clock: self.clock,
                events: Events::new(self.listeners, self.event_capacity),
            }),
        })
    }
}
