//! The rate limiter: at most `rate` permits per `period`, in bursts of at most
//! `burst`, by GCRA.
//!
//! GCRA (the generic cell rate algorithm, as in the `governor` crate) is a
//! token bucket kept as one number, the theoretical arrival time; see
//! [`Gcra`]. Over any interval of length `t` starting from a full bucket, the
//! limiter admits at most `burst + ⌊t / T⌋` permits, where `T = period /
//! rate` — exactly that many when calls keep coming — whatever the number of
//! threads asking: the state is one atomic word updated by compare-and-swap.
//!
//! Two ways to be refused:
//!
//! - [`try_acquire`](RateLimiter::try_acquire) never waits: a permit now, or
//!   [`RateLimited`] with the time until the next one.
//! - [`acquire`](RateLimiter::acquire) and [`execute`](RateLimiter::execute)
//!   wait up to `max_wait` for a permit (a permit due within `max_wait` is
//!   reserved at once, and the call sleeps until it), else refuse at once —
//!   never after waiting. A cancelled wait gives its reservation back unless
//!   a later call reserved after it.
//!
//! Events: [`RateLimited`](crate::EventKind::RateLimited) on each refusal.
//!
//! ```
//! use ripcord::{ManualClock, RateLimiter};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let limiter = RateLimiter::builder("api")
//!     .rate(100, Duration::from_secs(1)) // one permit every 10 ms…
//!     .burst(10)                         // …or 10 at once after a quiet spell
//!     .clock(clock.clone())
//!     .build()?;
//!
//! for _ in 0..10 {
//!     limiter.try_acquire()?;
//! }
//! let refused = limiter.try_acquire().unwrap_err();
//! assert_eq!(refused.retry_after(), Duration::from_millis(10));
//!
//! clock.advance(Duration::from_millis(10));
//! assert!(limiter.try_acquire().is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod external;
mod state;

pub use config::{RateLimiterBuilder, RateLimiterConfig};
pub use external::{AcquireFuture, ExternalLimiter};
pub use state::{Decision, Gcra};

use std::fmt;
#[cfg(feature = "tokio")]
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::ClockHandle;
use crate::event::{Event, EventKind, Events};
#[cfg(feature = "tokio")]
use crate::Error;
use crate::{Name, RateLimited};
use state::Cell;

/// A rate limiter. Cheap to clone: clones share one state.
///
/// See the [module docs](self).
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    name: Name,
    gcra: Gcra,
    max_wait: u64,
    cell: Cell,
    clock: ClockHandle,
    events: Events,
}

impl RateLimiter {
    /// Starts building a limiter named `name` (default: 100 a second, bursts
    /// of 100, no waiting).
    pub fn builder(name: &str) -> RateLimiterBuilder {
        RateLimiterBuilder::new(name)
    }

    fn from_builder(b: RateLimiterBuilder) -> Self {
        let c = b.config;
        RateLimiter {
            inner: Arc::new(Inner {
                name: b.name,
                gcra: Gcra::new(c.rate, c.period, c.burst.unwrap_or(c.rate)),
                max_wait: u64::try_from(c.max_wait.as_nanos()).unwrap_or(u64::MAX),
                cell: Cell::new(),
                clock: b.clock,
                events: Events::new(b.listeners, b.event_capacity),
            }),
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// How long [`acquire`](Self::acquire) waits for a permit at most (zero:
    /// it never waits, like [`try_acquire`](Self::try_acquire)).
    pub fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.inner.max_wait)
    }

    /// Its GCRA parameters.
    pub fn gcra(&self) -> Gcra {
        self.inner.gcra
    }

    /// The theoretical arrival time now, in nanoseconds on the limiter's
    /// clock (its whole state; see [`Gcra`]).
    pub fn theoretical_arrival(&self) -> u64 {
        self.inner.cell.tat()
    }

    /// Takes a permit if one is available now; never waits.
    #[inline]
    pub fn try_acquire(&self) -> Result<(), RateLimited> {
        let inner = &*self.inner;
        let now = inner.clock.now_nanos();
        match inner.cell.decide(&inner.gcra, now, 0) {
            (Decision::Admit { .. }, _, _) => Ok(()),
            (Decision::Reject { retry_after }, _, _) => Err(inner.limited(now, retry_after)),
        }
    }

    /// Takes a permit, waiting up to `max_wait` for it (feature `tokio`).
    ///
    /// Cancellation-safe: dropping the future while it waits gives the
    /// reservation back, unless a later call has reserved after it.
    #[cfg(feature = "tokio")]
    pub async fn acquire(&self) -> Result<(), RateLimited> {
        let inner = &*self.inner;
        let now = inner.clock.now_nanos();
        match inner.cell.decide(&inner.gcra, now, inner.max_wait) {
            (Decision::Admit { wait: 0 }, _, _) => Ok(()),
            (Decision::Admit { wait }, before, after) => {
                let mut reservation = Reservation {
                    cell: &inner.cell,
                    before,
                    after,
                    armed: true,
                };
                tokio::time::sleep(Duration::from_nanos(wait)).await;
                reservation.armed = false;
                Ok(())
            }
            (Decision::Reject { retry_after }, _, _) => Err(inner.limited(now, retry_after)),
        }
    }

    /// Runs `f` once a permit is taken (waiting up to `max_wait`); returns
    /// [`Error::RateLimited`] without calling `f` otherwise.
    #[cfg(feature = "tokio")]
    pub async fn execute<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.acquire().await.map_err(Error::RateLimited)?;
        f().await.map_err(Error::Inner)
    }

    /// Like [`execute`](Self::execute), for a call that already returns a
    /// ripcord [`Error`] (an inner policy's): its errors pass through.
    #[cfg(feature = "tokio")]
    pub async fn execute_composed<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
    {
        self.acquire().await.map_err(Error::RateLimited)?;
        f().await
    }

    /// Receives every event from now on (feature `tokio`). A receiver that
    /// falls behind loses the oldest events; it never slows the limiter.
    #[cfg(feature = "tokio")]
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.inner.name)
            .field("gcra", &self.inner.gcra)
            .field("max_wait", &Duration::from_nanos(self.inner.max_wait))
            .finish()
    }
}

impl Inner {
    #[cold]
    fn limited(&self, now: u64, retry_after: u64) -> RateLimited {
        let retry_after = Duration::from_nanos(retry_after);
        if self.events.active() {
            self.events.emit(Event {
                name: self.name.clone(),
                at: Duration::from_nanos(now),
                epoch: 0,
                kind: EventKind::RateLimited { retry_after },
            });
        }
        RateLimited {
            name: self.name.clone(),
            retry_after,
        }
    }
}

/// A permit reserved for later; given back if the wait is cancelled.
#[cfg(feature = "tokio")]
struct Reservation<'a> {
    cell: &'a Cell,
    before: u64,
    after: u64,
    armed: bool,
}

#[cfg(feature = "tokio")]
impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cell.refund(self.before, self.after);
        }
    }
}
