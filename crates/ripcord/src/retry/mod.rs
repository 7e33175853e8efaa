//! The retry policy: try a failed call again, after a delay, within limits.
//!
//! # What happens on each call
//!
//! [`Retry::execute`] calls `f`; when the result is one to retry, it waits and
//! calls `f` again, until a result is not one to retry or a limit stops it.
//! It returns the **last** result: a value, [`Error::Inner`] with the last
//! error, or (in [`execute_composed`](Retry::execute_composed)) the last
//! error of an inner policy. After each attempt, in this order:
//!
//! 1. **Retry on?** A predicate given with
//!    [`retry_on`](RetryBuilder::retry_on) or
//!    [`classify`](RetryBuilder::classify) decides; by default every `Err` is
//!    retried and no `Ok` is (the [`ErrorsAsFailures`](crate::ErrorsAsFailures)
//!    rule: only failures, never ignored outcomes).
//! 2. **Attempts left?** At most `max_attempts` attempts, the first included.
//! 3. **The delay** is the larger of the backoff's delay for the `n`-th retry
//!    ([`Backoff`]: constant, exponential with a cap, full or
//!    decorrelated jitter) and the delay the result asks for, if any
//!    ([`retry_after`](RetryBuilder::retry_after); a breaker's rejection and a
//!    rate limiter's refusal carry theirs).
//! 4. **Deadlines.** No retry is scheduled that would start at or after
//!    `max_total_time` from the first attempt's start, or at or after the
//!    task's deadline ([`timeout::current_deadline`](crate::timeout::current_deadline),
//!    set by an enclosing [`TimeoutPolicy`](crate::TimeoutPolicy) or
//!    [`with_deadline`](crate::timeout::with_deadline)).
//! 5. **Budget.** With a [`RetryBudget`], each call deposits and each retry
//!    withdraws; with the budget spent, the last result stands.
//!
//! Then it waits with `tokio::time::sleep` (holding nothing: no breaker permit,
//! no bulkhead slot — those belong to inner policies and were released with
//! the attempt) and tries again.
//!
//! # Composition
//!
//! Inside a pipeline the call already returns a ripcord [`Error`]; use
//! [`execute_composed`](Retry::execute_composed). By default it retries:
//!
//! | inner error | retried? | not before |
//! |---|---|---|
//! | `Inner(e)` | per the predicates for `Result<T, E>` (default: yes) | `retry_after(&e)` |
//! | `Rejected` (breaker open or half-open) | yes | the time until the breaker's next probe |
//! | `Rejected` while [forced open](crate::CircuitBreaker::force_open) | no | |
//! | `Timeout`, `BulkheadFull` | yes | |
//! | `RateLimited` | yes | the limiter's next permit |
//! | `Fallback` | no | |
//!
//! A predicate typed over the composed result `Result<T, Error<E>>` overrides
//! all of this. So a breaker inside a retry sees each attempt, and a retry
//! after a rejection waits for the breaker's next probe — unless that is past
//! the deadline, in which case the rejection is returned at once.
//!
//! # Events
//!
//! [`Attempt`](crate::EventKind::Attempt) before each attempt,
//! [`RetryScheduled`](crate::EventKind::RetryScheduled) with the delay,
//! [`RetryBudgetExhausted`](crate::EventKind::RetryBudgetExhausted), and
//! [`RetriesExhausted`](crate::EventKind::RetriesExhausted) when attempts or
//! time ran out.
//!
//! ```
//! use ripcord::{Backoff, Error, Retry, TokioClock};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let retry = Retry::builder("inventory")
//!     .max_attempts(3)
//!     .backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2)))
//!     .clock(TokioClock::new())
//!     .build()
//!     .unwrap();
//!
//! let calls = AtomicU32::new(0);
//! let r = retry
//!     .execute(|| async {
//!         match calls.fetch_add(1, Ordering::Relaxed) {
//!             0 | 1 => Err("busy"),
//!             _ => Ok("done"),
//!         }
//!     })
//!     .await;
//! assert_eq!(r.unwrap(), "done");
//! assert_eq!(calls.load(Ordering::Relaxed), 3); // after 100 ms, then 200 ms
//!
//! // Out of attempts: the last error stands.
//! let r: Result<(), _> = retry.execute(|| async { Err("down") }).await;
//! assert!(matches!(r, Err(Error::Inner("down"))));
//! # }
//! ```

