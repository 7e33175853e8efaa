//! Building and validating a bulkhead.

use std::fmt;
use std::time::Duration;

use super::Bulkhead;
use crate::clock::ClockHandle;
use crate::event::Listener;
use crate::{Clock, ConfigError, Name};

/// The most concurrent calls (and the most queued calls) a bulkhead accepts.
pub const MAX_BULKHEAD_SIZE: u32 = 1_000_000;

/// The data part of a bulkhead's configuration. Deserializable (feature
/// `serde`):
///
/// ```toml
/// max_concurrent = 10
/// max_queued = 100
/// max_wait = "250ms"
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct BulkheadConfig {
    /// Calls allowed to run at once (1 to 1000000, default 25).
    pub max_concurrent: u32,
    /// Calls allowed to wait for a slot (0 to 1000000, default 0: a call that
    /// finds every slot taken is refused at once).
    pub max_queued: u32,
    /// How long a queued call waits before it is refused (default: until a
    /// slot frees or the call is cancelled).
    #[cfg_attr(feature = "serde", serde(with = "crate::duration::option"))]
    pub max_wait: Option<Duration>,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent: 25,
            max_queued: 0,
            max_wait: None,
        }
    }
}

impl BulkheadConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_BULKHEAD_SIZE).contains(&self.max_concurrent) {
            return Err(ConfigError::new(
                "max_concurrent",
                self.max_concurrent,
                "1 to 1000000 concurrent calls",
            ));
        }
        if self.max_queued > MAX_BULKHEAD_SIZE {
            return Err(ConfigError::new(
                "max_queued",
                self.max_queued,
                "0 to 1000000 queued calls",
            ));
        }
        if let Some(w) = self.max_wait {
            if w.is_zero() {
                return Err(ConfigError::new(
                    "max_wait",
                    w,
                    "a wait greater than zero (for no wait, set max_queued = 0)",
                ));
            }
        }
        Ok(())
    }
}

/// Builds a [`Bulkhead`]; every value is checked by [`build`](Self::build).
///
/// ```
/// use ripcord::Bulkhead;
/// use std::time::Duration;
///
/// let b = Bulkhead::builder("db")
///     .max_concurrent(10)
///     .max_queued(100)
///     .max_wait(Duration::from_millis(250))
///     .build()?;
/// assert_eq!(b.max_concurrent(), 10);
///
/// let err = Bulkhead::builder("bad").max_concurrent(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `max_concurrent` = 0: expected 1 to 1000000 concurrent calls");
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
#[derive(Clone)]
pub struct BulkheadBuilder {
    pub(super) name: Name,
    pub(super) config: BulkheadConfig,
    pub(super) clock: ClockHandle,
    pub(super) listeners: Vec<Listener>,
    pub(super) event_capacity: usize,
}

impl fmt::Debug for BulkheadBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("clock", &self.clock)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl BulkheadBuilder {
    pub(super) fn new(name: &str) -> Self {
        BulkheadBuilder {
            name: Name::new(name),
            config: BulkheadConfig::default(),
            clock: ClockHandle::default(),
            listeners: Vec::new(),
            event_capacity: 1024,
        }
    }

    /// Replaces the whole data configuration (e.g. one read from a file),
    /// keeping the name, clock and callbacks.
    pub fn config(mut self, config: BulkheadConfig) -> Self {
        self.config = config;
        self
    }

    /// Renames the bulkhead.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Name::new(name);
        self
    }

    /// Calls allowed to run at once (default 25).
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.config.max_concurrent = n;
        self
    }

    /// Calls allowed to wait for a slot, in arrival order (default 0).
    pub fn max_queued(mut self, n: u32) -> Self {
        self.config.max_queued = n;
        self
    }

    /// How long a queued call waits before it is refused (default: as long
    /// as it takes).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.config.max_wait = Some(wait);
        self
    }

    /// The clock that measures waits, for events and errors (default
    /// [`SystemClock`](crate::SystemClock)). The wait limit itself is kept by
    /// tokio's timer; under paused tokio time, use
    /// [`TokioClock`](crate::TokioClock) so both agree.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    crate::event::listener_methods!();

    /// Checks the configuration and builds the bulkhead.
    pub fn build(self) -> Result<Bulkhead, ConfigError> {
        self.config.validate()?;
        crate::event::check_capacity(self.event_capacity)?;
        Ok(Bulkhead::from_builder(self))
    }
}
