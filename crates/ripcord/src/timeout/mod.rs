//! The timeout policy: cancel a call that runs past its deadline.
//!
//! [`TimeoutPolicy::execute`] races the call against a deadline `timeout` from
//! now. If the deadline comes first, the call's future is **dropped** — which
//! cancels it at its current `.await` point and runs its destructors — before
//! `execute` returns [`Error::Timeout`] with the time the call ran.
//!
//! The type is called `TimeoutPolicy` so that it does not clash with the error
//! it produces, [`ripcord::Timeout`](crate::Timeout).
//!
//! # Deadlines
//!
//! A call runs inside a task-local **deadline** ([`current_deadline`]): the
//! earliest of its own deadline and every enclosing one. So an outer deadline
//! caps inner ones:
//!
//! - a timeout inside another timeout (or inside [`with_deadline`]) never waits
//!   past the outer deadline — `outer 1 s → inner 5 s` cancels after 1 s, and
//!   the error names whichever policy's timer fired (the inner one, when both
//!   fall at the same instant);
//! - a [`Retry`](crate::Retry) inside a timeout never schedules an attempt that
//!   would start at or after the deadline: `timeout(2 s) → retry` bounds the
//!   whole, `retry → timeout(500 ms)` bounds each attempt;
//! - [`execute_with_deadline`](TimeoutPolicy::execute_with_deadline) takes the
//!   caller's own deadline (e.g. from a request header) explicitly.
//!
//! Deadlines are [`tokio::time::Instant`]s, the time base of tokio's timers,
//! so they follow paused time in tests. The policy's [`Clock`](crate::Clock)
//! only measures the elapsed time it reports.
//!
//! A timeout is a failure for every other policy: a breaker counts
//! [`Error::Timeout`] against the dependency and a retry retries it (see
//! [`Retry::execute_composed`](crate::Retry::execute_composed)).
//!
//! ```
//! use ripcord::{Error, TimeoutPolicy, TokioClock};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let timeout = TimeoutPolicy::builder("search")
//!     .timeout(Duration::from_millis(800))
//!     .clock(TokioClock::new())
//!     .build()
//!     .unwrap();
//!
//! let slow = timeout
//!     .execute(|| async {
//!         tokio::time::sleep(Duration::from_secs(5)).await;
//!         Ok::<_, std::io::Error>("late")
//!     })
//!     .await;
//! let Err(Error::Timeout(t)) = slow else { panic!("{slow:?}") };
//! assert_eq!(t.elapsed(), Duration::from_millis(800));
//! # }
//! ```

mod config;
mod deadline;

pub use config::{TimeoutBuilder, TimeoutConfig, MAX_TIMEOUT};
pub use deadline::{current_deadline, with_deadline};
/// For the pipeline, which keeps its own deadlines.
pub(crate) use deadline::{earliest, scope, sync_scope};

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::ClockHandle;
use crate::event::{Event, EventKind, Events};
use crate::{Error, Name, Timeout};

/// A timeout policy. Cheap to clone: clones share one configuration and one
/// event stream.
///
/// See the [module docs](self) for deadlines and composition.
#[derive(Clone)]
pub struct TimeoutPolicy {
    inner: Arc<Inner>,
}

struct Inner {
    name: Name,
    timeout: Duration,
    clock: ClockHandle,
    events: Events,
}

impl TimeoutPolicy {
    /// Starts building a timeout named `name` (default: 30 s).
    pub fn builder(name: &str) -> TimeoutBuilder {
        TimeoutBuilder::new(name)
    }

