//! Running one call through a pipeline: one loop over the policies, no boxed
//! future per layer.
//!
//! The walk goes inward, policy by policy, taking what each one hands out
//! (a breaker permit, a bulkhead slot, a rate-limiter permit, a deadline, a
//! retry run) and keeping it in a stack of frames; then it makes the call;
//! then it unwinds outward, giving each frame the result: a breaker records
//! the outcome, a bulkhead slot is released, a timeout turns its own expired
//! deadline into [`Error::Timeout`], a fallback recovers, a retry decides — and
//! to retry, it sleeps (holding nothing of the policies inside it) and walks
//! inward again from just inside itself. Only a hedge recurses: each of its
//! attempts is a boxed walk of the policies inside it.
//!
//! The frames live in the walk's own future (inline for up to
//! `INLINE_FRAMES` policies and `INLINE_RUNS` retries), so a call allocates
//! nothing. The walk's future is kept small, because awaiting a future copies
//! it: waits off the hot path (a bulkhead queue, a rate limiter's wait, a
//! retry's sleep, a fallback, a hedge) are boxed, an allocation paid only
//! when the call waits, fails or hedges anyway.
//!
//! A deadline is a `tokio::time::Instant` raced against every wait (the call,
//! a bulkhead queue, a rate-limiter wait, a retry's sleep, a fallback); the
//! timer is only created if the awaited future is not ready at once. When it
//! expires, every frame inside the timeout unwinds as "cut off": a breaker
//! records a failure, slots are released, retries and fallbacks inside do not
//! run; the timeout's own frame then reports [`Error::Timeout`].

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

use tokio::time::Instant;

use super::rules::{self, Ended};
use super::{Inner, Pipeline, Policy};
use crate::bulkhead::BulkheadPermit;
use crate::chaos::Fault;
use crate::retry::{RetryRun, RetryStep};
use crate::timeout as deadline;
use crate::{Error, Outcome, Permit};

/// What a call returns, as the walk takes it: its own result (its error
/// becomes [`Error::Inner`]), or — for [`Pipeline::execute_composed`] — a
/// result whose errors are already ripcord's (policies the call ran itself).
pub(super) trait CallResult<T, E> {
    fn into_flow(self) -> Result<T, Error<E>>;
}

impl<T, E> CallResult<T, E> for Result<T, E> {
    #[inline]
    fn into_flow(self) -> Result<T, Error<E>> {
        self.map_err(Error::Inner)
    }
}

impl<T, E> CallResult<T, E> for Result<T, Error<E>> {
    #[inline]
    fn into_flow(self) -> Result<T, Error<E>> {
        self
    }
}

/// Why the walk stopped short of a value.
pub(super) enum Stop<E> {
    /// A policy or the call returned this error.
    Error(Error<E>),
    /// The deadline of the timeout at this policy index expired.
    Expired(usize),
}

/// What a walk returns: the caller's result, or (for a hedged attempt) one
/// that may still carry an outer deadline's expiry.
pub(super) trait Mode<T, E> {
    type Output;
    fn finish(flow: Result<T, Stop<E>>) -> Self::Output;
}

/// The walk of `Pipeline::execute`.
pub(super) struct Caller;

impl<T, E> Mode<T, E> for Caller {
    type Output = Result<T, Error<E>>;

    #[inline]
    fn finish(flow: Result<T, Stop<E>>) -> Self::Output {
        match flow {
            Ok(v) => Ok(v),
            Err(Stop::Error(e)) => Err(e),
            // Every deadline comes from a timeout of this walk, whose frame
            // turns its expiry into an error before the walk ends.
            Err(Stop::Expired(_)) => unreachable!("a deadline expired outside its timeout"),
        }
    }
}

/// The walk of one hedged attempt.
pub(super) struct Attempt;

impl<T, E> Mode<T, E> for Attempt {
    type Output = Result<T, Stop<E>>;

    #[inline]
    fn finish(flow: Result<T, Stop<E>>) -> Self::Output {
        flow
    }
}

#[derive(Clone, Copy)]
pub(super) struct Deadline {
    at: Instant,
    started: Instant,
    /// Index of the timeout that set it.
    idx: usize,
}

