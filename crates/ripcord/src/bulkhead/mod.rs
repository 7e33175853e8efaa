//! The bulkhead: a limit on concurrent calls, with a bounded wait queue.
//!
//! At most `max_concurrent` calls run at once. A call that finds every slot
//! taken waits in a queue of at most `max_queued` calls, for at most
//! `max_wait`; a call that finds the queue full is refused at once with
//! [`Error::BulkheadFull`] (its [`waited`](crate::BulkheadFull::waited) is
//! zero), and a call whose wait expires is refused with the time it waited.
//!
//! - **Fair:** slots go to waiters in arrival order. A freed slot is handed
//!   straight to the oldest waiter, so a newcomer never overtakes the queue.
//! - **Cancellation-safe:** a permit gives its slot back when dropped; a
//!   waiting call that is cancelled (its future dropped, say by an outer
//!   timeout) leaves the queue, and if a slot reached it meanwhile, passes
//!   the slot on.
//! - **Cheap:** while a slot is free, taking and giving it back are one
//!   compare-and-swap each on one atomic word; a lock is taken only to queue.
//!
//! Events: [`BulkheadAcquired`](crate::EventKind::BulkheadAcquired),
//! [`BulkheadReleased`](crate::EventKind::BulkheadReleased),
//! [`BulkheadFull`](crate::EventKind::BulkheadFull).
//!
//! ```
//! use ripcord::Bulkhead;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bulkhead = Bulkhead::builder("db")
//!     .max_concurrent(2)
//!     .max_queued(10)
//!     .max_wait(Duration::from_millis(250))
//!     .build()
//!     .unwrap();
//!
//! let rows = bulkhead.execute(|| async { Ok::<_, std::io::Error>(42) }).await;
//! assert_eq!(rows.unwrap(), 42);
//!
//! // The low-level API: a permit that gives its slot back when dropped.
//! let a = bulkhead.try_acquire().unwrap();
//! let b = bulkhead.try_acquire().unwrap();
//! assert_eq!(bulkhead.in_use(), 2);
//! assert!(bulkhead.try_acquire().is_err()); // try_acquire never waits
//! drop((a, b));
//! assert_eq!(bulkhead.in_use(), 0);
//! # }
//! ```

mod config;
mod permit;
mod state;

pub use config::{BulkheadBuilder, BulkheadConfig, MAX_BULKHEAD_SIZE};
pub use permit::{BulkheadPermit, OwnedBulkheadPermit};

use std::fmt;
#[cfg(feature = "tokio")]
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::ClockHandle;
use crate::event::{Event, EventKind, Events};
#[cfg(feature = "tokio")]
use crate::Error;
use crate::{BulkheadFull, Name};
use state::Slots;
#[cfg(feature = "tokio")]
use state::{Enqueued, Ticket};

/// A bulkhead. Cheap to clone: clones share the same slots and queue.
///
/// See the [module docs](self).
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    name: Name,
    max_concurrent: u32,
    max_queued: u32,
    max_wait: Option<Duration>,
    slots: Slots,
    clock: ClockHandle,
    events: Events,
}

impl Bulkhead {
    /// Starts building a bulkhead named `name` (default: 25 concurrent calls,
    /// no queue).
    pub fn builder(name: &str) -> BulkheadBuilder {
        BulkheadBuilder::new(name)
    }