    fn from_builder(b: TimeoutBuilder) -> Self {
        TimeoutPolicy {
            inner: Arc::new(Inner {
                name: b.name,
                timeout: b.config.timeout,
                clock: b.clock,
                events: Events::new(b.listeners, b.event_capacity),
            }),
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// The configured timeout.
    pub fn duration(&self) -> Duration {
        self.inner.timeout
    }

    /// Runs `f`, cancelling it at the deadline: `timeout` from now, or the
    /// enclosing deadline if that is earlier.
    ///
    /// Returns [`Error::Timeout`] if the deadline came first (the call's future
    /// has been dropped by then), [`Error::Inner`] if the call failed.
    pub async fn execute<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.run(None, f()).await {
            Ok(r) => r.map_err(Error::Inner),
            Err(t) => Err(Error::Timeout(t)),
        }
    }

    /// Like [`execute`](Self::execute), for a call that already returns a
    /// ripcord [`Error`] (an inner policy's): its errors pass through as they are.
    ///
    /// ```
    /// use ripcord::{Bulkhead, TimeoutPolicy};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let timeout = TimeoutPolicy::builder("t").timeout(Duration::from_secs(1)).build().unwrap();
    /// let bulkhead = Bulkhead::builder("b").max_concurrent(4).build().unwrap();
    /// let r = timeout
    ///     .execute_composed(|| bulkhead.execute(|| async { Ok::<_, std::io::Error>(7) }))
    ///     .await;
    /// assert_eq!(r.unwrap(), 7);
    /// # }
    /// ```
    pub async fn execute_composed<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
    {
        match self.run(None, f()).await {
            Ok(r) => r,
            Err(t) => Err(Error::Timeout(t)),
        }
    }

    /// Like [`execute`](Self::execute), with the caller's own deadline too:
    /// the call is cancelled at the earliest of `deadline`, `timeout` from now
    /// and the enclosing deadline.
    ///
    /// ```
    /// use ripcord::{Error, TimeoutPolicy, TokioClock};
    /// use tokio::time::{sleep, Duration, Instant};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let t = TimeoutPolicy::builder("t")
    ///     .timeout(Duration::from_secs(10))
    ///     .clock(TokioClock::new())
    ///     .build()
    ///     .unwrap();
    /// let deadline = Instant::now() + Duration::from_millis(300); // e.g. from a request header
    /// let r = t
    ///     .execute_with_deadline(deadline, || async {
    ///         sleep(Duration::from_secs(1)).await;
    ///         Ok::<_, std::io::Error>(())
    ///     })
    ///     .await;
    /// let Err(Error::Timeout(e)) = r else { panic!() };
    /// assert_eq!(e.elapsed(), Duration::from_millis(300));
    /// # }
    /// ```
    pub async fn execute_with_deadline<T, E, F, Fut>(
        &self,
        deadline: Instant,
        f: F,
    ) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.run(Some(deadline), f()).await {
            Ok(r) => r.map_err(Error::Inner),
            Err(t) => Err(Error::Timeout(t)),
        }
    }

    /// The deadline a call starting now gets: `timeout` from now, capped by
    /// `deadline` and by the enclosing task's deadline.
    pub fn deadline_from_now(&self, deadline: Option<Instant>) -> Instant {
        let own = Instant::now() + self.inner.timeout;
        let own = match deadline {
            Some(d) if d < own => d,
            _ => own,
        };
        deadline::earliest(own)
    }

    async fn run<R, Fut>(&self, deadline: Option<Instant>, fut: Fut) -> Result<R, Timeout>
    where
        Fut: Future<Output = R>,
    {
        let start = self.inner.clock.now_nanos();
        let at = self.deadline_from_now(deadline);
        // A statement of its own, so that the call's future is dropped here,
        // before the timeout is reported.
        let result = tokio::time::timeout_at(at, deadline::scope(at, fut)).await;
        match result {
            Ok(r) => Ok(r),
            Err(_) => {
                let elapsed = self.inner.clock.now_nanos().saturating_sub(start);
                Err(self.timed_out(Duration::from_nanos(elapsed)))
            }
        }
    }

    /// Reports a call cancelled at its deadline after running `elapsed`:
    /// emits the policy's [`TimedOut`](EventKind::TimedOut) event (to its
    /// listeners and to receivers from [`subscribe`](Self::subscribe)) and
    /// returns the [`Timeout`] error naming the policy.
    ///
    /// For middleware and composers that keep the deadline themselves (from
    /// [`deadline_from_now`](Self::deadline_from_now)) and race the call
    /// against it, instead of calling [`execute`](Self::execute): call it
    /// once the call has been cancelled.
    ///
    /// ```
    /// use ripcord::{EventKind, TimeoutPolicy};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let policy = TimeoutPolicy::builder("api").timeout(Duration::from_millis(5)).build().unwrap();
    /// let mut events = policy.subscribe();
    /// let deadline = policy.deadline_from_now(None);
    /// let call = tokio::time::sleep(Duration::from_secs(5));
    /// assert!(tokio::time::timeout_at(deadline, call).await.is_err());
    /// let err = policy.timed_out(Duration::from_millis(5));
    /// assert_eq!(err.name(), "api");
    /// let event = events.recv().await.unwrap();
    /// assert!(matches!(event.kind, EventKind::TimedOut { .. }));
    /// # }
    /// ```
    pub fn timed_out(&self, elapsed: Duration) -> Timeout {
        let inner = &*self.inner;
        if inner.events.active() {
            inner.events.emit(Event {
                name: inner.name.clone(),
                at: Duration::from_nanos(inner.clock.now_nanos()),
                epoch: 0,
                kind: EventKind::TimedOut { elapsed },
            });
        }
        Timeout {
            name: inner.name.clone(),
            elapsed,
        }
    }

    /// Receives every event from now on. A receiver that falls behind loses
    /// the oldest events; it never slows the policy.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }
}

impl fmt::Debug for TimeoutPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutPolicy")
            .field("name", &self.inner.name)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}
