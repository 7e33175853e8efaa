//! Time sources.
//!
//! Every time-based behaviour in ripcord reads time from a [`Clock`], never from
//! [`std::time::Instant`] directly, so tests (and users) can drive time by hand with
//! [`ManualClock`].
//!
//! | clock | cost of `now_nanos` | resolution |
//! |---|---|---|
//! | [`SystemClock`] (default) | one atomic load | 1 ms (a shared ticker thread) |
//! | [`PreciseClock`] | `Instant::now()` | the OS monotonic clock |
//! | [`ManualClock`] | one atomic load | whatever you advance it by |
//! | [`TokioClock`] | `tokio::time::Instant::now()` | follows tokio's (pausable) time |

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::sync::{AtomicU64, Ordering};

/// A monotonic source of time, in nanoseconds since an arbitrary origin.
///
/// Implementations must never go backwards and must be cheap: a breaker may read
/// the clock twice per call.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Nanoseconds elapsed since this clock's origin.
    fn now_nanos(&self) -> u64;

    /// [`now_nanos`](Clock::now_nanos) as a [`Duration`].
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }
}

/// The default clock: monotonic, and as cheap as one atomic load.
///
/// A single process-wide ticker thread (started on first use) stores the
/// monotonic time every millisecond; reading the clock loads that value. Its
/// resolution is therefore about 1 ms, which suits breaker windows, open
/// durations and slow-call thresholds (typically tens of milliseconds or more).
/// Use [`PreciseClock`] when you need sub-millisecond latencies.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    _private: (),
}

impl Default for SystemClock {
    /// Same as [`SystemClock::new`]: starts the ticker thread if needed.
    fn default() -> Self {
        SystemClock::new()
    }
}

#[cfg(not(loom))]
mod coarse {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, LazyLock, Once, OnceLock};
    use std::time::{Duration, Instant};

    pub(super) const TICK: Duration = Duration::from_millis(1);
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    /// The ticker's reading, shared with every [`ClockHandle`](super::ClockHandle)
    /// of the system clock (which reads it with one load).
    static NOW: LazyLock<Arc<AtomicU64>> = LazyLock::new(|| Arc::new(AtomicU64::new(0)));
    static START: Once = Once::new();

    fn origin() -> Instant {
        *ORIGIN.get_or_init(Instant::now)
    }

    fn store_now() {
        let nanos = u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX);
        NOW.fetch_max(nanos, Ordering::Relaxed);
    }

    pub(super) fn start() {
        START.call_once(|| {
            store_now();
            let spawned = std::thread::Builder::new()
                .name("ripcord-clock".into())
                .spawn(|| loop {
                    std::thread::sleep(TICK);
                    store_now();
                });
            if spawned.is_err() {
                // Without a ticker the clock would stand still; fall back to a
                // precise read on every call (see `now`).
                NO_TICKER.store(true, Ordering::Relaxed);
            }
        });
    }

    static NO_TICKER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    #[inline]
    pub(super) fn now() -> u64 {
        if NO_TICKER.load(Ordering::Relaxed) {
            store_now();
        }
        NOW.load(Ordering::Relaxed)
    }

    pub(super) fn precise() -> u64 {
        u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The ticker's cell (starting the ticker), or `None` if it could not start.
    pub(super) fn cell() -> Option<Arc<AtomicU64>> {
        start();
        (!NO_TICKER.load(Ordering::Relaxed)).then(|| Arc::clone(&NOW))
    }
}

