//! The circuit breaker.
//!
//! # States
//!
//! ```text
//!            trip rule holds                 open duration elapsed
//!  Closed ───────────────────────▶ Open ──────────────────────────▶ HalfOpen
//!    ▲                              ▲  (and recovery check passed)     │
//!    │ enough probes succeeded      │ a probe failed, or no verdict    │
//!    └──────────────────────────────┴──────────────────────────────────┘
//! ```
//!
//! plus three manual states: [`ForcedOpen`](State::ForcedOpen) (reject all),
//! [`Disabled`](State::Disabled) (allow all, record nothing) and
//! [`MetricsOnly`](State::MetricsOnly) (allow all, record, never trip). Every
//! transition bumps the breaker's **epoch**.
//!
//! # Trip rules
//!
//! Evaluated whenever a failure or a slow call is recorded while closed:
//!
//! - `failure_rate(r)`: the window's failure rate is at least `r`;
//! - `slow_calls(d, r)`: at least `r` of the window's calls took `d` or longer;
//! - `consecutive_failures(n)`: `n` failures in a row;
//! - `trip_when(f)`: a predicate over [`WindowStats`] (counts, rates, latency
//!   quantiles).
//!
//! Rate rules and the custom rule apply only once the window holds at least
//! `minimum_calls` calls. With no rule configured, the breaker trips at a 50 %
//! failure rate. Ignored outcomes are not counted at all.
//!
//! # Half-open
//!
//! When the open duration (from the [`Backoff`], by number of consecutive
//! openings) has elapsed, the next call moves the breaker to half-open
//! (or a timer does, with `eager_transitions`). At most `half_open_calls`
//! probes are admitted; it closes after `half_open_successes` successes and
//! re-opens once that has become impossible (by default: on the first failed
//! or slow probe), or when no verdict came within `max_half_open_wait`. A probe
//! dropped without a verdict frees its slot.
//!
//! # Epochs
//!
//! A [`Permit`] belongs to the epoch that admitted it. If the breaker moved on
//! before the call finished, its outcome is reported as a
//! [`StaleOutcome`](crate::EventKind::StaleOutcome) event and otherwise
//! ignored: it never counts in the new state's window, never decides a
//! half-open verdict, and never frees a probe slot it did not take.
//!
//! # Cost
//!
//! Deciding a call reads one atomic; recording a success in a closed breaker
//! writes only to the calling core's stripe of the window (no lock, no shared
//! write, no allocation). Locks are taken only to change state, and never
//! while listeners run.

mod acquire;
mod config;
#[cfg(feature = "tokio")]
mod fleet;
pub(crate) mod gate;
mod permit;
mod record;
mod recovery;
mod state;
mod transition;
mod window;

pub use config::{
    CircuitBreakerBuilder, CircuitBreakerConfig, SlowCalls, TripRule, MAX_HALF_OPEN_CALLS,
};
pub use permit::{OwnedPermit, Permit};
pub use state::State;
pub use window::{Window, WindowStats, MAX_BUCKETS, MAX_COUNT_WINDOW};

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::ClockHandle;
#[cfg(feature = "tokio")]
use crate::event::Event;
use crate::event::Events;
use crate::random::SplitMix64;
use crate::sync::{lock, AtomicU64, CachePadded, Mutex, Ordering};
use crate::{Backoff, Classify, Error, ErrorsAsFailures, Name, Rejected};
use record::Rules;
use state::{word, HalfOpenCounts};
use window::WindowState;

