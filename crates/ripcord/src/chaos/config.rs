//! The data of a fault-injection policy, its validation and its builder.

use std::fmt;
use std::time::Duration;

use super::Chaos;
use crate::clock::ClockHandle;
use crate::event::Listener;
use crate::{Clock, ConfigError, Name, Outcome};

/// The longest latency a fault may inject, and the longest expiry: one day.
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The largest [`scale`](Chaos::set_scale) accepted.
pub const MAX_SCALE: f64 = 1_000.0;

/// How long an injected delay lasts.
///
/// Deserializable (feature `serde`) from a duration (`"1500ms"`: fixed), a
/// table `{ min = "100ms", max = "2s" }` (uniform) or a table
/// `{ mean = "200ms", max = "2s" }` (exponential, cut at `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniformly distributed between `min` and `max` (both included).
    Uniform {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// Exponentially distributed with this mean — most delays short, a few
    /// long, like a queue — and never longer than `max`.
    Exponential {
        /// The mean of the distribution before the cut.
        mean: Duration,
        /// The longest delay (longer draws are cut to it).
        max: Duration,
    },
}

impl Latency {
    /// A fixed delay.
    pub const fn fixed(delay: Duration) -> Latency {
        Latency::Fixed(delay)
    }

    /// A delay uniformly distributed in `[min, max]`.
    pub const fn uniform(min: Duration, max: Duration) -> Latency {
        Latency::Uniform { min, max }
    }

    /// An exponentially distributed delay of mean `mean`, cut at `max`.
    pub const fn exponential(mean: Duration, max: Duration) -> Latency {
        Latency::Exponential { mean, max }
    }

    /// The longest delay it can give.
    pub fn max(&self) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { max, .. } | Latency::Exponential { max, .. } => max,
        }
    }

    /// The delay for a uniform draw `u` in `[0, 1)`.
    pub(super) fn sample(&self, u: f64) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let span = (max - min).as_nanos() as f64;
                // `u < 1`, so `span + 1` keeps `max` reachable and never passes it.
                let off = ((span + 1.0) * u).floor().min(span);
                min + Duration::from_nanos(off as u64)
            }
            Latency::Exponential { mean, max } => {
                let d = -(mean.as_nanos() as f64) * (1.0 - u).ln();
                Duration::from_nanos(d.min(max.as_nanos() as f64) as u64)
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ok = match *self {
            Latency::Fixed(d) => d <= MAX_FAULT_DURATION,
            Latency::Uniform { min, max } => min <= max && max <= MAX_FAULT_DURATION,
            Latency::Exponential { mean, max } => {
                !mean.is_zero() && mean <= max && max <= MAX_FAULT_DURATION
            }
        };
        if ok {
            Ok(())
        } else {
            Err(ConfigError::new(
                "latency",
                self,
                "at most one day; for a uniform latency min <= max, for an exponential one \
                 a mean greater than zero and at most max",
            ))
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::Fixed(d) => write!(f, "{d:?}"),
            Latency::Uniform { min, max } => write!(f, "{min:?}..={max:?}"),
            Latency::Exponential { mean, max } => write!(f, "exp(mean {mean:?}, max {max:?})"),
        }
    }
}

/// Written in the forms it is read from: a duration, or a table.
#[cfg(feature = "serde")]
impl serde::Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let text = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            Latency::Fixed(d) => s.serialize_str(&text(d)),
            Latency::Uniform { min, max } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("min", &text(min))?;
                m.serialize_entry("max", &text(max))?;
                m.end()
            }
            Latency::Exponential { mean, max } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("mean", &text(mean))?;
                m.serialize_entry("max", &text(max))?;
                m.end()
            }
        }
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(default, with = "crate::duration::option")]
            min: Option<Duration>,
            #[serde(default, with = "crate::duration::option")]
            max: Option<Duration>,
            #[serde(default, with = "crate::duration::option")]
            mean: Option<Duration>,
        }

        struct Either;

        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = Latency;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration such as \"1500ms\", `{ min = \"100ms\", max = \"2s\" }` or \
                     `{ mean = \"200ms\", max = \"2s\" }`",
                )
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Latency, E> {
                crate::duration::deserialize(serde::de::value::StrDeserializer::<E>::new(v))
                    .map(Latency::Fixed)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Latency, A::Error> {
                use serde::de::Error as _;
                let t: Table = serde::Deserialize::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                match (t.min, t.mean, t.max) {
                    (Some(min), None, Some(max)) => Ok(Latency::Uniform { min, max }),
                    (None, Some(mean), Some(max)) => Ok(Latency::Exponential { mean, max }),
                    _ => Err(A::Error::custom(
                        "a latency table takes `min` and `max` (uniform) or `mean` and `max` \
                         (exponential)",
                    )),
                }
            }
        }

        d.deserialize_any(Either)
    }
}

