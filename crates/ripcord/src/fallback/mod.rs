//! Fallback: when a call fails or is refused, answer from somewhere else.
//!
//! A [`Fallback`] holds a **chain** of fallbacks tried in order — say, a cache
//! lookup, then a static default. Each may fail and pass on to the next; the
//! first that answers wins and emits
//! [`FallbackUsed`](crate::EventKind::FallbackUsed) with its index. When every
//! one fails, the result is [`Error::Fallback`] holding a [`FallbackError`]
//! that keeps the whole chain of causes — the primary error, then each
//! fallback's error — and [`FallbackFailed`](crate::EventKind::FallbackFailed)
//! is emitted.
//!
//! # Triggers
//!
//! Which errors run the chain is selectable, each on or off (all on by default):
//!
//! | trigger | errors |
//! |---|---|
//! | `on_rejected` | [`Error::Rejected`]: a circuit breaker refused the call |
//! | `on_refused` | [`Error::BulkheadFull`], [`Error::RateLimited`]: load shedding |
//! | `on_failure` | [`Error::Inner`], [`Error::Timeout`], a failed inner [`Error::Fallback`] |
//!
//! or [`when`](FallbackBuilder::when) takes a predicate over the error instead.
//! Errors that do not trigger the chain are returned as they are.
//!
//! ```
//! use ripcord::Fallback;
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ripcord::ConfigError> {
//! let cache = Arc::new(Mutex::new(HashMap::from([("eur", 107_u32)])));
//! let c = cache.clone();
//! let rates: Fallback<u32, String> = Fallback::builder("fx-rates")
//!     .then_sync(move |_err| c.lock().unwrap().get("usd").copied().ok_or("cache miss".to_string()))
//!     .then_value(100)
//!     .build()?;
//!
//! // The call fails; the cache has no "usd", so the static default answers.
//! let rate = rates.execute(|| async { Err::<u32, _>("upstream down".to_string()) }).await;
//! assert_eq!(rate.unwrap(), 100);
//! # Ok(()) }
//! ```

mod config;
mod error;

pub use config::{FallbackBuilder, FallbackConfig};
pub use error::{Cause, FallbackError};

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::ClockHandle;
use crate::event::{Event, EventKind, Events};
use crate::{Error, Name};

type BoxFuture<R> = Pin<Box<dyn Future<Output = R> + Send>>;
type SyncStep<T, E> = Arc<dyn Fn(&Error<E>) -> Result<T, E> + Send + Sync>;
type AsyncStep<T, E> = Arc<dyn Fn(&Error<E>) -> BoxFuture<Result<T, E>> + Send + Sync>;
/// Which errors run the chain, when given as a predicate.
pub(crate) type Predicate<E> = Arc<dyn Fn(&Error<E>) -> bool + Send + Sync>;

/// One fallback of the chain.
pub(crate) enum Step<T, E> {
    Value(Arc<dyn Fn() -> T + Send + Sync>),
    Sync(SyncStep<T, E>),
    Async(AsyncStep<T, E>),
}

impl<T, E> Clone for Step<T, E> {
    fn clone(&self) -> Self {
        match self {
            Step::Value(f) => Step::Value(f.clone()),
            Step::Sync(f) => Step::Sync(f.clone()),
            Step::Async(f) => Step::Async(f.clone()),
        }
    }
}

/// A chain of fallbacks for calls returning `Result<T, E>`. Cheap to clone:
/// clones share one chain.
///
/// See the [module docs](self) for triggers and the error it returns.
pub struct Fallback<T, E> {
    inner: Arc<Inner<T, E>>,
}

struct Inner<T, E> {
    name: Name,
    config: FallbackConfig,
    when: Option<Predicate<E>>,
    steps: Vec<Step<T, E>>,
    clock: ClockHandle,
    events: Events,
}

impl<T, E> Clone for Fallback<T, E> {
    fn clone(&self) -> Self {
        Fallback {
            inner: self.inner.clone(),
        }
    }
}

impl<T, E> Fallback<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    /// Starts building a fallback chain named `name`.
    pub fn builder(name: &str) -> FallbackBuilder<T, E> {
        FallbackBuilder::new(name)
    }
}

impl<T, E> Fallback<T, E> {
    /// The fallback's name.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// The number of fallbacks in the chain.
    pub fn len(&self) -> usize {
        self.inner.steps.len()
    }

    /// Always false: a chain has at least one fallback.
    pub fn is_empty(&self) -> bool {
        self.inner.steps.is_empty()
    }

    /// Whether `error` runs the chain.
    pub fn handles(&self, error: &Error<E>) -> bool {
        match &self.inner.when {
            Some(p) => p(error),
            None => self.inner.config.triggers(error),
        }
    }

    /// Runs `f`; if it fails, runs the chain.
    pub async fn execute<F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.recover(f().await.map_err(Error::Inner)).await
    }

    /// Applies the chain to the result of a call made elsewhere (e.g. through
    /// other policies): an `Ok`, or an error the chain does not handle, is
    /// returned as it is.
    pub async fn recover(&self, result: Result<T, Error<E>>) -> Result<T, Error<E>> {
        match result {
            Ok(v) => Ok(v),
            Err(e) if !self.handles(&e) => Err(e),
            Err(e) => self.run_chain(e).await,
        }
    }

    async fn run_chain(&self, primary: Error<E>) -> Result<T, Error<E>> {
        let mut errors = Vec::new();
        for (index, step) in self.inner.steps.iter().enumerate() {
            let r = match step {
                Step::Value(v) => Ok(v()),
                Step::Sync(f) => f(&primary),
                Step::Async(f) => f(&primary).await,
            };
            match r {
                Ok(v) => {
                    self.emit(EventKind::FallbackUsed { index });
                    return Ok(v);
                }
                Err(e) => errors.push(e),
            }
        }
        self.emit(EventKind::FallbackFailed);
        Err(Error::Fallback(Box::new(FallbackError::new(
            self.inner.name.clone(),
            primary,
            errors,
        ))))
    }

    fn emit(&self, kind: EventKind) {
        let events = &self.inner.events;
        if events.active() {
            events.emit(Event {
                name: self.inner.name.clone(),
                at: Duration::from_nanos(self.inner.clock.now_nanos()),
                epoch: 0,
                kind,
            });
        }
    }

    /// Receives every event from now on (feature `tokio`).
    #[cfg(feature = "tokio")]
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }
}

impl<T, E> fmt::Debug for Fallback<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .field("when", &self.inner.when.is_some())
            .field("steps", &self.inner.steps.len())
            .finish()
    }
}