/// A circuit breaker. Cheap to clone: clones share one state.
///
/// ```
/// use ripcord::{CircuitBreaker, Error, ManualClock, State};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = ManualClock::new();
/// let breaker = CircuitBreaker::builder("inventory")
///     .consecutive_failures(3)
///     .open_for(ripcord::Backoff::fixed(Duration::from_secs(10)))
///     .half_open_calls(1)
///     .clock(clock.clone())
///     .build()
///     .unwrap();
///
/// for _ in 0..3 {
///     let r: Result<(), Error<&str>> = breaker.call(|| async { Err("down") }).await;
///     assert!(matches!(r, Err(Error::Inner("down"))));
/// }
/// assert_eq!(breaker.state(), State::Open);
///
/// // Rejected at once, with the time until the next probe.
/// let Err(Error::Rejected(r)) = breaker.call(|| async { Ok::<_, &str>(()) }).await else { panic!() };
/// assert_eq!(r.retry_after(), Duration::from_secs(10));
///
/// // After the open duration, one probe goes through and closes the breaker.
/// clock.advance(Duration::from_secs(10));
/// assert!(breaker.call(|| async { Ok::<_, &str>(()) }).await.is_ok());
/// assert_eq!(breaker.state(), State::Closed);
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// A weak handle to this breaker, for background tasks.
    #[cfg(feature = "tokio")]
    me: std::sync::Weak<Inner>,
    name: Name,
    rules: Rules,
    /// Calls at or above this many nanoseconds are slow (`u64::MAX`: no rule).
    slow_nanos: u64,
    /// Whether a call needs the clock read at its start and end.
    timed: bool,
    half_open_calls: u16,
    half_open_successes: u16,
    max_half_open_wait: u64,
    ramp_up: u64,
    #[cfg(feature = "tokio")]
    eager: bool,
    backoff: Backoff,
    pub(crate) clock: ClockHandle,

    /// `epoch << 4 | ramp << 3 | state`: the only word the hot path reads.
    state: CachePadded<AtomicU64>,
    /// Consecutive failures while closed: `epoch(32) << 32 | count(32)`, so a
    /// permit of an older epoch can neither add to nor clear the count.
    consecutive: CachePadded<AtomicU64>,
    /// Half-open probe counters, tagged with the epoch.
    half_open: CachePadded<AtomicU64>,
    /// Written before the state word is published, read after it.
    timing: Timing,
    window: WindowState,

    control: Mutex<Control>,
    events: Events,
    recovery: Option<recovery::RecoveryCheck>,
    gate: Option<Arc<gate::OpenGate>>,
    /// The link to a fleet's shared state, if any.
    #[cfg(feature = "tokio")]
    link: Option<crate::store::Link>,
}

#[derive(Default)]
struct Timing {
    /// When an open breaker may admit probes (clock nanos).
    open_until: AtomicU64,
    /// When a half-open breaker gives up waiting for a verdict.
    half_open_deadline: AtomicU64,
    /// Ramp-up after recovery: start and end (clock nanos).
    ramp_start: AtomicU64,
    ramp_end: AtomicU64,
    ramp_seq: AtomicU64,
    /// Epoch (+1) in which the recovery check passed; 0 if none.
    recovery_passed: AtomicU64,
    /// The latest epoch that counts failures (Closed or MetricsOnly).
    counting_epoch: AtomicU64,
}

/// State changed only under the control lock.
struct Control {
    consecutive_openings: u32,
    rng: SplitMix64,
    /// Whether this breaker holds a slot of its registry's open-breaker cap.
    holds_gate: bool,
}

/// What a permit is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermitKind {
    /// A call in a closed (or metrics-only) breaker: recorded in the window.
    Counted,
    /// A half-open probe: decides the verdict.
    Probe,
    /// A call through a disabled breaker: not recorded.
    Untracked,
}