#[cfg(loom)]
mod coarse {
    use std::time::Instant;
    pub(super) fn start() {}
    pub(super) fn now() -> u64 {
        precise()
    }
    pub(super) fn cell() -> Option<std::sync::Arc<crate::sync::AtomicU64>> {
        None
    }
    pub(super) fn precise() -> u64 {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        u64::try_from(ORIGIN.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl SystemClock {
    /// Returns the system clock, starting its ticker thread if it is not running yet.
    pub fn new() -> Self {
        coarse::start();
        SystemClock { _private: () }
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        coarse::now()
    }
}

/// A monotonic clock that reads [`std::time::Instant`] on every call.
///
/// Exact, but each read costs a clock system call or vDSO read (tens of
/// nanoseconds on virtual machines). It shares its origin with [`SystemClock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PreciseClock {
    _private: (),
}

impl PreciseClock {
    /// Returns the precise clock.
    pub fn new() -> Self {
        PreciseClock { _private: () }
    }
}

impl Clock for PreciseClock {
    fn now_nanos(&self) -> u64 {
        coarse::precise()
    }
}

/// A clock that reads tokio's time (`tokio::time::Instant`), feature `tokio`.
///
/// Under `tokio::time::pause()` (e.g. `#[tokio::test(start_paused = true)]`) it
/// stands still and moves only as tokio's virtual time advances, so policies
/// that both measure time (through a [`Clock`]) and wait (through tokio's
/// timers) stay consistent in tests that never sleep for real.
#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

#[cfg(feature = "tokio")]
impl TokioClock {
    /// A clock whose origin is tokio's "now".
    pub fn new() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

#[cfg(feature = "tokio")]
impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

#[cfg(feature = "tokio")]
impl Clock for TokioClock {
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to. Every clone shares the same time.
///
/// ```
/// use ripcord::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let view = clock.clone();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(view.now(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at zero.
    pub fn new() -> Self {
        ManualClock {
            nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves time forward by `by` (saturating at the largest representable time).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let mut cur = self.nanos.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(by);
            match self
                .nanos
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Sets the time to `to`, if that is not earlier than the current time
    /// (clocks never go backwards). Returns whether the time changed.
    pub fn set(&self, to: Duration) -> bool {
        let to = u64::try_from(to.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(to, Ordering::AcqRel) < to
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Acquire)
    }
}

/// The clock a policy holds: the built-in clocks are matched statically so the
/// hot path avoids a virtual call; any other [`Clock`] is held behind an `Arc`.
#[derive(Debug, Clone)]
pub(crate) enum ClockHandle {
    /// Read with one atomic load: the system clock's ticker or a manual clock.
    Cell(Arc<AtomicU64>),
    /// Any other clock, read through its trait object.
    Custom(Arc<dyn Clock>),
}

impl Default for ClockHandle {
    fn default() -> Self {
        ClockHandle::system()
    }
}

impl ClockHandle {
    /// The system clock: its ticker's cell, or (if the ticker could not
    /// start) the clock itself, which then reads the time precisely.
    fn system() -> Self {
        match coarse::cell() {
            Some(cell) => ClockHandle::Cell(cell),
            None => ClockHandle::Custom(Arc::new(SystemClock { _private: () })),
        }
    }

    pub(crate) fn from_clock<C: Clock>(clock: C) -> Self {
        let any: &dyn Any = &clock;
        if any.is::<SystemClock>() {
            ClockHandle::system()
        } else if let Some(m) = any.downcast_ref::<ManualClock>() {
            ClockHandle::Cell(m.nanos.clone())
        } else {
            ClockHandle::Custom(Arc::new(clock))
        }
    }

    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        match self {
            ClockHandle::Cell(cell) => cell.load(Ordering::Acquire),
            ClockHandle::Custom(c) => c.now_nanos(),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_and_monotonic() {
        let c = ManualClock::new();
        let d = c.clone();
        c.advance(Duration::from_millis(10));
        assert_eq!(d.now(), Duration::from_millis(10));
        assert!(!c.set(Duration::from_millis(5)), "must not go backwards");
        assert_eq!(c.now(), Duration::from_millis(10));
        assert!(c.set(Duration::from_millis(20)));
        assert_eq!(d.now_nanos(), 20_000_000);
        c.advance(Duration::MAX);
        assert_eq!(c.now_nanos(), u64::MAX);
    }

    #[test]
    fn handle_dispatches_to_the_given_clock() {
        let m = ManualClock::new();
        let h = ClockHandle::from_clock(m.clone());
        m.advance(Duration::from_secs(3));
        assert_eq!(h.now_nanos(), 3_000_000_000);
        assert!(matches!(
            ClockHandle::from_clock(SystemClock::new()),
            ClockHandle::Cell(_)
        ));
        assert!(matches!(
            ClockHandle::from_clock(PreciseClock::new()),
            ClockHandle::Custom(_)
        ));
    }

    #[test]
    fn system_clock_ticks() {
        let c = SystemClock::new();
        let a = c.now_nanos();
        let p = PreciseClock::new();
        let pa = p.now_nanos();
        // Wait on the precise clock (no sleep needed for correctness, only to see a tick).
        while p.now_nanos() < pa + 20_000_000 {
            std::thread::yield_now();
        }
        assert!(c.now_nanos() > a);
    }
}
