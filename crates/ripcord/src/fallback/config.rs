//! Building and validating a fallback chain.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::{Fallback, Inner, Predicate, Step};
use crate::clock::ClockHandle;
use crate::event::{Events, Listener};
use crate::{Clock, ConfigError, Error, Name};

/// Which errors make the fallback chain run: the data part of a fallback's
/// configuration (the chain itself is code). Deserializable (feature `serde`):
///
/// ```toml
/// on_rejected = true   # the circuit breaker refused the call
/// on_refused = false   # a bulkhead or rate limiter refused it
/// on_failure = true    # the call ran and failed, or timed out
/// ```
///
/// Every trigger is on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct FallbackConfig {
    /// Run the chain when a circuit breaker refused the call
    /// ([`Error::Rejected`]).
    pub on_rejected: bool,
    /// Run the chain when a bulkhead or a rate limiter refused the call
    /// ([`Error::BulkheadFull`], [`Error::RateLimited`]).
    pub on_refused: bool,
    /// Run the chain when the call ran and failed ([`Error::Inner`]), timed
    /// out ([`Error::Timeout`]), or an inner fallback chain failed.
    pub on_failure: bool,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            on_rejected: true,
            on_refused: true,
            on_failure: true,
        }
    }
}

impl FallbackConfig {
    /// Checks the configuration: at least one trigger must be on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.on_rejected || self.on_refused || self.on_failure) {
            return Err(ConfigError::new(
                "on_failure",
                false,
                "at least one trigger on (on_rejected, on_refused or on_failure)",
            ));
        }
        Ok(())
    }

    /// Whether an error of this kind triggers the chain.
    pub(crate) fn triggers<E>(&self, error: &Error<E>) -> bool {
        match error {
            Error::Rejected(_) => self.on_rejected,
            Error::BulkheadFull(_) | Error::RateLimited(_) => self.on_refused,
            _ => self.on_failure,
        }
    }
}

/// Builds a [`Fallback`]; checked by [`build`](Self::build).
///
/// ```
/// use ripcord::Fallback;
///
/// let prices: Fallback<u32, std::io::Error> = Fallback::builder("prices")
///     .on_refused(false)                               // shed load stays shed
///     .then(|_err| async { Err(std::io::Error::other("cache miss")) }) // e.g. a cache
///     .then_value(0)                                   // then a static default
///     .build()?;
/// # let _ = prices;
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
pub struct FallbackBuilder<T, E> {
    pub(super) name: Name,
    pub(super) config: FallbackConfig,
    pub(super) when: Option<Predicate<E>>,
    pub(super) steps: Vec<Step<T, E>>,
    pub(super) clock: ClockHandle,
    pub(super) listeners: Vec<Listener>,
    pub(super) event_capacity: usize,
}

impl<T, E> Clone for FallbackBuilder<T, E> {
    fn clone(&self) -> Self {
        FallbackBuilder {
            name: self.name.clone(),
            config: self.config,
            when: self.when.clone(),
            steps: self.steps.clone(),
            clock: self.clock.clone(),
            listeners: self.listeners.clone(),
            event_capacity: self.event_capacity,
        }
    }
}

impl<T, E> fmt::Debug for FallbackBuilder<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("when", &self.when.is_some())
            .field("steps", &self.steps.len())
            .finish_non_exhaustive()
    }
}

impl<T, E> FallbackBuilder<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    pub(super) fn new(name: &str) -> Self {
        FallbackBuilder {
            name: Name::new(name),
            config: FallbackConfig::default(),
            when: None,
            steps: Vec::new(),
            clock: ClockHandle::default(),
            listeners: Vec::new(),
            event_capacity: 1024,
        }
    }

    /// Replaces the triggers (e.g. with ones read from a file), keeping the
    /// name, chain, clock and callbacks.
    pub fn config(mut self, config: FallbackConfig) -> Self {
        self.config = config;
        self
    }

    /// Renames the fallback.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Name::new(name);
        self
    }

    /// Run the chain when a circuit breaker refused the call (default on).
    pub fn on_rejected(mut self, on: bool) -> Self {
        self.config.on_rejected = on;
        self
    }

    /// Run the chain when a bulkhead or rate limiter refused the call (default
    /// on).
    pub fn on_refused(mut self, on: bool) -> Self {
        self.config.on_refused = on;
        self
    }

    /// Run the chain when the call failed or timed out (default on).
    pub fn on_failure(mut self, on: bool) -> Self {
        self.config.on_failure = on;
        self
    }

    /// Run the chain exactly for the errors `predicate` accepts, instead of
    /// the three triggers above.
    pub fn when(mut self, predicate: impl Fn(&Error<E>) -> bool + Send + Sync + 'static) -> Self {
        self.when = Some(Arc::new(predicate));
        self
    }

    /// Adds an asynchronous fallback to the end of the chain. It receives the
    /// primary error; an `Err` passes on to the next fallback.
    pub fn then<F, Fut>(mut self, fallback: F) -> Self
    where
        F: Fn(&Error<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.steps
            .push(Step::Async(Arc::new(move |e| Box::pin(fallback(e)))));
        self
    }

    /// Adds a synchronous fallback (e.g. an in-memory cache lookup) to the end
    /// of the chain.
    pub fn then_sync(
        mut self,
        fallback: impl Fn(&Error<E>) -> Result<T, E> + Send + Sync + 'static,
    ) -> Self {
        self.steps.push(Step::Sync(Arc::new(fallback)));
        self
    }

    /// Adds a static default to the end of the chain; it never fails, so any
    /// fallback after it is never tried.
    pub fn then_value(mut self, value: T) -> Self
    where
        T: Clone + Sync,
    {
        self.steps
            .push(Step::Value(Arc::new(move || value.clone())));
        self
    }

    /// The clock for event timestamps (default [`SystemClock`](crate::SystemClock)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    crate::event::listener_methods!();

    /// Checks the configuration and builds the fallback.
    pub fn build(self) -> Result<Fallback<T, E>, ConfigError> {
        if self.when.is_none() {
            self.config.validate()?;
        }
        if self.steps.is_empty() {
            return Err(ConfigError::new(
                "then",
                0,
                "at least one fallback in the chain",
            ));
        }
        crate::event::check_capacity(self.event_capacity)?;
        Ok(Fallback {
            inner: Arc::new(Inner {
                name: self.name,
                config: self.config,
                when: self.when,
                steps: self.steps,
                clock: self.clock,
                events: Events::new(self.listeners, self.event_capacity),
            }),
        })
    }
}