mod budget;
mod config;
mod retry_on;

pub use budget::{RetryBudget, RetryBudgetBuilder, RetryBudgetConfig};
pub use config::{RetryBuilder, RetryConfig, MAX_ATTEMPTS};

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::ClockHandle;
use crate::event::{Event, EventKind, Events};
use crate::random::SplitMix64;
use crate::sync::{AtomicU64, Ordering};
use crate::{Backoff, Error, Name};
use config::AttemptHook;
use retry_on::{Rules, Verdict};

/// A retry policy. Cheap to clone: clones share one configuration, budget and
/// event stream. It has no type parameters: one policy serves calls of any
/// result type, and predicates apply to the calls whose type they name.
///
/// See the [module docs](self) for the exact semantics.
#[derive(Clone)]
pub struct Retry {
    inner: Arc<Inner>,
}

struct Inner {
    name: Name,
    max_attempts: u32,
    max_total: Option<u64>,
    backoff: Backoff,
    budget: Option<RetryBudget>,
    rules: Rules,
    hooks: Vec<AttemptHook>,
    clock: ClockHandle,
    events: Events,
    seed: u64,
    /// Calls that have drawn jitter so far (each gets its own random stream).
    streams: AtomicU64,
}

/// One attempt, as the [`on_attempt`](RetryBuilder::on_attempt) hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    number: u32,
    elapsed: Duration,
    delay: Duration,
}

impl Attempt {
    /// The attempt's number: 1 for the first call, 2 for the first retry.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Whether this attempt is a retry.
    pub fn is_retry(&self) -> bool {
        self.number > 1
    }

    /// Time since the first attempt started, on the policy's clock.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The delay waited before this attempt (zero for the first).
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

/// What to do after an attempt (see [`RetryRun::next`]).
#[derive(Debug)]
#[must_use = "either wait and retry, or return the result"]
pub enum RetryStep<R> {
    /// Wait `after`, then make another attempt. The failed result has been
    /// dropped.
    Retry {
        /// The delay before the next attempt.
        after: Duration,
    },
    /// Stop here with this result: a success, a result not to retry, or the
    /// last one when a limit was reached.
    Done(R),
}

impl Retry {
    /// Starts building a retry policy named `name` (default: 3 attempts,
    /// exponential backoff from 100 ms to 10 s with full jitter).
    pub fn builder(name: &str) -> RetryBuilder {
        RetryBuilder::new(name)
    }

    fn from_builder(b: RetryBuilder) -> Self {
        let budget = b.budget.or_else(|| {
            b.config
                .budget
                .clone()
                .map(|c| RetryBudget::from_config(c, b.clock.clone()))
        });
        let seed = b
            .seed
            .unwrap_or_else(|| SplitMix64::from_entropy().next_u64());
        Retry {
            inner: Arc::new(Inner {
                name: b.name,
                max_attempts: b.config.max_attempts,
                max_total: b.config.max_total_time.map(nanos),
                backoff: b.config.backoff,
                budget,
                rules: b.rules,
                hooks: b.hooks,
                clock: b.clock,
                events: Events::new(b.listeners, b.event_capacity),
                seed,
                streams: AtomicU64::new(0),
            }),
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// Attempts per call, the first one included.
    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// The retry budget, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.inner.budget.as_ref()
    }

    /// Calls `f` until its result is not one to retry or a limit is reached,
    /// and returns the last result (errors as [`Error::Inner`]).
    ///
    /// `T` and `E` must be `'static` (owned types, as nearly all results are):
    /// predicates are matched to calls by type.
    pub async fn execute<T, E, F, Fut>(&self, mut f: F) -> Result<T, Error<E>>
    where
        T: 'static,
        E: 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut run = self.start();
        loop {
            run.begin_attempt();
            let result = f().await;
            match run.next(result) {
                RetryStep::Done(r) => return r.map_err(Error::Inner),
                RetryStep::Retry { after } => sleep(after).await,
            }
        }
    }