/// The data part of a fault-injection policy's configuration; every rate is
/// a probability per call, in `[0, 1]`.
///
/// A call draws at most one **fault** — `abort`, `error`, `reset`, `stall` or
/// a forced `outcome` — so their rates add up to at most 1; the `latency` is
/// drawn on its own, before the fault (a call may be delayed, then aborted).
///
/// ```toml
/// [chaos]
/// latency_rate = 0.2
/// latency = "1500ms"            # or { min = "100ms", max = "2s" }, { mean = "200ms", max = "2s" }
/// abort_rate = 0.1              # the call is not made: an injected error
/// abort_status = 503            # the status an HTTP or gRPC layer answers with
/// seed = 7                      # the same calls are hit on every run
/// expires_after = "10m"         # switches itself off
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ChaosConfig {
    /// Whether it injects anything (default `true`; switch it at runtime with
    /// [`Chaos::enable`] and [`Chaos::disable`]).
    pub enabled: bool,
    /// Seed of the draws: the same seed hits the same calls (by their order)
    /// on every run. Default: a seed from entropy.
    pub seed: Option<u64>,
    /// Switches itself off this long after it is built (or enabled). At most
    /// one day.
    #[cfg_attr(feature = "serde", serde(with = "crate::duration::option"))]
    pub expires_after: Option<Duration>,
    /// Share of calls delayed by [`latency`](Self::latency).
    pub latency_rate: f64,
    /// The delay of a delayed call (required when `latency_rate` > 0).
    pub latency: Option<Latency>,
    /// Share of calls not made: the caller gets [`Error::Injected`](crate::Error::Injected).
    pub abort_rate: f64,
    /// The status an HTTP (100–599) or gRPC (1–16) layer answers an abort
    /// with; `None`: 503 for HTTP, `UNAVAILABLE` for gRPC.
    pub abort_status: Option<u16>,
    /// Share of calls not made that return the caller's own error (see
    /// [`PipelineBuilder::chaos_error`](crate::PipelineBuilder::chaos_error);
    /// without one, an [`Error::Injected`](crate::Error::Injected)).
    pub error_rate: f64,
    /// Share of calls whose connection is reset (HTTP and gRPC layers; an
    /// [`Error::Injected`](crate::Error::Injected) elsewhere).
    pub reset_rate: f64,
    /// Share of calls that never complete: an HTTP response's body stalls
    /// after its head; elsewhere the call waits until a deadline cuts it off.
    pub stall_rate: f64,
    /// Share of calls that run, but whose outcome the breakers outside record
    /// as [`outcome`](Self::outcome).
    pub outcome_rate: f64,
    /// The outcome forced on those calls (default: failure).
    pub outcome: Outcome,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            enabled: true,
            seed: None,
            expires_after: None,
            latency_rate: 0.0,
            latency: None,
            abort_rate: 0.0,
            abort_status: None,
            error_rate: 0.0,
            reset_rate: 0.0,
            stall_rate: 0.0,
            outcome_rate: 0.0,
            outcome: Outcome::Failure,
        }
    }
}

fn rate(field: &'static str, r: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&r) {
        Ok(())
    } else {
        Err(ConfigError::new(field, r, "a probability in [0, 1]"))
    }
}

impl ChaosConfig {
    /// The fault rates, in the order a draw tries them.
    pub(super) fn fault_rates(&self) -> [f64; 5] {
        [
            self.abort_rate,
            self.error_rate,
            self.reset_rate,
            self.stall_rate,
            self.outcome_rate,
        ]
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        rate("latency_rate", self.latency_rate)?;
        rate("abort_rate", self.abort_rate)?;
        rate("error_rate", self.error_rate)?;
        rate("reset_rate", self.reset_rate)?;
        rate("stall_rate", self.stall_rate)?;
        rate("outcome_rate", self.outcome_rate)?;
        let sum: f64 = self.fault_rates().iter().sum();
        if sum > 1.0 + 1e-9 {
            return Err(ConfigError::new(
                "abort_rate",
                sum,
                "abort, error, reset, stall and outcome rates that add up to at most 1 \
                 (a call draws one fault at most)",
            ));
        }
        match self.latency {
            Some(l) => l.validate()?,
            None if self.latency_rate > 0.0 => {
                return Err(ConfigError::new(
                    "latency",
                    self.latency,
                    "a latency (e.g. \"500ms\") when latency_rate is above zero",
                ))
            }
            None => {}
        }
        if let Some(s) = self.abort_status {
            if !(1..=599).contains(&s) {
                return Err(ConfigError::new(
                    "abort_status",
                    s,
                    "an HTTP status (100–599) or a gRPC code (1–16)",
                ));
            }
        }
        if let Some(e) = self.expires_after {
            if e.is_zero() || e > MAX_FAULT_DURATION {
                return Err(ConfigError::new(
                    "expires_after",
                    e,
                    "a duration greater than zero and at most one day",
                ));
            }
        }
        Ok(())
    }

