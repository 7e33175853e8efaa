//! Building and validating a timeout.

use std::fmt;
use std::time::Duration;

use super::TimeoutPolicy;
use crate::clock::ClockHandle;
use crate::event::Listener;
use crate::{Clock, ConfigError, Name};

/// The data part of a timeout's configuration. Deserializable (feature
/// `serde`) from a table or, for short, from the duration alone:
///
/// ```toml
/// timeout = "800ms"
/// ```
///
/// As a pipeline's policy, both forms mean the same:
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use ripcord::TimeoutConfig;
/// use std::time::Duration;
///
/// #[derive(serde::Deserialize)]
/// struct Policies { a: TimeoutConfig, b: TimeoutConfig }
///
/// let p: Policies = toml::from_str("a = { timeout = \"2s\" }\nb = \"2s\"").unwrap();
/// assert_eq!(p.a, p.b);
/// assert_eq!(p.b.timeout, Duration::from_secs(2));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutConfig {
    /// How long a call may run before it is cancelled (default 30 s; at most
    /// one year).
    pub timeout: Duration,
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for TimeoutConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The table form.
        #[derive(serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Table {
            #[serde(with = "crate::duration")]
            timeout: Duration,
        }

        impl Default for Table {
            fn default() -> Self {
                Table {
                    timeout: TimeoutConfig::default().timeout,
                }
            }
        }

        struct Either;

        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = TimeoutConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"800ms\", or a table `{ timeout = \"800ms\" }`")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TimeoutConfig, E> {
                let timeout =
                    crate::duration::deserialize(serde::de::value::StrDeserializer::<E>::new(v))?;
                Ok(TimeoutConfig { timeout })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TimeoutConfig, A::Error> {
                let t: Table = serde::Deserialize::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(TimeoutConfig { timeout: t.timeout })
            }
        }

        d.deserialize_any(Either)
    }
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            timeout: Duration::from_secs(30),
        }
    }
}

/// The longest timeout accepted: one year (longer ones overflow timers).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

impl TimeoutConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(ConfigError::new(
                "timeout",
                self.timeout,
                "a timeout greater than zero and at most one year",
            ));
        }
        Ok(())
    }
}

/// Builds a [`TimeoutPolicy`]; every value is checked by [`build`](Self::build).
///
/// ```
/// use ripcord::TimeoutPolicy;
/// use std::time::Duration;
///
/// let t = TimeoutPolicy::builder("search").timeout(Duration::from_millis(800)).build()?;
/// assert_eq!(t.duration(), Duration::from_millis(800));
///
/// let err = TimeoutPolicy::builder("bad").timeout(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.field(), "timeout");
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
#[derive(Clone)]
pub struct TimeoutBuilder {
    pub(super) name: Name,
    pub(super) config: TimeoutConfig,
    pub(super) clock: ClockHandle,
    pub(super) listeners: Vec<Listener>,
    pub(super) event_capacity: usize,
}

impl fmt::Debug for TimeoutBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("clock", &self.clock)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl TimeoutBuilder {
    pub(super) fn new(name: &str) -> Self {
        TimeoutBuilder {
            name: Name::new(name),
            config: TimeoutConfig::default(),
            clock: ClockHandle::default(),
            listeners: Vec::new(),
            event_capacity: 1024,
        }
    }

    /// Replaces the whole data configuration (e.g. one read from a file),
    /// keeping the name, clock and callbacks.
    pub fn config(mut self, config: TimeoutConfig) -> Self {
        self.config = config;
        self
    }

    /// Renames the policy.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Name::new(name);
        self
    }

    /// How long a call may run before it is cancelled (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// The clock that measures how long a cancelled call ran (default
    /// [`SystemClock`](crate::SystemClock)). The deadline itself is kept by
    /// tokio's timer; under paused tokio time, use
    /// [`TokioClock`](crate::TokioClock) so both agree.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    crate::event::listener_methods!();

    /// Checks the configuration and builds the policy.
    pub fn build(self) -> Result<TimeoutPolicy, ConfigError> {
        self.config.validate()?;
        crate::event::check_capacity(self.event_capacity)?;
        Ok(TimeoutPolicy::from_builder(self))
    }
}