/// What a policy handed out on the way in, given back on the way out.
enum Frame<'a> {
    /// A timeout: the deadline outside it, restored when it unwinds.
    Timeout(Option<Deadline>),
    /// A retry: its run is in the walk's `runs`, under this policy's index.
    Retry,
    Breaker(Permit<'a>),
    Bulkhead(#[allow(dead_code)] BulkheadPermit<'a>),
    /// Nothing to give back (rate limiter, fault injection that let the call
    /// through), or the work is done on the way out (fallback).
    Plain,
    /// Fault injection forced this outcome on the breakers outside it.
    Forced(Outcome),
}

/// Frames kept inline, so that a call through a pipeline of up to this many
/// policies never allocates; longer pipelines spill the rest to the heap.
const INLINE_FRAMES: usize = 6;
/// Retry runs kept inline (a pipeline rarely has more than one retry).
const INLINE_RUNS: usize = 1;

/// A stack with its first `N` slots inline.
struct Stack<T, const N: usize> {
    inline: [Option<T>; N],
    spill: Vec<T>,
    len: usize,
}

impl<T, const N: usize> Stack<T, N> {
    #[inline(always)]
    fn new() -> Self {
        Stack {
            inline: [const { None }; N],
            spill: Vec::new(),
            len: 0,
        }
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn push(&mut self, value: T) {
        if self.len < N {
            // The slot is empty (slots above `len` always are): no drop glue.
            std::mem::forget(self.inline[self.len].replace(value));
        } else {
            self.spill.push(value);
        }
        self.len += 1;
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        if self.len < N {
            self.inline[self.len].take()
        } else {
            self.spill.pop()
        }
    }

    #[inline(always)]
    fn last_mut(&mut self) -> Option<&mut T> {
        match self.len {
            0 => None,
            n if n <= N => self.inline[n - 1].as_mut(),
            _ => self.spill.last_mut(),
        }
    }
}

/// Awaits `fut`, or the deadline if that comes first; for the waits off the
/// hot path (a bulkhead queue, a rate limiter, a retry's sleep, a fallback),
/// which the walk boxes. The timer is created only if `fut` is not ready at
/// its first poll.
async fn race<Fut: Future>(fut: Fut, deadline: Option<Deadline>) -> Result<Fut::Output, usize> {
    let Some(d) = deadline else {
        return Ok(fut.await);
    };
    let mut fut = pin!(fut);
    let mut sleep = pin!(None::<tokio::time::Sleep>);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if sleep.is_none() {
            sleep.set(Some(tokio::time::sleep_until(d.at)));
        }
        match sleep.as_mut().as_pin_mut().map(|s| s.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(d.idx)),
            _ => Poll::Pending,
        }
    })
    .await
}

/// What fault injection does to a call it hit (see [`inject`]).
enum Injected<E> {
    /// Make the call.
    Go,
    /// Make the call; the breakers outside record this.
    Forced(Outcome),
    /// Do not: the walk stops here.
    Stop(Stop<E>),
}

/// Runs an injection on a call: waits its latency (inside the deadline),
/// then says what becomes of the call. Boxed by the walk: it is off the hot
/// path, and one await point keeps the walk's future small.
async fn inject<T, E>(
    inner: &Inner<T, E>,
    chaos: &crate::Chaos,
    injection: crate::chaos::Injection,
    deadline: Option<Deadline>,
) -> Injected<E> {
    if let Some(d) = injection.delay {
        if let Err(k) = race(tokio::time::sleep(d), deadline).await {
            return Injected::Stop(Stop::Expired(k));
        }
    }
    match injection.fault {
        None => Injected::Go,
        Some(Fault::Outcome(o)) => Injected::Forced(o),
        Some(Fault::Stall) => match race(std::future::pending::<()>(), deadline).await {
            Err(k) => Injected::Stop(Stop::Expired(k)),
            Ok(()) => unreachable!("a stall never ends"),
        },
        Some(fault) => Injected::Stop(Stop::Error(inner.injected(chaos, fault))),
    }
}