    /// Like [`execute`](Self::execute), for a call that already returns a
    /// ripcord [`Error`] (inner policies': breaker, timeout, bulkhead, rate
    /// limiter). Which of their errors are retried, and after how long, is in
    /// the [module docs](self#composition).
    ///
    /// ```
    /// use ripcord::{Backoff, CircuitBreaker, Retry, TokioClock};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let clock = TokioClock::new();
    /// let breaker = CircuitBreaker::builder("db")
    ///     .consecutive_failures(1)
    ///     .open_for(Backoff::fixed(Duration::from_secs(1)))
    ///     .clock(clock)
    ///     .build()
    ///     .unwrap();
    /// let retry = Retry::builder("db")
    ///     .max_attempts(3)
    ///     .backoff(Backoff::fixed(Duration::from_millis(10)))
    ///     .clock(clock)
    ///     .build()
    ///     .unwrap();
    ///
    /// let start = tokio::time::Instant::now();
    /// let mut calls = 0;
    /// let r = retry
    ///     .execute_composed(|| {
    ///         calls += 1;
    ///         let fail = calls == 1;
    ///         breaker.call(move || async move { if fail { Err("down") } else { Ok("up") } })
    ///     })
    ///     .await;
    /// // Attempt 1 fails and trips the breaker; attempt 2 is not made before
    /// // the breaker's probe time (1 s), rather than after 10 ms into a rejection.
    /// assert_eq!(r.unwrap(), "up");
    /// assert_eq!(start.elapsed(), Duration::from_secs(1));
    /// # }
    /// ```
    pub async fn execute_composed<T, E, F, Fut>(&self, mut f: F) -> Result<T, Error<E>>
    where
        T: 'static,
        E: 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
    {
        let mut run = self.start();
        loop {
            run.begin_attempt();
            let result = f().await;
            match run.next_composed(result) {
                RetryStep::Done(r) => return r,
                RetryStep::Retry { after } => sleep(after).await,
            }
        }
    }

    /// Starts one call's run, for composers that drive attempts themselves
    /// (`execute` is this loop). Deposits in the budget.
    ///
    /// ```
    /// use ripcord::retry::RetryStep;
    /// use ripcord::{Backoff, Retry};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let retry = Retry::builder("manual")
    ///     .backoff(Backoff::fixed(Duration::from_millis(5)))
    ///     .build()
    ///     .unwrap();
    /// let mut run = retry.start();
    /// let result = loop {
    ///     let n = run.begin_attempt();
    ///     let result: Result<u32, &str> = if n < 2 { Err("flaky") } else { Ok(n) };
    ///     match run.next(result) {
    ///         RetryStep::Retry { after } => tokio::time::sleep(after).await,
    ///         RetryStep::Done(r) => break r,
    ///     }
    /// };
    /// assert_eq!(result, Ok(2));
    /// # }
    /// ```
    pub fn start(&self) -> RetryRun<'_> {
        let inner = &*self.inner;
        if let Some(b) = &inner.budget {
            b.deposit();
        }
        RetryRun {
            retry: inner,
            attempts: 0,
            start: inner.clock.now_nanos(),
            deadline: None,
            rng: None,
            previous: None,
            delay: Duration::ZERO,
        }
    }

    /// Receives every event from now on. A receiver that falls behind loses
    /// the oldest events; it never slows the policy.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        f.debug_struct("Retry")
            .field("name", &i.name)
            .field("max_attempts", &i.max_attempts)
            .field("max_total", &i.max_total.map(Duration::from_nanos))
            .field("backoff", &i.backoff)
            .field("budget", &i.budget)
            .field("rules", &i.rules)
            .finish()
    }
}

/// One call's retry state: attempts made, start time, jitter stream, deadline.
/// Made by [`Retry::start`].
///
/// The loop: [`begin_attempt`](Self::begin_attempt), make the attempt, hand
/// its result to [`next`](Self::next) (or
/// [`next_composed`](Self::next_composed)); on
/// [`RetryStep::Retry`] wait and go round again.
pub struct RetryRun<'a> {
    retry: &'a Inner,
    attempts: u32,
    start: u64,
    deadline: Option<tokio::time::Instant>,
    rng: Option<SplitMix64>,
    previous: Option<Duration>,
    delay: Duration,
}

