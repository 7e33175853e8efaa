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

mod config;
pub(crate) mod gate;
mod permit;
mod recovery;
mod state;
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
use crate::event::{Event, EventKind, Events, TransitionReason};
use crate::random::SplitMix64;
use crate::sync::{lock, AtomicU64, CachePadded, Mutex, Ordering};
use crate::{Backoff, Classify, Error, ErrorsAsFailures, Name, Outcome, Rejected};
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

/// Trip rules, resolved from the configuration.
struct Rules {
    failure_rate: Option<f64>,
    slow_rate: Option<f64>,
    consecutive: Option<u32>,
    minimum_calls: u64,
    custom: Option<config::TripRule>,
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
    link: Option<crate::store::fleet::Link>,
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
        if rules.failure_rate.is_none()
            && rules.slow_rate.is_none()
            && rules.consecutive.is_none()
            && rules.custom.is_none()
        {
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
            link: b.fleet.as_ref().map(crate::store::fleet::Link::new),
        };
        if let Some(g) = &b.open_gate {
            g.joined();
        }
        let breaker = CircuitBreaker {
            inner: Arc::new_cyclic(inner),
        };
        #[cfg(feature = "tokio")]
        if let Some(link) = &breaker.inner.link {
            link.fleet.register(Arc::downgrade(&breaker.inner));
            link.joined();
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
    /// [`Outcome::Ignored`] (and frees its half-open slot).
    #[inline]
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
    #[inline]
    pub fn call_sync<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, Error<E>> {
        self.call_sync_classified(&ErrorsAsFailures, f)
    }

    /// Runs the blocking function `f` through the breaker, classifying its
    /// result with `classify`.
    #[inline]
    pub fn call_sync_classified<C, T, E>(
        &self,
        classify: &C,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, Error<E>>
    where
        C: Classify<T, E> + ?Sized,
    {
        let permit = self.try_acquire()?;
        let result = f();
        permit.record(classify.classify(&result));
        result.map_err(Error::Inner)
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

impl Inner {
    #[inline]
    fn now_if_timed(&self) -> u64 {
        if self.timed {
            self.clock.now_nanos()
        } else {
            0
        }
    }

    /// Decides one call. The two hot cases are decided inline: a closed
    /// breaker admits; an open one whose open period is not over rejects with
    /// a plain value (no lock, no allocation). Everything else goes the
    /// general way.
    #[inline(always)]
    fn acquire(&self) -> Result<Permit<'_>, Rejected> {
        let w = self.state.load(Ordering::Acquire);
        if w & word::FAST_MASK == 0 {
            return Ok(Permit::new(
                self,
                word::epoch(w),
                PermitKind::Counted,
                self.now_if_timed(),
            ));
        }
        if w & word::FAST_MASK == State::Open.code() {
            let now = self.clock.now_nanos();
            let until = self.timing.open_until.load(Ordering::Acquire);
            if now < until && !self.events.active() {
                return Err(self.open_rejection(w, State::Open, until - now));
            }
        } else if w & word::FAST_MASK == State::ForcedOpen.code() && !self.events.active() {
            return Err(self.open_rejection(w, State::ForcedOpen, 0));
        }
        match self.acquire_slow(w) {
            Ok((epoch, kind, start)) => Ok(Permit::new(self, epoch, kind, start)),
            Err(r) => Err(r),
        }
    }

    /// The rejection of an open (or forced-open) breaker: a plain value.
    #[inline(always)]
    fn open_rejection(&self, w: u64, state: State, retry_after_nanos: u64) -> Rejected {
        Rejected {
            name: self.name.clone(),
            state,
            retry_after_nanos,
            epoch: word::epoch(w),
        }
    }

    #[inline(never)]
    fn acquire_slow(&self, mut w: u64) -> Result<(u64, PermitKind, u64), Rejected> {
        loop {
            let epoch = word::epoch(w);
            match word::state(w) {
                State::Closed if word::ramping(w) => {
                    let now = self.clock.now_nanos();
                    if self.ramp_admits(now) {
                        return Ok((epoch, PermitKind::Counted, self.now_if_timed()));
                    }
                    return Err(self.reject(State::Closed, epoch, Duration::ZERO, now));
                }
                State::Closed | State::MetricsOnly => {
                    return Ok((epoch, PermitKind::Counted, self.now_if_timed()))
                }
                State::Disabled => return Ok((epoch, PermitKind::Untracked, 0)),
                State::ForcedOpen => {
                    let now = self.clock.now_nanos();
                    return Err(self.reject(State::ForcedOpen, epoch, Duration::ZERO, now));
                }
                State::Open => {
                    let now = self.clock.now_nanos();
                    let until = self.timing.open_until.load(Ordering::Acquire);
                    if now < until || !self.recovery_allows(epoch) {
                        let left = Duration::from_nanos(until.saturating_sub(now));
                        return Err(self.reject(State::Open, epoch, left, now));
                    }
                    self.transition(
                        epoch,
                        State::Open,
                        State::HalfOpen,
                        TransitionReason::OpenElapsed,
                    );
                }
                State::HalfOpen => {
                    let now = self.clock.now_nanos();
                    if now >= self.timing.half_open_deadline.load(Ordering::Acquire) {
                        self.transition(
                            epoch,
                            State::HalfOpen,
                            State::Open,
                            TransitionReason::HalfOpenTimeout,
                        );
                    } else if let Some(()) = self.take_probe(epoch) {
                        return Ok((epoch, PermitKind::Probe, self.now_if_timed()));
                    } else {
                        return Err(self.reject(State::HalfOpen, epoch, Duration::ZERO, now));
                    }
                }
            }
            w = self.state.load(Ordering::Acquire);
        }
    }

    fn recovery_allows(&self, epoch: u64) -> bool {
        self.recovery.is_none() || self.timing.recovery_passed.load(Ordering::Acquire) == epoch + 1
    }

    /// The most probes this instance may have admitted now: all of them
    /// alone, or as many as the fleet's shared counter granted.
    fn probe_limit(&self) -> u16 {
        #[cfg(feature = "tokio")]
        if let Some(link) = self.link.as_ref().filter(|l| l.active()) {
            let granted = link
                .granted
                .load(Ordering::Acquire)
                .min(u32::from(self.half_open_calls));
            return granted as u16;
        }
        self.half_open_calls
    }

    /// Takes a half-open probe slot of `epoch`, if one is free.
    fn take_probe(&self, epoch: u64) -> Option<()> {
        let limit = self.probe_limit();
        let mut cur = self.half_open.load(Ordering::Acquire);
        loop {
            let mut c = HalfOpenCounts::unpack(cur);
            if !c.belongs_to(epoch) {
                return None;
            }
            if c.admitted >= limit {
                #[cfg(feature = "tokio")]
                if let Some(link) = self.link.as_ref().filter(|l| l.active()) {
                    if limit < self.half_open_calls {
                        link.want_probe(self.me.clone());
                    }
                }
                return None;
            }
            c.admitted += 1;
            match self.half_open.compare_exchange_weak(
                cur,
                c.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(()),
                Err(actual) => cur = actual,
            }
        }
    }

    fn ramp_admits(&self, now: u64) -> bool {
        let start = self.timing.ramp_start.load(Ordering::Acquire);
        let end = self.timing.ramp_end.load(Ordering::Acquire);
        if now >= end {
            self.end_ramp();
            return true;
        }
        let share = (now.saturating_sub(start)) as f64 / (end - start).max(1) as f64;
        let n = self.timing.ramp_seq.fetch_add(1, Ordering::Relaxed);
        let mut rng = SplitMix64::new(n);
        rng.next_f64() < share
    }

    fn end_ramp(&self) {
        let guard = lock(&self.control);
        let w = self.state.load(Ordering::Acquire);
        if word::ramping(w) {
            self.state.store(
                word::pack(word::state(w), word::epoch(w), false),
                Ordering::Release,
            );
        }
        drop(guard);
    }

    #[cold]
    fn reject(&self, state: State, epoch: u64, retry_after: Duration, now: u64) -> Rejected {
        let r = Rejected {
            name: self.name.clone(),
            state,
            retry_after_nanos: nanos(retry_after),
            epoch,
        };
        if self.events.active() {
            self.events.emit(Event {
                name: self.name.clone(),
                at: Duration::from_nanos(now),
                epoch,
                kind: EventKind::Rejected { state, retry_after },
            });
        }
        r
    }

    /// Records the verdict of a permit.
    #[inline]
    pub(crate) fn finish(&self, epoch: u64, kind: PermitKind, start: u64, outcome: Outcome) {
        if kind == PermitKind::Untracked {
            return;
        }
        let now = self.now_if_timed();
        let took = now.saturating_sub(start);
        let slow = took >= self.slow_nanos;
        match kind {
            PermitKind::Counted => self.finish_counted(epoch, outcome, slow, took, now),
            PermitKind::Probe => self.finish_probe(epoch, outcome, slow, took, now),
            PermitKind::Untracked => {}
        }
    }

    #[inline]
    fn finish_counted(&self, epoch: u64, outcome: Outcome, slow: bool, took: u64, now: u64) {
        let w = self.state.load(Ordering::Acquire);
        if word::epoch(w) != epoch {
            return self.stale(epoch, outcome, now);
        }
        if self.events.active() {
            self.outcome_event(epoch, outcome, slow, took, now, false);
        }
        let failure = match outcome {
            Outcome::Ignored => return,
            Outcome::Success => false,
            Outcome::Failure => true,
        };
        self.window.record(epoch, now, failure, slow, took);
        let consecutive = if failure {
            self.count_failure(epoch)
        } else {
            let c = self.consecutive.load(Ordering::Relaxed);
            if c as u32 != 0 && consecutive_epoch(c) == epoch as u32 {
                // Clears only this epoch's count; fails harmlessly if a
                // transition already replaced it.
                let _ = self.consecutive.compare_exchange(
                    c,
                    consecutive_word(epoch, 0),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            0
        };
        if (failure || slow) && word::state(w) == State::Closed {
            self.evaluate(epoch, now, consecutive);
        }
    }

    /// Adds a failure to the consecutive count of `epoch`; returns the count
    /// (0 if a later epoch has already counted: this failure is stale).
    ///
    /// Transitions never write the count: a count tagged with an older epoch
    /// is simply zero for this one, so no transition can race with it.
    fn count_failure(&self, epoch: u64) -> u32 {
        let mut c = self.consecutive.load(Ordering::Relaxed);
        loop {
            let tag = consecutive_epoch(c);
            let count = if tag == epoch as u32 {
                c as u32
            } else if (epoch as u32).wrapping_sub(tag) as i32 > 0 {
                0
            } else {
                return 0;
            };
            let next = consecutive_word(epoch, count.saturating_add(1));
            match self.consecutive.compare_exchange_weak(
                c,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return count.saturating_add(1),
                Err(actual) => c = actual,
            }
        }
    }

    #[cold]
    fn evaluate(&self, epoch: u64, now: u64, consecutive: u32) {
        let now = if now == 0 {
            self.clock.now_nanos()
        } else {
            now
        };
        let Some(reason) = self.trip_reason(epoch, now, consecutive) else {
            return;
        };
        if let Some(gate) = &self.gate {
            if !gate.try_take() {
                if self.events.active() {
                    self.events.emit(Event {
                        name: self.name.clone(),
                        at: Duration::from_nanos(now),
                        epoch,
                        kind: EventKind::TripSuppressed { reason },
                    });
                }
                return;
            }
            if !self.transition_with(epoch, State::Closed, State::Open, reason, true) {
                gate.release();
            }
            return;
        }
        self.transition(epoch, State::Closed, State::Open, reason);
    }

    fn trip_reason(&self, epoch: u64, now: u64, consecutive: u32) -> Option<TransitionReason> {
        let r = &self.rules;
        if r.consecutive.is_some_and(|n| consecutive >= n) {
            return Some(TransitionReason::ConsecutiveFailures);
        }
        if r.failure_rate.is_none() && r.slow_rate.is_none() && r.custom.is_none() {
            return None;
        }
        #[allow(unused_mut)]
        let mut stats = self.window.stats(epoch, now);
        #[cfg(feature = "tokio")]
        if let Some(link) = self.link.as_ref().filter(|l| l.active()) {
            let o = link.others();
            stats.add_counts(o.calls, o.failures, o.slow);
        }
        if stats.calls() < r.minimum_calls {
            return None;
        }
        if r.failure_rate.is_some_and(|t| stats.failure_rate() >= t) {
            return Some(TransitionReason::FailureRate);
        }
        if r.slow_rate.is_some_and(|t| stats.slow_rate() >= t) {
            return Some(TransitionReason::SlowCallRate);
        }
        if r.custom.as_ref().is_some_and(|f| f(&stats)) {
            return Some(TransitionReason::CustomRule);
        }
        None
    }

    fn finish_probe(&self, epoch: u64, outcome: Outcome, slow: bool, took: u64, now: u64) {
        let mut cur = self.half_open.load(Ordering::Acquire);
        let counts = loop {
            let mut c = HalfOpenCounts::unpack(cur);
            if !c.belongs_to(epoch) || word::epoch(self.state.load(Ordering::Acquire)) != epoch {
                return self.stale(epoch, outcome, now);
            }
            match outcome {
                Outcome::Ignored => c.admitted = c.admitted.saturating_sub(1),
                Outcome::Success if !slow => c.successes += 1,
                _ => c.failures += 1,
            }
            match self.half_open.compare_exchange_weak(
                cur,
                c.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break c,
                Err(actual) => cur = actual,
            }
        };
        if self.events.active() {
            self.outcome_event(epoch, outcome, slow, took, now, true);
        }
        #[cfg(feature = "tokio")]
        if let Some(link) = self.link.as_ref().filter(|l| l.active()) {
            // The fleet's verdict: the store counts every instance's probes.
            if outcome != Outcome::Ignored {
                let mut control = lock(&self.control);
                let n = control.consecutive_openings.saturating_add(1);
                let open_for = self.backoff.delay(n, &mut control.rng);
                drop(control);
                link.send_probe(
                    self.me.clone(),
                    crate::store::ProbeReport {
                        name: self.name.to_string(),
                        epoch: link.fleet_epoch.load(Ordering::Acquire),
                        success: outcome == Outcome::Success && !slow,
                        successes_needed: u32::from(self.half_open_successes),
                        probes: u32::from(self.half_open_calls),
                        open_for,
                        actor: link.fleet.instance.clone(),
                        ttl: link.fleet.ttl,
                    },
                );
            }
            return;
        }
        if counts.successes >= self.half_open_successes {
            self.transition(
                epoch,
                State::HalfOpen,
                State::Closed,
                TransitionReason::ProbesSucceeded,
            );
        } else if counts.failures > self.half_open_calls - self.half_open_successes {
            self.transition(
                epoch,
                State::HalfOpen,
                State::Open,
                TransitionReason::ProbeFailed,
            );
        }
    }

    #[cold]
    fn stale(&self, epoch: u64, outcome: Outcome, now: u64) {
        if self.events.active() {
            let now = if now == 0 {
                self.clock.now_nanos()
            } else {
                now
            };
            self.events.emit(Event {
                name: self.name.clone(),
                at: Duration::from_nanos(now),
                epoch: self.epoch_now(),
                kind: EventKind::StaleOutcome {
                    outcome,
                    admitted_in: epoch,
                },
            });
        }
    }

    #[cold]
    fn outcome_event(
        &self,
        epoch: u64,
        outcome: Outcome,
        slow: bool,
        took: u64,
        now: u64,
        probe: bool,
    ) {
        let now = if now == 0 {
            self.clock.now_nanos()
        } else {
            now
        };
        self.events.emit(Event {
            name: self.name.clone(),
            at: Duration::from_nanos(now),
            epoch,
            kind: EventKind::Outcome {
                outcome,
                duration: Duration::from_nanos(took),
                slow,
                probe,
            },
        });
    }

    fn epoch_now(&self) -> u64 {
        word::epoch(self.state.load(Ordering::Acquire))
    }

    /// Moves from `from` in `epoch` to `to`; does nothing (and returns false)
    /// if the breaker is no longer there.
    fn transition(&self, epoch: u64, from: State, to: State, reason: TransitionReason) -> bool {
        self.transition_with(epoch, from, to, reason, false)
    }

    fn transition_with(
        &self,
        epoch: u64,
        from: State,
        to: State,
        reason: TransitionReason,
        gate_taken: bool,
    ) -> bool {
        let mut control = lock(&self.control);
        let w = self.state.load(Ordering::Acquire);
        if word::epoch(w) != epoch || word::state(w) != from {
            return false;
        }
        self.apply(&mut control, w, to, reason, gate_taken, None);
        drop(control);
        self.after_transition(to);
        true
    }

    /// A manual transition from whatever state the breaker is in.
    fn transition_any(&self, to: State) {
        let mut control = lock(&self.control);
        let w = self.state.load(Ordering::Acquire);
        self.apply(&mut control, w, to, TransitionReason::Manual, false, None);
        drop(control);
        self.after_transition(to);
    }

    /// Prepares the new state's data, then publishes the state word. Runs under
    /// the control lock, which orders transitions (and their events).
    fn apply(
        &self,
        control: &mut Control,
        w: u64,
        to: State,
        reason: TransitionReason,
        gate_taken: bool,
        fleet_open_for: Option<u64>,
    ) {
        let from = word::state(w);
        let epoch = word::epoch(w) + 1;
        let now = self.clock.now_nanos();
        let mut ramp = false;
        #[cfg(feature = "tokio")]
        let mut open_for = 0;
        match to {
            State::Open => {
                control.consecutive_openings = control.consecutive_openings.saturating_add(1);
                let d = fleet_open_for.unwrap_or_else(|| {
                    nanos(
                        self.backoff
                            .delay(control.consecutive_openings, &mut control.rng),
                    )
                });
                #[cfg(feature = "tokio")]
                {
                    open_for = d;
                }
                self.timing
                    .open_until
                    .store(now.saturating_add(d), Ordering::Release);
            }
            State::HalfOpen => {
                #[cfg(feature = "tokio")]
                if let Some(link) = &self.link {
                    link.reset_probes();
                }
                self.half_open
                    .store(HalfOpenCounts::fresh(epoch).pack(), Ordering::Release);
                self.timing.half_open_deadline.store(
                    now.saturating_add(self.max_half_open_wait),
                    Ordering::Release,
                );
            }
            State::Closed => {
                control.consecutive_openings = 0;
                if from == State::HalfOpen && self.ramp_up > 0 {
                    self.timing.ramp_start.store(now, Ordering::Release);
                    self.timing
                        .ramp_end
                        .store(now.saturating_add(self.ramp_up), Ordering::Release);
                    ramp = true;
                }
            }
            State::MetricsOnly | State::ForcedOpen | State::Disabled => {}
        }
        if matches!(to, State::Closed | State::MetricsOnly) {
            self.timing.counting_epoch.store(epoch, Ordering::Release);
        }
        if gate_taken {
            control.holds_gate = true;
        } else if control.holds_gate && !matches!(to, State::Open | State::HalfOpen) {
            control.holds_gate = false;
            if let Some(g) = &self.gate {
                g.release();
            }
        }
        self.state
            .store(word::pack(to, epoch, ramp), Ordering::Release);
        self.events.enqueue(Event {
            name: self.name.clone(),
            at: Duration::from_nanos(now),
            epoch,
            kind: EventKind::Transition { from, to, reason },
        });
        #[cfg(feature = "tokio")]
        if let Some(link) = &self.link {
            let manual = reason == TransitionReason::Manual;
            let was_local_only = link.local_only.load(Ordering::Acquire);
            if manual || to == State::Closed {
                // Closing (or an operator) ends a local-only opening.
                link.local_only.store(false, Ordering::Release);
            }
            // A local-only breaker keeps its transitions to itself.
            if reason != TransitionReason::Fleet && (manual || !was_local_only) {
                let trip = from == State::Closed && to == State::Open;
                link.send_transition(
                    self.me.clone(),
                    crate::store::TransitionRequest {
                        name: self.name.to_string(),
                        from_epoch: (!manual).then(|| link.fleet_epoch.load(Ordering::Acquire)),
                        from_state: (!manual).then_some(from),
                        quorum: if trip { link.fleet.quorum } else { 0 },
                        to,
                        open_for: Duration::from_nanos(open_for),
                        expires_in: None,
                        actor: link.fleet.instance.clone(),
                        reason: reason.to_string(),
                        ttl: link.fleet.ttl,
                    },
                );
            }
        }
    }

    /// Work after a transition, with no lock held: deliver events, start timers.
    fn after_transition(&self, to: State) {
        self.events.drain();
        if to == State::Open {
            recovery::on_open(self);
        }
    }

    fn tick(&self) {
        let w = self.state.load(Ordering::Acquire);
        let epoch = word::epoch(w);
        let now = self.clock.now_nanos();
        match word::state(w) {
            State::Open
                if now >= self.timing.open_until.load(Ordering::Acquire)
                    && self.recovery_allows(epoch) =>
            {
                self.transition(
                    epoch,
                    State::Open,
                    State::HalfOpen,
                    TransitionReason::OpenElapsed,
                );
            }
            State::HalfOpen if now >= self.timing.half_open_deadline.load(Ordering::Acquire) => {
                self.transition(
                    epoch,
                    State::HalfOpen,
                    State::Open,
                    TransitionReason::HalfOpenTimeout,
                );
            }
            State::Closed
                if word::ramping(w) && now >= self.timing.ramp_end.load(Ordering::Acquire) =>
            {
                self.end_ramp();
            }
            _ => {}
        }
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn name(&self) -> &str {
        self.name.as_str()
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn link(&self) -> Option<&crate::store::fleet::Link> {
        self.link.as_ref()
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn half_open_limit(&self) -> u32 {
        u32::from(self.half_open_calls)
    }

    /// This instance's report of its window to the fleet.
    #[cfg(feature = "tokio")]
    pub(crate) fn sync_entry(
        &self,
        fleet: &crate::store::fleet::Shared,
    ) -> crate::store::SyncEntry {
        let w = self.state.load(Ordering::Acquire);
        let window = match word::state(w) {
            State::Closed | State::MetricsOnly => {
                let s = self.window.stats(word::epoch(w), self.clock.now_nanos());
                crate::store::WindowTotals {
                    calls: s.calls(),
                    failures: s.failures(),
                    slow: s.slow(),
                }
            }
            _ => crate::store::WindowTotals::default(),
        };
        let fleet_epoch = self
            .link
            .as_ref()
            .map_or(0, |l| l.fleet_epoch.load(Ordering::Acquire));
        crate::store::SyncEntry {
            name: self.name.to_string(),
            fleet_epoch,
            window,
            stale_after: (fleet.sync_interval * 3).max(Duration::from_secs(1)),
            ttl: fleet.ttl,
        }
    }

    /// Applies the fleet's view of this breaker, if it is news, and reports a
    /// manual override once per fleet epoch as an audit event (whether its
    /// notice or a sync brought the change first).
    #[cfg(feature = "tokio")]
    pub(crate) fn adopt(
        &self,
        view: &crate::store::FleetView,
        notice: Option<&crate::store::FleetNotice>,
    ) {
        let Some(link) = &self.link else { return };
        let audit = notice.filter(|n| {
            n.manual && link.audited_epoch.fetch_max(view.epoch, Ordering::AcqRel) < view.epoch
        });
        if self.adopt_view(link, view) {
            self.after_transition(view.state);
        }
        if let Some(n) = audit {
            if self.events.active() {
                self.events.emit(Event {
                    name: self.name.clone(),
                    at: Duration::from_nanos(self.clock.now_nanos()),
                    epoch: self.epoch_now(),
                    kind: EventKind::FleetOverride {
                        to: view.state,
                        actor: n.actor.clone(),
                        reason: n.reason.clone(),
                        expires_in: view.override_expires_in,
                    },
                });
            }
        }
    }

    /// Moves the local breaker to the fleet's state if the view is news.
    /// Returns whether it made a transition.
    #[cfg(feature = "tokio")]
    fn adopt_view(&self, link: &crate::store::fleet::Link, view: &crate::store::FleetView) -> bool {
        let mut control = lock(&self.control);
        let known = link.fleet_epoch.load(Ordering::Acquire);
        if view.epoch < known {
            return false; // old news
        }
        let newer = view.epoch > known;
        link.fleet_epoch.store(view.epoch, Ordering::Release);
        let local_only = link.local_only.load(Ordering::Acquire);
        if newer {
            // The fleet moved on (it opened, or an operator acted): follow it.
            link.local_only.store(false, Ordering::Release);
        }
        let w = self.state.load(Ordering::Acquire);
        let local = word::state(w);
        let in_flight = link.pending.load(Ordering::Acquire) > 0 || (local_only && !newer);
        if local == view.state {
            if view.state == State::Open && newer {
                // Re-opened elsewhere: follow the fleet's open duration.
                let now = self.clock.now_nanos();
                self.timing.open_until.store(
                    now.saturating_add(nanos(view.open_remaining)),
                    Ordering::Release,
                );
            }
            if view.state == State::HalfOpen && newer {
                link.reset_probes();
            }
            false
        } else if newer || !in_flight {
            self.apply(
                &mut control,
                w,
                view.state,
                TransitionReason::Fleet,
                false,
                Some(nanos(view.open_remaining)),
            );
            true
        } else {
            false
        }
    }

    /// Reports a change in the store's health to listeners.
    #[cfg(feature = "tokio")]
    pub(crate) fn store_degraded(&self, degraded: bool, detail: Option<String>) {
        if self.events.active() {
            self.events.emit(Event {
                name: self.name.clone(),
                at: Duration::from_nanos(self.clock.now_nanos()),
                epoch: self.epoch_now(),
                kind: EventKind::StoreDegraded { degraded, detail },
            });
        }
    }

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