    /// Whether it injects anything when enabled (some rate above zero).
    pub fn injects(&self) -> bool {
        self.latency_rate > 0.0 || self.fault_rates().iter().any(|r| *r > 0.0)
    }
}

/// Builds a [`Chaos`] policy; every value is checked by [`build`](Self::build).
///
/// ```
/// use ripcord::chaos::{Chaos, Latency};
/// use std::time::Duration;
///
/// let chaos = Chaos::builder("payments")
///     .latency(0.2, Latency::fixed(Duration::from_millis(1500)))
///     .abort(0.1)
///     .seed(7)
///     .build()?;
/// assert!(chaos.is_enabled());
///
/// let err = Chaos::builder("bad").abort(0.7).error(0.7).build().unwrap_err();
/// assert_eq!(err.field(), "abort_rate");
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
#[derive(Clone)]
pub struct ChaosBuilder {
    pub(super) name: Name,
    pub(super) config: ChaosConfig,
    pub(super) clock: ClockHandle,
    pub(super) listeners: Vec<Listener>,
    pub(super) event_capacity: usize,
}

impl fmt::Debug for ChaosBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("clock", &self.clock)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl ChaosBuilder {
    pub(super) fn new(name: &str) -> Self {
        ChaosBuilder {
            name: Name::new(name),
            config: ChaosConfig::default(),
            clock: ClockHandle::default(),
            listeners: Vec::new(),
            event_capacity: 1024,
        }
    }

    /// Replaces the whole data configuration (e.g. one read from a file),
    /// keeping the name, clock and callbacks.
    pub fn config(mut self, config: ChaosConfig) -> Self {
        self.config = config;
        self
    }

    /// Renames the policy.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Name::new(name);
        self
    }

    /// Delays a share `rate` of the calls by `latency`.
    pub fn latency(mut self, rate: f64, latency: Latency) -> Self {
        self.config.latency_rate = rate;
        self.config.latency = Some(latency);
        self
    }

    /// Aborts a share `rate` of the calls: they are not made, and the caller
    /// gets [`Error::Injected`](crate::Error::Injected).
    pub fn abort(mut self, rate: f64) -> Self {
        self.config.abort_rate = rate;
        self
    }

    /// The status HTTP and gRPC layers answer an abort with.
    pub fn abort_status(mut self, status: u16) -> Self {
        self.config.abort_status = Some(status);
        self
    }

    /// Fails a share `rate` of the calls with the caller's own error, without
    /// making them (see [`ChaosConfig::error_rate`]).
    pub fn error(mut self, rate: f64) -> Self {
        self.config.error_rate = rate;
        self
    }

    /// Resets the connection of a share `rate` of the calls (HTTP and gRPC).
    pub fn reset(mut self, rate: f64) -> Self {
        self.config.reset_rate = rate;
        self
    }

    /// Stalls a share `rate` of the calls (see [`ChaosConfig::stall_rate`]).
    pub fn stall(mut self, rate: f64) -> Self {
        self.config.stall_rate = rate;
        self
    }

    /// Makes the breakers outside record `outcome` for a share `rate` of the
    /// calls, which run as usual.
    pub fn outcome(mut self, rate: f64, outcome: Outcome) -> Self {
        self.config.outcome_rate = rate;
        self.config.outcome = outcome;
        self
    }

    /// Seeds the draws: the same seed hits the same calls on every run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Whether it starts enabled (default `true`).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.config.enabled = enabled;
        self
    }

    /// Switches itself off `after` this long.
    pub fn expires_after(mut self, after: Duration) -> Self {
        self.config.expires_after = Some(after);
        self
    }

    /// The clock its expiry is kept on (default
    /// [`SystemClock`](crate::SystemClock)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    crate::event::listener_methods!();

    /// Checks the configuration and builds the policy.
    pub fn build(self) -> Result<Chaos, ConfigError> {
        self.config.validate()?;
        crate::event::check_capacity(self.event_capacity)?;
        Ok(Chaos::from_builder(self))
    }
}
