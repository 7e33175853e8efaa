//! Events: every transition, rejection and recorded outcome of a policy.
//!
//! Metrics, tracing and the dashboard are built on events. Listeners receive
//! them two ways:
//!
//! - **callbacks** given to a builder (`on_event`) run on the thread that caused
//!   the event, after every lock of the policy is released. Keep them short (bump
//!   a counter, send on a channel): the call that caused the event waits for them.
//! - a **broadcast subscription** (`subscribe()`, feature `tokio`) never blocks a
//!   call: a receiver that falls behind loses the oldest events and is told how
//!   many it missed (`RecvError::Lagged`).
//!
//! Transitions are delivered in the order they happened, to callbacks and
//! subscribers alike, even when several threads cause transitions at once:
//! one thread delivers at a time, so a transition may reach the callbacks on
//! another thread than the one that caused it (which then does not wait).
//! With the `tracing` feature, such a transition is delivered inside the
//! `tracing` span that was current where it happened — the span of the call
//! that caused it — never inside the span of the delivering thread's call.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::sync::{lock, AtomicBool, Mutex, Ordering};
use crate::{Name, Outcome, State};

/// Something a policy did.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The name of the policy instance.
    pub name: Name,
    /// When it happened, by the policy's clock.
    pub at: Duration,
    /// The breaker's epoch after the event (for transitions: the new epoch);
    /// 0 for policies without epochs.
    pub epoch: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// The breaker changed state.
    Transition {
        /// The state it left.
        from: State,
        /// The state it entered.
        to: State,
        /// Why.
        reason: TransitionReason,
    },
    /// A call was refused.
    Rejected {
        /// The state that refused it.
        state: State,
        /// How long until a probe is allowed (zero if unknown).
        retry_after: Duration,
    },
    /// A call's outcome was recorded.
    Outcome {
        /// Its outcome.
        outcome: Outcome,
        /// How long it took (zero when the breaker does not measure time: no
        /// slow-call rule, no time window and no latency statistics).
        duration: Duration,
        /// Whether it was slower than the slow-call threshold.
        slow: bool,
        /// Whether it was a half-open probe.
        probe: bool,
    },
    /// A call admitted in an earlier epoch finished after the breaker had moved
    /// on; its outcome was not counted.
    StaleOutcome {
        /// Its outcome.
        outcome: Outcome,
        /// The epoch that admitted it.
        admitted_in: u64,
    },
    /// The breaker's rules said "trip", but its registry's cap on the share of
    /// open breakers was reached, so it stayed closed (fails open).
    TripSuppressed {
        /// The rule that wanted to trip.
        reason: TransitionReason,
    },
    /// The active recovery check ran while the breaker was open.
    RecoveryCheck {
        /// Whether the dependency looked healthy.
        passed: bool,
    },
    /// Retry: an attempt is starting (1 for the first call).
    Attempt {
        /// The attempt number.
        attempt: u32,
    },
    /// Retry: the last attempt failed and another is scheduled after `delay`.
    RetryScheduled {
        /// The attempt that will run next.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
    },
    /// Retry: a retry was wanted but the retry budget was spent.
    RetryBudgetExhausted,
    /// Retry: no attempt left (attempts or total time), the last error stands.
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
    },
    /// Timeout: the call was cancelled at its deadline.
    TimedOut {
        /// How long it ran.
        elapsed: Duration,
    },
    /// Bulkhead: a call was refused (queue full or wait expired).
    BulkheadFull {
        /// How long it waited.
        waited: Duration,
    },
    /// Bulkhead: a call got a slot.
    BulkheadAcquired {
        /// Calls running now (including this one).
        in_use: u32,
        /// Calls waiting.
        queued: u32,
        /// How long it waited.
        waited: Duration,
    },
    /// Bulkhead: a call gave its slot back.
    BulkheadReleased {
        /// Calls running now.
        in_use: u32,
    },
    /// Rate limiter: a call was refused.
    RateLimited {
        /// When a permit will be available.
        retry_after: Duration,
    },
    /// Fallback: the primary failed (or was rejected) and fallback `index`
    /// (0-based) produced the result.
    FallbackUsed {
        /// Which fallback of the chain answered.
        index: usize,
    },
    /// Fallback: every fallback of the chain failed too.
    FallbackFailed,
    /// The fleet's state store became unreachable (`degraded: true`; the
    /// breaker decides alone from local data) or reachable again.
    StoreDegraded {
        /// Whether the store is unreachable now.
        degraded: bool,
        /// The store's error, when degraded.
        detail: Option<String>,
    },
    /// An operator (or another instance) overrode the breaker's state for the
    /// whole fleet: the audit trail of manual control.
    FleetOverride {
        /// The state it was set to.
        to: State,
        /// Who did it.
        actor: String,
        /// Why, as given.
        reason: String,
        /// When the override lapses by itself, if it does.
        expires_in: Option<Duration>,
    },
    /// Hedge: an extra attempt started (1 for the first hedge).
    HedgeStarted {
        /// The hedge number.
        hedge: u32,
    },
    /// Hedge: an attempt won (0 = the original call, n = the n-th hedge); the
    /// others were cancelled.
    HedgeWon {
        /// The winning attempt.
        attempt: u32,
    },
    /// Fault injection: a call was hit (a latency, a fault, or both).
    FaultInjected {
        /// The fault injected, if any.
        fault: Option<crate::chaos::Fault>,
        /// The latency injected, if any.
        delay: Option<Duration>,
    },
    /// Fault injection, while enabled: a call was let through untouched.
    FaultSkipped,
    /// Fault injection was switched on or off (by hand, by a new
    /// configuration, or by its expiry).
    FaultSwitched {
        /// Whether it is on now.
        enabled: bool,
        /// When switched on with an expiry: how long it lasts.
        expires_in: Option<Duration>,
    },
}