    fn from_builder(b: BulkheadBuilder) -> Self {
        let c = b.config;
        Bulkhead {
            inner: Arc::new(Inner {
                name: b.name,
                max_concurrent: c.max_concurrent,
                max_queued: c.max_queued,
                max_wait: c.max_wait,
                slots: Slots::new(c.max_concurrent, c.max_queued),
                clock: b.clock,
                events: Events::new(b.listeners, b.event_capacity),
            }),
        }
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// Calls allowed to run at once.
    pub fn max_concurrent(&self) -> u32 {
        self.inner.max_concurrent
    }

    /// Calls allowed to wait.
    pub fn max_queued(&self) -> u32 {
        self.inner.max_queued
    }

    /// Slots taken now.
    pub fn in_use(&self) -> u32 {
        self.inner.slots.counts().0
    }

    /// Calls waiting now.
    pub fn queued(&self) -> u32 {
        self.inner.slots.counts().1
    }

    /// Takes a slot if one is free (and nobody is queued for it); never waits.
    #[inline]
    pub fn try_acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadFull> {
        self.inner.try_acquire()?;
        Ok(BulkheadPermit::new(&self.inner))
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that can move
    /// into a `'static` future or task.
    pub fn try_acquire_owned(&self) -> Result<OwnedBulkheadPermit, BulkheadFull> {
        self.inner.try_acquire()?;
        Ok(OwnedBulkheadPermit::new(self.inner.clone()))
    }

    /// Takes a slot, waiting in the queue (up to `max_wait`) if none is free
    /// and the queue has room (feature `tokio`).
    ///
    /// Cancellation-safe: dropping the returned future leaves the queue.
    #[cfg(feature = "tokio")]
    pub async fn acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadFull> {
        self.inner.acquire().await?;
        Ok(BulkheadPermit::new(&self.inner))
    }

    /// Like [`acquire`](Self::acquire), with a permit that can move into a
    /// `'static` future or task.
    #[cfg(feature = "tokio")]
    pub async fn acquire_owned(&self) -> Result<OwnedBulkheadPermit, BulkheadFull> {
        self.inner.acquire().await?;
        Ok(OwnedBulkheadPermit::new(self.inner.clone()))
    }

    /// Runs `f` in a slot (waiting for one as configured) and gives the slot
    /// back when it finishes or is cancelled. Returns [`Error::BulkheadFull`]
    /// without calling `f` if no slot came.
    #[cfg(feature = "tokio")]
    pub async fn execute<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _permit = self.acquire().await.map_err(Error::BulkheadFull)?;
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
        let _permit = self.acquire().await.map_err(Error::BulkheadFull)?;
        f().await
    }

    /// Receives every event from now on (feature `tokio`). A receiver that
    /// falls behind loses the oldest events; it never slows the bulkhead.
    #[cfg(feature = "tokio")]
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (in_use, queued) = self.inner.slots.counts();
        f.debug_struct("Bulkhead")
            .field("name", &self.inner.name)
            .field("max_concurrent", &self.inner.max_concurrent)
            .field("max_queued", &self.inner.max_queued)
            .field("max_wait", &self.inner.max_wait)
            .field("in_use", &in_use)
            .field("queued", &queued)
            .finish()
    }
}

impl Inner {
    #[inline]
    fn try_acquire(&self) -> Result<(), BulkheadFull> {
        if self.slots.try_acquire() {
            if self.events.active() {
                self.acquired(Duration::ZERO);
            }
            Ok(())
        } else {
            Err(self.full(Duration::ZERO))
        }
    }

    #[cfg(feature = "tokio")]
    async fn acquire(&self) -> Result<(), BulkheadFull> {
        if self.slots.try_acquire() {
            if self.events.active() {
                self.acquired(Duration::ZERO);
            }
            return Ok(());
        }
        if self.max_queued == 0 {
            return Err(self.full(Duration::ZERO));
        }
        let start = self.clock.now_nanos();
        let mut ticket = match self.slots.enqueue() {
            Enqueued::Acquired => {
                if self.events.active() {
                    self.acquired(Duration::ZERO);
                }
                return Ok(());
            }
            Enqueued::Full => return Err(self.full(Duration::ZERO)),
            Enqueued::Queued(id) => Ticket::new(&self.slots, id),
        };
        let granted = match self.max_wait {
            None => {
                (&mut ticket).await;
                true
            }
            Some(wait) => match tokio::time::timeout(wait, &mut ticket).await {
                Ok(()) => true,
                // A slot may have come at the last moment.
                Err(_) => ticket.give_up(),
            },
        };
        let waited = Duration::from_nanos(self.clock.now_nanos().saturating_sub(start));
        if granted {
            if self.events.active() {
                self.acquired(waited);
            }
            Ok(())
        } else {
            Err(self.full(waited))
        }
    }

    #[cold]
    fn acquired(&self, waited: Duration) {
        let (in_use, queued) = self.slots.counts();
        self.emit(EventKind::BulkheadAcquired {
            in_use,
            queued,
            waited,
        });
    }

    #[cold]
    fn full(&self, waited: Duration) -> BulkheadFull {
        if self.events.active() {
            self.emit(EventKind::BulkheadFull { waited });
        }
        BulkheadFull {
            name: self.name.clone(),
            max_concurrent: self.max_concurrent,
            waited,
        }
    }

    #[inline]
    pub(crate) fn release(&self) {
        self.slots.release();
        if self.events.active() {
            self.released();
        }
    }

    #[cold]
    fn released(&self) {
        let in_use = self.slots.counts().0;
        self.emit(EventKind::BulkheadReleased { in_use });
    }

    fn emit(&self, kind: EventKind) {
        self.events.emit(Event {
            name: self.name.clone(),
            at: Duration::from_nanos(self.clock.now_nanos()),
            epoch: 0,
            kind,
        });
    }
}