/// The walk: inward through the policies from index `$from`, the call, and
/// outward again. A macro, so that `Pipeline::execute` is itself the walk's
/// future: an async fn awaiting another copies the inner future (about a
/// kilobyte) on every call.
macro_rules! walk {
    ($inner:expr, $from:expr, $f:expr, $outer:expr, $mode:ty) => {{
        let outer: Option<Deadline> = $outer;
        if let Some(d) = outer {
            // A hedged attempt started as the deadline passed.
            if Instant::now() >= d.at {
                return <$mode as Mode<T, E>>::finish(Err(Stop::Expired(d.idx)));
            }
        }
        let inner = $inner;
        let f = $f;
        let from: usize = $from;
        let policies = &*inner.policies;
        // The policies walked with a frame each (see `Inner::walk_end`).
        let framed = &policies[..inner.walk_end];
        let mut frames: Stack<Frame<'_>, INLINE_FRAMES> = Stack::new();
        // The runs of the retries entered, innermost last.
        let mut runs: Stack<RetryRun<'_>, INLINE_RUNS> = Stack::new();
        let mut deadline = outer;
        let mut i = from;
        // An outcome fault injection forces on the breakers outside it.
        let mut forced: Option<Outcome>;
        'walk: loop {
            forced = None;
            // Inward: take what each policy hands out, then make the call.
            let mut flow: Result<T, Stop<E>> = loop {
                let Some(policy) = framed.get(i) else {
                    // An innermost fault injection decides at the call, with
                    // no frame of its own: what it forces holds for every
                    // breaker (all are outside it).
                    if let Some(Policy::Chaos(c)) = policies.get(framed.len()) {
                        if let Some(injection) = c.decide() {
                            match Box::pin(inject(inner, c, injection, deadline)).await {
                                Injected::Go => {}
                                Injected::Forced(o) => forced = Some(o),
                                Injected::Stop(stop) => break Err(stop),
                            }
                        }
                    }
                    // The call itself, inside the deadline (which it can read
                    // with `timeout::current_deadline`).
                    break match deadline {
                        None => CallResult::into_flow(f().await).map_err(Stop::Error),
                        Some(d) => {
                            // As `race`, inline: a future of its own would be
                            // copied into the walk's.
                            let mut call = pin!(deadline::scope(d.at, f()));
                            let mut sleep = pin!(None::<tokio::time::Sleep>);
                            poll_fn(|cx| {
                                if let Poll::Ready(r) = call.as_mut().poll(cx) {
                                    return Poll::Ready(
                                        CallResult::into_flow(r).map_err(Stop::Error),
                                    );
                                }
                                if sleep.is_none() {
                                    sleep.set(Some(tokio::time::sleep_until(d.at)));
                                }
                                match sleep.as_mut().as_pin_mut().map(|s| s.poll(cx)) {
                                    Some(Poll::Ready(())) => Poll::Ready(Err(Stop::Expired(d.idx))),
                                    _ => Poll::Pending,
                                }
                            })
                            .await
                        }
                    };
                };
                match policy {
                    Policy::Timeout(t) => {
                        frames.push(Frame::Timeout(deadline));
                        if let Some(s) = rules::timeout_deadline(t, deadline.map(|d| d.at)) {
                            deadline = Some(Deadline {
                                at: s.at,
                                started: s.now,
                                idx: i,
                            });
                        }
                    }
                    Policy::Retry(r) => {
                        let mut run = r.start();
                        if let Some(d) = deadline {
                            run.set_deadline(d.at);
                        }
                        run.begin_attempt();
                        runs.push(run);
                        frames.push(Frame::Retry);
                    }
                    Policy::CircuitBreaker(b) => match b.try_acquire() {
                        Ok(p) => frames.push(Frame::Breaker(p)),
                        Err(r) => break Err(Stop::Error(Error::Rejected(r))),
                    },
                    Policy::Bulkhead(b) if b.max_queued() == 0 => match b.try_acquire() {
                        Ok(p) => frames.push(Frame::Bulkhead(p)),
                        Err(full) => break Err(Stop::Error(Error::BulkheadFull(full))),
                    },
                    Policy::Bulkhead(b) => match Box::pin(race(b.acquire(), deadline)).await {
                        Ok(Ok(p)) => frames.push(Frame::Bulkhead(p)),
                        Ok(Err(full)) => break Err(Stop::Error(Error::BulkheadFull(full))),
                        Err(k) => break Err(Stop::Expired(k)),
                    },
                    Policy::RateLimiter(r) if r.max_wait().is_zero() => match r.try_acquire() {
                        Ok(()) => frames.push(Frame::Plain),
                        Err(limited) => break Err(Stop::Error(Error::RateLimited(limited))),
                    },
                    Policy::RateLimiter(r) => match Box::pin(race(r.acquire(), deadline)).await {
                        Ok(Ok(())) => frames.push(Frame::Plain),
                        Ok(Err(limited)) => break Err(Stop::Error(Error::RateLimited(limited))),
                        Err(k) => break Err(Stop::Expired(k)),
                    },
                    Policy::ExternalRateLimiter(r) => {
                        match Box::pin(race(r.acquire(), deadline)).await {
                            Ok(Ok(())) => frames.push(Frame::Plain),
                            Ok(Err(limited)) => {
                                break Err(Stop::Error(Error::RateLimited(limited)))
                            }
                            Err(k) => break Err(Stop::Expired(k)),
                        }
                    }
                    Policy::Fallback(_) => frames.push(Frame::Plain),
                    Policy::Chaos(c) => match c.decide() {
                        None => frames.push(Frame::Plain),
                        Some(injection) => {
                            match Box::pin(inject(inner, c, injection, deadline)).await {
                                Injected::Go => frames.push(Frame::Plain),
                                Injected::Forced(o) => frames.push(Frame::Forced(o)),
                                Injected::Stop(stop) => break Err(stop),
                            }
                        }
                    },
                    Policy::Hedge(h) => {
                        // Each attempt is a walk of the policies inside the
                        // hedge; `f` is a reference here, so every level of
                        // this recursion is the same walk type.
                        let attempt = || Box::pin(inner.walk::<Attempt, _, _>(i + 1, f, deadline));
                        break Box::pin(h.execute(attempt)).await;
                    }
                }
                i += 1;
            };
            // Outward: give each frame the result.
            while let Some(frame) = frames.pop() {
                let idx = from + frames.len();
                match frame {
                    Frame::Timeout(prev) => {
                        if let (Err(Stop::Expired(k)), Some(d), Policy::Timeout(t)) =
                            (&flow, deadline, &policies[idx])
                        {
                            if *k == idx {
                                flow = Err(Stop::Error(rules::expired(t, d.started)));
                            }
                        }
                        deadline = prev;
                    }
                    Frame::Breaker(permit) => permit.record(match forced {
                        Some(o) => o,
                        None => inner.outcome(&mut flow),
                    }),
                    Frame::Forced(o) => forced = Some(o),
                    Frame::Bulkhead(slot) => drop(slot),
                    Frame::Plain => {
                        if let Policy::Fallback(fb) = &policies[idx] {
                            if let Err(Stop::Error(e)) = flow {
                                flow = match Box::pin(race(fb.recover(Err(e)), deadline)).await {
                                    Ok(r) => r.map_err(Stop::Error),
                                    Err(k) => Err(Stop::Expired(k)),
                                };
                            }
                        }
                    }
                    Frame::Retry => {
                        let Some(run) = runs.last_mut() else {
                            unreachable!("a retry frame has its run")
                        };
                        let result = match flow {
                            Ok(v) => Ok(v),
                            Err(Stop::Error(e)) => Err(e),
                            // An outer deadline expired: no time to retry.
                            Err(expired) => {
                                flow = Err(expired);
                                runs.pop();
                                continue;
                            }
                        };
                        match run.next_composed(result) {
                            RetryStep::Done(r) => {
                                flow = r.map_err(Stop::Error);
                                runs.pop();
                            }
                            RetryStep::Retry { after } => {
                                // Nothing of the policies inside is held now.
                                match Box::pin(race(tokio::time::sleep(after), deadline)).await {
                                    Ok(()) => {
                                        if let Some(run) = runs.last_mut() {
                                            run.begin_attempt();
                                        }
                                        frames.push(Frame::Retry);
                                        i = idx + 1;
                                        continue 'walk;
                                    }
                                    Err(k) => {
                                        flow = Err(Stop::Expired(k));
                                        runs.pop();
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return <$mode as Mode<T, E>>::finish(flow);
        }
    }};
}

impl<T: 'static, E: 'static> Inner<T, E> {
    /// One hedged attempt: the walk from `from` inside the deadline `outer`.
    pub(super) async fn walk<M, G, Fut>(
        &self,
        from: usize,
        f: G,
        outer: Option<Deadline>,
    ) -> M::Output
    where
        M: Mode<T, E>,
        G: Fn() -> Fut + Copy,
        Fut: Future,
        Fut::Output: CallResult<T, E>,
    {
        walk!(self, from, f, outer, M)
    }

    /// The outcome a breaker records for a result (see [`rules::outcome`]).
    fn outcome(&self, flow: &mut Result<T, Stop<E>>) -> Outcome {
        let classify = self.classify.as_deref();
        match flow {
            Ok(_) | Err(Stop::Error(Error::Inner(_))) => {}
            Err(Stop::Error(e)) => return rules::outcome(classify, Ended::Stopped(e)),
            Err(Stop::Expired(_)) => return rules::outcome(classify, Ended::CutOff),
        }
        if classify.is_none() {
            return rules::unclassified(flow.is_ok());
        }
        // The classifier judges a `Result<T, E>`: take the value out, and back.
        let r: Result<T, E> = match std::mem::replace(flow, Err(Stop::Expired(usize::MAX))) {
            Ok(v) => Ok(v),
            Err(Stop::Error(Error::Inner(e))) => Err(e),
            Err(other) => {
                // Judged above: put it back.
                *flow = Err(other);
                return self.outcome(flow);
            }
        };
        let outcome = rules::outcome(classify, Ended::Call(&r));
        *flow = r.map_err(|e| Stop::Error(Error::Inner(e)));
        outcome
    }
}

impl<T: 'static, E: 'static> Pipeline<T, E> {
    /// Runs `f` through the policies. `f` is called once per attempt (a
    /// retry or a hedge calls it again).
    ///
    /// The future is `Send` (spawnable on a multi-threaded runtime) when `f`
    /// is `Send + Sync` and its future, `T` and `E` are `Send`. Dropping it
    /// cancels the call and gives back everything it held.
    pub async fn execute<F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        walk!(&*self.inner, 0, &f, None, Caller)
    }

    /// Like [`execute`](Self::execute), for a call that returns a ripcord
    /// [`Error`] itself — one that runs policies of its own, say a second
    /// pipeline's [`admit`](Self::admit) for each attempt — whose errors
    /// the policies here judge as their own kind: an inner
    /// [`Error::Rejected`] is a breaker's refusal to a retry or a fallback
    /// here, not a failed call.
    ///
    /// ```
    /// use ripcord::{CircuitBreaker, Pipeline, PolicyKind, Retry};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ripcord::ConfigError> {
    /// let attempt: Pipeline<u32, String> = Pipeline::builder()
    ///     .circuit_breaker(CircuitBreaker::builder("api").consecutive_failures(1))
    ///     .build()?;
    /// let outer: Pipeline<u32, String> = Pipeline::builder()
    ///     // No retry later than 1 s: the breaker's next probe is further off.
    ///     .retry(Retry::builder("api").max_attempts(3).max_total_time(Duration::from_secs(1)))
    ///     .build()?;
    /// let r = outer
    ///     .execute_composed(|| async {
    ///         match attempt.admit() {
    ///             Some(Ok(admitted)) => admitted.finish(Err("down".to_string())),
    ///             Some(Err(refused)) => Err(refused),
    ///             None => unreachable!("a breaker decides at once"),
    ///         }
    ///     })
    ///     .await;
    /// // The second attempt found the breaker open: the retry saw a rejection.
    /// assert_eq!(r.unwrap_err().policy(), Some(PolicyKind::CircuitBreaker));
    /// # Ok(()) }
    /// ```
    pub async fn execute_composed<F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
    {
        walk!(&*self.inner, 0, &f, None, Caller)
    }
}