impl EventKind {
    /// The policy that emits this kind of event.
    pub fn policy(&self) -> crate::PolicyKind {
        use crate::PolicyKind as P;
        match self {
            EventKind::Transition { .. }
            | EventKind::Rejected { .. }
            | EventKind::Outcome { .. }
            | EventKind::StaleOutcome { .. }
            | EventKind::TripSuppressed { .. }
            | EventKind::RecoveryCheck { .. }
            | EventKind::StoreDegraded { .. }
            | EventKind::FleetOverride { .. } => P::CircuitBreaker,
            EventKind::Attempt { .. }
            | EventKind::RetryScheduled { .. }
            | EventKind::RetryBudgetExhausted
            | EventKind::RetriesExhausted { .. } => P::Retry,
            EventKind::TimedOut { .. } => P::Timeout,
            EventKind::BulkheadFull { .. }
            | EventKind::BulkheadAcquired { .. }
            | EventKind::BulkheadReleased { .. } => P::Bulkhead,
            EventKind::RateLimited { .. } => P::RateLimiter,
            EventKind::FallbackUsed { .. } | EventKind::FallbackFailed => P::Fallback,
            EventKind::HedgeStarted { .. } | EventKind::HedgeWon { .. } => P::Hedge,
            EventKind::FaultInjected { .. }
            | EventKind::FaultSkipped
            | EventKind::FaultSwitched { .. } => P::Chaos,
        }
    }
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// The window's failure rate reached the threshold.
    FailureRate,
    /// The window's slow-call rate reached the threshold.
    SlowCallRate,
    /// Too many failures in a row.
    ConsecutiveFailures,
    /// The custom trip predicate held.
    CustomRule,
    /// The open duration elapsed (open → half-open).
    OpenElapsed,
    /// The recovery check passed (open → half-open).
    RecoveryCheckPassed,
    /// Enough half-open probes succeeded.
    ProbesSucceeded,
    /// A half-open probe failed (or was slow).
    ProbeFailed,
    /// No verdict came from the probes within `max_half_open_wait`.
    HalfOpenTimeout,
    /// A manual override (force open, disable, metrics only, reset).
    Manual,
    /// The fleet's shared state changed (another instance, or an operator,
    /// moved the breaker; see [`store`](crate::store)).
    Fleet,
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransitionReason::FailureRate => "failure rate",
            TransitionReason::SlowCallRate => "slow-call rate",
            TransitionReason::ConsecutiveFailures => "consecutive failures",
            TransitionReason::CustomRule => "custom rule",
            TransitionReason::OpenElapsed => "open duration elapsed",
            TransitionReason::RecoveryCheckPassed => "recovery check passed",
            TransitionReason::ProbesSucceeded => "probes succeeded",
            TransitionReason::ProbeFailed => "probe failed",
            TransitionReason::HalfOpenTimeout => "no probe verdict in time",
            TransitionReason::Manual => "manual",
            TransitionReason::Fleet => "fleet",
        })
    }
}