impl CircuitBreaker {
    /// Starts building a breaker named `name`.
    pub fn builder(name: &str) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::new(name)
    }

    fn from_builder(b: CircuitBreakerBuilder) -> Self {
        let c = &b.config;
        let mut rules = Rules {
            failure_rate: c.failure_rate,
            slow_rate: c.slow_calls.map(|s| s.rate),
            consecutive: c.consecutive_failures,
            minimum_calls: u64::from(c.minimum_calls),
            custom: b.custom_rule.clone(),
        };
        if !rules.reads_window() && rules.consecutive.is_none() {
            rules.failure_rate = Some(0.5);
        }
        let latency = c.latency_histogram.unwrap_or(b.custom_rule.is_some());
        let slow_nanos = c.slow_calls.map_or(u64::MAX, |s| {
            u64::try_from(s.duration.as_nanos()).unwrap_or(u64::MAX)
        });
        let timed = slow_nanos != u64::MAX || latency || c.window.is_time();
        let half_open_calls = c.half_open_calls as u16;
        #[cfg_attr(not(feature = "tokio"), allow(unused_variables))]
        let inner = |me: &std::sync::Weak<Inner>| Inner {
            #[cfg(feature = "tokio")]
            me: me.clone(),
            name: b.name.clone(),
            rules,
            slow_nanos,
            timed,
            half_open_calls,
            half_open_successes: c.half_open_successes.map_or(half_open_calls, |k| k as u16),
            max_half_open_wait: nanos(c.max_half_open_wait),
            ramp_up: nanos(b.ramp_up),
            #[cfg(feature = "tokio")]
            eager: c.eager_transitions,
            backoff: c.open_for.clone(),
            clock: b.clock.clone(),
            state: CachePadded(AtomicU64::new(word::pack(State::Closed, 0, false))),
            consecutive: CachePadded(AtomicU64::new(0)),
            half_open: CachePadded(AtomicU64::new(0)),
            timing: Timing::default(),
            window: WindowState::new(&c.window, latency, b.clock.clone()),
            control: Mutex::new(Control {
                consecutive_openings: 0,
                rng: b
                    .seed
                    .map_or_else(SplitMix64::from_entropy, SplitMix64::new),
                holds_gate: false,
            }),
            events: Events::new(b.listeners.clone(), b.event_capacity),
            recovery: b.recovery.clone(),
            gate: b.open_gate.clone(),
            #[cfg(feature = "tokio")]
            link: b
                .fleet
                .as_ref()
                .map(|f| crate::store::Link::new(f, b.name.as_str())),
        };
        if let Some(g) = &b.open_gate {
            g.joined();
        }
        let breaker = CircuitBreaker {
            inner: Arc::new_cyclic(inner),
        };
        #[cfg(feature = "tokio")]
        if let Some(link) = &breaker.inner.link {
            let me: std::sync::Weak<Inner> = Arc::downgrade(&breaker.inner);
            link.join(me);
        }
        breaker
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// The current state.
    pub fn state(&self) -> State {
        word::state(self.inner.state.load(Ordering::Acquire))
    }

    /// The current epoch: the number of transitions so far.
    pub fn epoch(&self) -> u64 {
        word::epoch(self.inner.state.load(Ordering::Acquire))
    }

    /// Whether a closed breaker is still ramping traffic up after a recovery.
    pub fn is_ramping(&self) -> bool {
        word::ramping(self.inner.state.load(Ordering::Acquire))
    }

    /// The statistics of the current window (empty unless closed or metrics-only).
    pub fn stats(&self) -> WindowStats {
        let now = self.inner.clock.now_nanos();
        self.inner.window.stats(self.epoch(), now)
    }

    /// Consecutive failures recorded while closed (kept after a trip, reset
    /// when the breaker closes).
    pub fn consecutive_failures(&self) -> u32 {
        let c = self.inner.consecutive.load(Ordering::Relaxed);
        let counting = self.inner.timing.counting_epoch.load(Ordering::Acquire);
        if consecutive_epoch(c) == counting as u32 {
            c as u32
        } else {
            0 // the latest counting epoch has not failed yet
        }
    }

    /// Half-open probes admitted and still running (0 unless half-open).
    pub fn probes_in_flight(&self) -> u32 {
        let w = self.inner.state.load(Ordering::Acquire);
        if word::state(w) != State::HalfOpen {
            return 0;
        }
        let c = HalfOpenCounts::unpack(self.inner.half_open.load(Ordering::Acquire));
        if !c.belongs_to(word::epoch(w)) {
            return 0;
        }
        u32::from(
            c.admitted
                .saturating_sub(c.successes.saturating_add(c.failures)),
        )
    }

    /// Asks for a permit to make one call. Record its outcome with
    /// [`Permit::record`]; a permit dropped without a verdict counts as
    /// [`Outcome::Ignored`](crate::Outcome::Ignored) (and frees its half-open slot).
    #[inline(always)]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        self.inner.acquire()
    }

    /// Like [`try_acquire`](Self::try_acquire), but the permit owns a handle to
    /// the breaker, so it can be moved into a `'static` future or task.
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        Ok(self.inner.acquire()?.into_owned(self.inner.clone()))
    }

    /// Runs `f` through the breaker: `Ok` is a success, `Err` a failure.
    ///
    /// A rejected call returns [`Error::Rejected`] without running `f`. If the
    /// returned future is dropped before it finishes, the call is ignored.
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_classified(&ErrorsAsFailures, f).await
    }

    /// Runs `f` through the breaker, classifying its result with `classify`.
    pub async fn call_classified<C, F, Fut, T, E>(&self, classify: &C, f: F) -> Result<T, Error<E>>
    where
        C: Classify<T, E> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire()?;
        let result = f().await;
        permit.record(classify.classify(&result));
        result.map_err(Error::Inner)
    }

    /// Runs the blocking function `f` through the breaker: `Ok` is a success,
    /// `Err` a failure. If `f` panics, the call is ignored and the panic goes on.
    #[inline(always)]
    pub fn call_sync<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, Error<E>> {
        self.call_sync_classified(&ErrorsAsFailures, f)
    }

    /// Runs the blocking function `f` through the breaker, classifying its
    /// result with `classify`.
    #[inline(always)]
    pub fn call_sync_classified<C, T, E>(
        &self,
        classify: &C,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, Error<E>>
    where
        C: Classify<T, E> + ?Sized,
    {
        let inner = &*self.inner;
        let w = inner.state.load(Ordering::Acquire);
        if w & word::FAST_MASK != 0 {
            return self.call_sync_other(w, classify, f);
        }
        // Closed: admitted inline, as `try_acquire` would.
        let permit = Permit::new(
            inner,
            word::epoch(w),
            PermitKind::Counted,
            inner.now_if_timed(),
        );
        let result = f();
        permit.record(classify.classify(&result));
        result.map_err(Error::Inner)
    }

    /// [`call_sync_classified`](Self::call_sync_classified) of a breaker
    /// whose state word `w` was not closed, out of line (so the closed path
    /// stays small): a fast rejection here, the rest further out.
    #[inline(never)]
    fn call_sync_other<C, T, E>(
        &self,
        w: u64,
        classify: &C,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, Error<E>>
    where
        C: Classify<T, E> + ?Sized,
    {
        match self.inner.fast_rejection(w) {
            Some(rejected) => Err(Error::Rejected(rejected)),
            None => self.call_sync_general(w, classify, f),
        }
    }

    #[inline(never)]
    fn call_sync_general<C, T, E>(
        &self,
        w: u64,
        classify: &C,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, Error<E>>
    where
        C: Classify<T, E> + ?Sized,
    {
        match self.inner.acquire_general(w) {
            Ok(permit) => {
                let result = f();
                permit.record(classify.classify(&result));
                result.map_err(Error::Inner)
            }
            Err(rejected) => Err(Error::Rejected(rejected)),
        }
    }

    /// Opens the breaker until [`reset`](Self::reset): every call is rejected.
    pub fn force_open(&self) {
        self.inner.transition_any(State::ForcedOpen);
    }

    /// Lets every call through and records nothing, until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.inner.transition_any(State::Disabled);
    }

    /// Lets every call through and records outcomes (events, statistics)
    /// without ever tripping, until [`reset`](Self::reset).
    pub fn metrics_only(&self) {
        self.inner.transition_any(State::MetricsOnly);
    }

    /// Closes the breaker with an empty window and forgets past openings.
    pub fn reset(&self) {
        self.inner.transition_any(State::Closed);
    }

    /// Performs the time-based transitions that are due now: open → half-open
    /// when the open duration has elapsed (and the recovery check, if any, has
    /// passed), half-open → open when no verdict came in time, and the end of a
    /// ramp. Calls do this lazily; call `tick` to have it happen without
    /// traffic (the eager timer does). Returns the state afterwards.
    pub fn tick(&self) -> State {
        self.inner.tick();
        self.state()
    }

    /// Runs the recovery check once, now, if the breaker is open and has one.
    /// Returns whether it passed (`None` if there is no check or the breaker is
    /// not open). A pass lets the breaker move to half-open once the open
    /// duration has elapsed.
    pub async fn run_recovery_check(&self) -> Option<bool> {
        recovery::run_once(&self.inner).await
    }

    /// Receives every event from now on (feature `tokio`). A receiver that
    /// falls behind loses the oldest events; it never slows the breaker.
    #[cfg(feature = "tokio")]
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Whether two handles share the same breaker.
    pub fn same_as(&self, other: &CircuitBreaker) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .field("epoch", &self.epoch())
            .finish()
    }
}

fn consecutive_word(epoch: u64, count: u32) -> u64 {
    (epoch << 32) | u64::from(count)
}

fn consecutive_epoch(word: u64) -> u32 {
    (word >> 32) as u32
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// Fleet glue: what `store::fleet` calls on a breaker's shared state.
impl Inner {
    #[cfg(feature = "tokio")]
    pub(crate) fn open_until(&self) -> u64 {
        self.timing.open_until.load(Ordering::Acquire)
    }

    pub(crate) fn state_word(&self) -> u64 {
        self.state.load(Ordering::Acquire)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(g) = &self.gate {
            g.left();
            if lock(&self.control).holds_gate {
                g.release();
            }
        }
    }
}

// A panic inside a protected call leaves the breaker consistent: the permit
// counts as ignored, and every lock is recovered from poisoning.
impl std::panic::UnwindSafe for CircuitBreaker {}
impl std::panic::RefUnwindSafe for CircuitBreaker {}