impl RetryRun<'_> {
    /// Adds a deadline: no retry is scheduled that would start at or after
    /// it. The earliest of this, earlier calls and the task's deadline wins.
    pub fn set_deadline(&mut self, deadline: tokio::time::Instant) {
        self.deadline = Some(match self.deadline {
            Some(d) if d < deadline => d,
            _ => deadline,
        });
    }

    /// Attempts begun so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Call before every attempt, the first included: counts it, emits
    /// [`Attempt`](EventKind::Attempt) and runs the `on_attempt` hooks.
    /// Returns the attempt's number (1 for the first).
    pub fn begin_attempt(&mut self) -> u32 {
        self.attempts = self.attempts.saturating_add(1);
        let r = self.retry;
        if !r.hooks.is_empty() || r.events.active() {
            let now = r.clock.now_nanos();
            let attempt = Attempt {
                number: self.attempts,
                elapsed: Duration::from_nanos(now.saturating_sub(self.start)),
                delay: self.delay,
            };
            for hook in &r.hooks {
                hook(&attempt);
            }
            r.emit(
                now,
                EventKind::Attempt {
                    attempt: self.attempts,
                },
            );
        }
        self.attempts
    }

    /// Decides what follows an attempt of a plain call.
    pub fn next<T: 'static, E: 'static>(
        &mut self,
        result: Result<T, E>,
    ) -> RetryStep<Result<T, E>> {
        match self.retry.rules.plain(&result) {
            Verdict::Stop => RetryStep::Done(result),
            Verdict::Retry { not_before } => match self.schedule(not_before) {
                Some(after) => RetryStep::Retry { after },
                None => RetryStep::Done(result),
            },
        }
    }

    /// Decides what follows an attempt of a composed call (one that returns
    /// inner policies' errors; see [`Retry::execute_composed`]).
    pub fn next_composed<T: 'static, E: 'static>(
        &mut self,
        result: Result<T, Error<E>>,
    ) -> RetryStep<Result<T, Error<E>>> {
        let (verdict, result) = self.retry.rules.composed(result);
        match verdict {
            Verdict::Stop => RetryStep::Done(result),
            Verdict::Retry { not_before } => match self.schedule(not_before) {
                Some(after) => RetryStep::Retry { after },
                None => RetryStep::Done(result),
            },
        }
    }

    /// The delay before the next attempt, or `None` if a limit forbids it.
    fn schedule(&mut self, not_before: Option<Duration>) -> Option<Duration> {
        let r = self.retry;
        let n = self.attempts.max(1);
        if n >= r.max_attempts {
            return self.exhausted();
        }
        let rng = self.rng.get_or_insert_with(|| {
            let k = r.streams.fetch_add(1, Ordering::Relaxed);
            SplitMix64::new(r.seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        });
        let backoff = r.backoff.next_delay(n, self.previous, rng);
        self.previous = Some(backoff);
        let delay = match not_before {
            Some(d) if d > backoff => d,
            _ => backoff,
        };
        let now = r.clock.now_nanos();
        if let Some(total) = r.max_total {
            let start_at = now.saturating_sub(self.start).saturating_add(nanos(delay));
            if start_at >= total {
                return self.exhausted();
            }
        }
        let deadline = match (self.deadline, crate::timeout::current_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(deadline) = deadline {
            let start_at = tokio::time::Instant::now().checked_add(delay);
            if start_at.is_none_or(|at| at >= deadline) {
                return self.exhausted();
            }
        }
        if let Some(b) = &r.budget {
            if !b.try_withdraw() {
                r.emit(now, EventKind::RetryBudgetExhausted);
                return None;
            }
        }
        r.emit(
            now,
            EventKind::RetryScheduled {
                attempt: n + 1,
                delay,
            },
        );
        self.delay = delay;
        Some(delay)
    }

    fn exhausted(&self) -> Option<Duration> {
        let r = self.retry;
        if r.events.active() {
            r.emit(
                r.clock.now_nanos(),
                EventKind::RetriesExhausted {
                    attempts: self.attempts,
                },
            );
        }
        None
    }
}

impl fmt::Debug for RetryRun<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryRun")
            .field("retry", &self.retry.name)
            .field("attempts", &self.attempts)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn emit(&self, now: u64, kind: EventKind) {
        if self.events.active() {
            self.events.emit(Event {
                name: self.name.clone(),
                at: Duration::from_nanos(now),
                epoch: 0,
                kind,
            });
        }
    }
}

async fn sleep(after: Duration) {
    if !after.is_zero() {
        tokio::time::sleep(after).await;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