/// A callback that receives events.
pub type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// Checks a builder's broadcast capacity (`event_capacity`).
pub(crate) fn check_capacity(capacity: usize) -> Result<(), crate::ConfigError> {
    if capacity == 0 {
        return Err(crate::ConfigError::new(
            "event_capacity",
            0,
            "a broadcast capacity of at least 1 event",
        ));
    }
    Ok(())
}

/// The `on_event` and `event_capacity` methods every policy builder has
/// (builders with `listeners: Vec<Listener>` and `event_capacity: usize`).
macro_rules! listener_methods {
    () => {
        /// Calls `listener` with every event, on the thread that caused it
        /// and with no lock held. Keep it short; see [`event`](crate::event).
        pub fn on_event(
            mut self,
            listener: impl Fn(&crate::Event) + Send + Sync + 'static,
        ) -> Self {
            self.listeners.push(std::sync::Arc::new(listener));
            self
        }

        /// Capacity of the broadcast channel behind `subscribe()` (default
        /// 1024): a receiver further behind than this loses the oldest events.
        pub fn event_capacity(mut self, capacity: usize) -> Self {
            self.event_capacity = capacity;
            self
        }
    };
}
pub(crate) use listener_methods;

/// A transition waiting for delivery, with the span it happened in.
struct Queued {
    event: Event,
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

/// Fan-out of one policy's events.
pub(crate) struct Events {
    /// Whether anybody listens; checked on the hot path before building an event.
    active: AtomicBool,
    callbacks: Vec<Listener>,
    #[cfg(feature = "tokio")]
    channel: std::sync::OnceLock<tokio::sync::broadcast::Sender<Event>>,
    #[cfg(feature = "tokio")]
    capacity: usize,
    /// Transitions waiting for delivery, in the order they happened.
    queue: Mutex<VecDeque<Queued>>,
    delivering: AtomicBool,
}

impl Events {
    pub(crate) fn new(callbacks: Vec<Listener>, capacity: usize) -> Self {
        #[cfg(not(feature = "tokio"))]
        let _ = capacity;
        Events {
            active: AtomicBool::new(!callbacks.is_empty()),
            callbacks,
            #[cfg(feature = "tokio")]
            channel: std::sync::OnceLock::new(),
            #[cfg(feature = "tokio")]
            capacity: capacity.max(1),
            queue: Mutex::new(VecDeque::new()),
            delivering: AtomicBool::new(false),
        }
    }

    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        let rx = self
            .channel
            .get_or_init(|| tokio::sync::broadcast::channel(self.capacity).0)
            .subscribe();
        self.active.store(true, Ordering::Relaxed);
        rx
    }

    /// Delivers an event now, on this thread (outcomes, rejections).
    pub(crate) fn emit(&self, event: Event) {
        for cb in &self.callbacks {
            cb(&event);
        }
        #[cfg(feature = "tokio")]
        if let Some(tx) = self.channel.get() {
            // No receivers is not an error worth reporting.
            let _ = tx.send(event);
        }
    }

    /// Queues an event for ordered delivery. Call while holding the lock that
    /// orders the events, then call [`drain`](Events::drain) after releasing it.
    pub(crate) fn enqueue(&self, event: Event) {
        if self.active() {
            let queued = Queued {
                event,
                #[cfg(feature = "tracing")]
                span: tracing::Span::current(),
            };
            lock(&self.queue).push_back(queued);
        }
    }

    /// Delivers queued events in order. Whoever finds nobody delivering becomes
    /// the deliverer until the queue is empty; the others return at once, so
    /// events are never delivered concurrently or out of order.
    pub(crate) fn drain(&self) {
        loop {
            if self
                .delivering
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
            loop {
                let next = lock(&self.queue).pop_front();
                match next {
                    Some(q) => {
                        // The caller's span, not the deliverer's.
                        #[cfg(feature = "tracing")]
                        let _span = q.span.enter();
                        self.emit(q.event);
                    }
                    None => break,
                }
            }
            self.delivering.store(false, Ordering::Release);
            // An event queued after our last pop but before the store above
            // would otherwise wait for the next transition.
            if lock(&self.queue).is_empty() {
                return;
            }
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("callbacks", &self.callbacks.len())
            .field("active", &self.active())
            .finish()
    }
}
