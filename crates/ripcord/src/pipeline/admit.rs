//! The fast path of a pipeline whose policies all decide at once.
//!
//! A pipeline of timeouts, circuit breakers, bulkheads without a queue and
//! rate limiters that never wait admits a call or refuses it without
//! waiting, and never calls again. [`Pipeline::admit`] takes what each of
//! those policies hands out right away and gives it back as an
//! [`Admitted`], which records the call's result when told. The caller runs
//! the call itself, inside [`Admitted::deadline`]: middleware can then
//! write its own (nameable, unboxed) future around the call instead of
//! awaiting [`Pipeline::execute`]'s.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::rules::{self, Ended};
use super::{Pipeline, Policy};
use crate::bulkhead::OwnedBulkheadPermit;
use crate::chaos::Fault;
use crate::{Error, Outcome, OwnedPermit, Timeout};

/// What a breaker or a bulkhead handed out.
enum Held {
    Breaker(OwnedPermit),
    Bulkhead(#[allow(dead_code)] OwnedBulkheadPermit),
}

impl Held {
    /// Gives it back: a breaker records `outcome`, a slot is released.
    #[inline]
    fn give_back(self, outcome: impl FnOnce() -> Outcome) {
        if let Held::Breaker(permit) = self {
            permit.record(outcome());
        }
    }
}

/// The hand-outs of one call, outermost first. Two are kept inline (the
/// usual pipeline has one breaker and at most one bulkhead), so that a call
/// allocates nothing and the [`Admitted`] — and a future holding it —
/// stays small; more are kept in a vector.
enum Holds {
    None,
    One(Held),
    Two(Held, Held),
    Many(Vec<Held>),
}

impl Holds {
    #[inline]
    fn push(&mut self, held: Held) {
        match self {
            Holds::None => *self = Holds::One(held),
            _ => self.push_more(held),
        }
    }

    #[cold]
    #[inline(never)]
    fn push_more(&mut self, held: Held) {
        *self = match std::mem::replace(self, Holds::None) {
            Holds::None => Holds::One(held),
            Holds::One(first) => Holds::Two(first, held),
            Holds::Two(first, second) => Holds::Many(vec![first, second, held]),
            Holds::Many(mut all) => {
                all.push(held);
                Holds::Many(all)
            }
        };
    }

    /// Hands each hand-out to `f`, innermost first, with the number of
    /// hand-outs outside it.
    #[inline]
    fn each(self, mut f: impl FnMut(usize, Held)) {
        match self {
            Holds::None => {}
            Holds::One(held) => f(0, held),
            Holds::Two(first, second) => {
                f(1, second);
                f(0, first);
            }
            Holds::Many(mut all) => {
                while let Some(held) = all.pop() {
                    let left = all.len();
                    f(left, held);
                }
            }
        }
    }

    /// Gives every hand-out back, innermost first; `outcome` gets the
    /// number of hand-outs outside the one it judges.
    #[inline]
    fn give_back(self, mut outcome: impl FnMut(usize) -> Outcome) {
        self.each(|left, held| held.give_back(|| outcome(left)));
    }
}

/// The deadline of an admitted call, and the timeout that set it.
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    /// `at` minus the instant the timeout started, in nanoseconds.
    span: u64,
    /// Index of the timeout among the policies.
    idx: u32,
    /// How many hand-outs were taken outside that timeout.
    outside: u32,
}

/// Whether a policy decides without waiting and never calls again.
pub(super) fn is_direct<T, E>(policy: &Policy<T, E>) -> bool {
    match policy {
        Policy::Timeout(_) | Policy::CircuitBreaker(_) => true,
        Policy::Bulkhead(b) => b.max_queued() == 0,
        Policy::RateLimiter(r) => r.max_wait().is_zero(),
        Policy::ExternalRateLimiter(_)
        | Policy::Retry(_)
        | Policy::Hedge(_)
        | Policy::Fallback(_)
        // An injected latency waits.
        | Policy::Chaos(_) => false,
    }
}

/// A call admitted by every policy of a pipeline (see
/// [`Pipeline::admit`]): the breakers' permits, the bulkheads' slots and the
/// deadline of its timeouts.
///
/// Tell it how the call ended with [`finish`](Self::finish) (or
/// [`record`](Self::record)), or [`timed_out`](Self::timed_out) when the
/// [`deadline`](Self::deadline) passed first. Dropping it instead gives
/// everything back as a cancelled call does: the breakers count the call as
/// ignored and the slots are released.
///
/// It is small (a pointer, a deadline and two permits inline), so that
/// futures holding it move cheaply; a pipeline with more than two breakers
/// and bulkheads keeps their hand-outs in one allocation.
#[must_use = "an admitted call records its result when told; dropping it ignores the call"]
pub struct Admitted<T, E> {
    pipeline: Pipeline<T, E>,
    holds: Holds,
    deadline: Option<Deadline>,
    /// Outcomes forced by fault injection (see [`Taking::forced`]).
    forced: Forced,
}

/// Outcomes forced by fault injection, outermost first: each with the
/// number of hand-outs taken before (outside) it. Empty — and allocation
/// free — unless a fault injection forced one.
type Forced = Vec<(u32, Outcome)>;

/// The outcome for the hand-out with `left` hand-outs outside it: the one
/// the outermost fault injection inside it forced, if any (as the walk of
/// `execute` leaves it), else `judged()`.
#[inline]
fn forced_or(forced: &Forced, left: usize, judged: impl FnOnce() -> Outcome) -> Outcome {
    match forced.iter().find(|(outside, _)| left < *outside as usize) {
        Some((_, o)) => *o,
        None => judged(),
    }
}

impl<T: 'static, E: 'static> Pipeline<T, E> {
    /// Runs the pipeline's policies for one call without waiting, if they
    /// all decide at once: timeouts, circuit breakers, bulkheads without a
    /// queue (`max_queued(0)`) and rate limiters that never wait
    /// (`max_wait` zero). Returns `None` for any other pipeline (one with a
    /// retry, a hedge, a fallback or a policy that may wait): run those
    /// with [`execute`](Self::execute).
    ///
    /// `Some(Err(_))` is a refusal ([`Error::Rejected`],
    /// [`Error::BulkheadFull`], [`Error::RateLimited`]), with the same
    /// effect on the policies outside the refusing one as in `execute`.
    /// `Some(Ok(admitted))`: make the call, inside
    /// [`admitted.deadline()`](Admitted::deadline) if there is one
    /// (cancel it at that instant, and poll it inside
    /// [`admitted.in_scope`](Admitted::in_scope) so that the policies inside
    /// see the deadline), then report how it ended. A call run
    /// this way is judged exactly as `execute` judges it.
    ///
    /// ```
    /// use ripcord::{CircuitBreaker, Pipeline};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pipeline: Pipeline<u32, std::io::Error> = Pipeline::builder()
    ///     .timeout(Duration::from_secs(1))
    ///     .circuit_breaker(CircuitBreaker::builder("api"))
    ///     .build()?;
    /// let admitted = match pipeline.admit() {
    ///     Some(Ok(admitted)) => admitted,
    ///     Some(Err(refused)) => return Err(refused.into()),
    ///     None => unreachable!("a timeout and a breaker decide at once"),
    /// };
    /// let deadline = admitted.deadline().expect("the pipeline has a timeout");
    /// let call = async { Ok::<u32, std::io::Error>(7) };
    /// let result = match tokio::time::timeout_at(deadline, call).await {
    ///     Ok(r) => admitted.finish(r),
    ///     Err(_) => Err(admitted.timed_out()),
    /// };
    /// assert_eq!(result?, 7);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn admit(&self) -> Option<Result<Admitted<T, E>, Error<E>>> {
        if !self.inner.direct {
            return None;
        }
        let mut taking = Taking::new();
        let mut refused = None;
        for (idx, policy) in self.inner.policies.iter().enumerate() {
            match taking.at_once(policy, idx, &mut refused) {
                Step::Next => {}
                Step::Refused => return Some(Err(self.refuse(taking, refused))),
                // `direct` says no policy waits.
                Step::Wait => return None,
            }
        }
        Some(Ok(self.admitted(taking)))
    }

    /// Like [`admit`](Self::admit), for a pipeline whose policies may wait
    /// before they admit a call but never call again: timeouts, circuit
    /// breakers, bulkheads (with a queue too), rate limiters (that wait too)
    /// and [external](crate::PipelineBuilder::external_rate_limiter) rate limiters.
    /// Returns `None` for a pipeline with a retry, a hedge or a fallback.
    ///
    /// A policy that decides at once is asked as `admit` asks it; one that
    /// may wait is awaited inside the deadline of the timeouts outside it.
    /// When that deadline passes first, the result is the timeout's
    /// [`Error::Timeout`], judged as [`Admitted::timed_out`] judges it (the
    /// breakers taken count a failure). Dropping the future while it waits
    /// gives back what was taken, as a cancelled call does.
    ///
    /// ```
    /// use ripcord::{Bulkhead, CircuitBreaker, Pipeline};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pipeline: Pipeline<u32, std::io::Error> = Pipeline::builder()
    ///     .timeout(Duration::from_secs(1))
    ///     .circuit_breaker(CircuitBreaker::builder("api"))
    ///     .bulkhead(Bulkhead::builder("api").max_concurrent(4).max_queued(16))
    ///     .build()?;
    /// assert!(pipeline.admit().is_none(), "the bulkhead may queue");
    /// let admitted = pipeline.admit_waiting().await.expect("no retry, hedge or fallback")?;
    /// assert_eq!(admitted.finish(Ok(7))?, 7);
    /// # Ok(()) }
    /// ```
    pub async fn admit_waiting(&self) -> Option<Result<Admitted<T, E>, Error<E>>> {
        if !self.inner.admissible {
            return None;
        }
        let mut taking = Taking::new();
        let mut left = None;
        for (idx, policy) in self.inner.policies.iter().enumerate() {
            let refused = match taking.at_once(policy, idx, &mut left) {
                Step::Next => continue,
                Step::Refused => left.take(),
                Step::Wait => {
                    let deadline = taking.deadline.map(|d| d.at);
                    if let Policy::Chaos(c) = policy {
                        match self.inject(c, &mut taking, deadline).await {
                            Ok(()) => continue,
                            Err(Some(refused)) => {
                                return Some(Err(self.refuse(taking, Some(refused))))
                            }
                            // The deadline passed during an injected latency or stall.
                            Err(None) => return Some(Err(self.admitted(taking).timed_out())),
                        }
                    }
                    let waited = match policy {
                        Policy::Bulkhead(b) => within(deadline, b.acquire_owned())
                            .await
                            .map(|r| r.map(Some).map_err(Error::BulkheadFull)),
                        Policy::RateLimiter(r) => within(deadline, r.acquire())
                            .await
                            .map(|r| r.map(|()| None).map_err(Error::RateLimited)),
                        Policy::ExternalRateLimiter(r) => within(deadline, r.acquire())
                            .await
                            .map(|r| r.map(|()| None).map_err(Error::RateLimited)),
                        // `admissible` says there is none of the others.
                        _ => return None,
                    };
                    match waited {
                        Some(Ok(slot)) => {
                            if let Some(slot) = slot {
                                taking.hold(Held::Bulkhead(slot));
                            }
                            continue;
                        }
                        Some(Err(refused)) => Some(refused),
                        // The deadline passed during the wait.
                        None => return Some(Err(self.admitted(taking).timed_out())),
                    }
                }
            };
            return Some(Err(self.refuse(taking, refused)));
        }
        Some(Ok(self.admitted(taking)))
    }

    /// A refusal: the policies outside the refusing one give back what they
    /// handed out, innermost first, each judging the refusal.
    #[cold]
    fn refuse(&self, taking: Taking, refused: Option<Error<E>>) -> Error<E> {
        let Some(refused) = refused else {
            unreachable!("a refusal leaves its error")
        };
        self.give_back_refused(taking.holds, &taking.forced, refused)
    }

    /// Gives `holds` back for a call stopped by `refused`, each judging it
    /// (or taking the outcome fault injection forced inside it); returns
    /// the error.
    #[cold]
    fn give_back_refused(&self, holds: Holds, forced: &Forced, refused: Error<E>) -> Error<E> {
        let classify = self.inner.classify.as_deref();
        if let Error::Inner(e) = refused {
            // The caller's own error, injected: judged like the call's.
            let r: Result<T, E> = Err(e);
            holds.give_back(|left| {
                forced_or(forced, left, || rules::outcome(classify, Ended::Call(&r)))
            });
            let Err(e) = r else {
                unreachable!("made above")
            };
            return Error::Inner(e);
        }
        holds.give_back(|left| {
            forced_or(forced, left, || {
                rules::outcome(classify, Ended::Stopped(&refused))
            })
        });
        refused
    }

    #[inline]
    fn admitted(&self, taking: Taking) -> Admitted<T, E> {
        Admitted {
            pipeline: self.clone(),
            holds: taking.holds,
            deadline: taking.deadline,
            forced: taking.forced,
        }
    }

    /// Runs what fault injection decides for this call: `Ok` to go on,
    /// `Err(Some(_))` for an injected refusal, `Err(None)` when the deadline
    /// cut an injected latency or stall short.
    async fn inject(
        &self,
        chaos: &crate::Chaos,
        taking: &mut Taking,
        deadline: Option<Instant>,
    ) -> Result<(), Option<Error<E>>> {
        let Some(injection) = chaos.decide() else {
            return Ok(());
        };
        if let Some(d) = injection.delay {
            within(deadline, tokio::time::sleep(d)).await.ok_or(None)?;
        }
        match injection.fault {
            None => Ok(()),
            Some(Fault::Outcome(o)) => {
                taking.forced.push((taking.taken, o));
                Ok(())
            }
            Some(Fault::Stall) => {
                within(deadline, std::future::pending::<()>()).await;
                Err(None)
            }
            Some(fault) => Err(Some(self.inner.injected(chaos, fault))),
        }
    }
}

/// `fut`, unless `deadline` passes first (`None` then).
async fn within<F: std::future::Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// What one policy did when asked at once (small, so that the loops asking
/// it stay in registers; a refusal's error goes to a slot of the caller's).
enum Step {
    /// It admitted the call (and what it handed out is held).
    Next,
    /// It refused, with the error it left.
    Refused,
    /// It may have to wait, or it is not a policy that admits.
    Wait,
}

/// An admission under way: what the policies asked so far handed out, and
/// the deadline in force.
struct Taking {
    holds: Holds,
    taken: u32,
    deadline: Option<Deadline>,
    /// Outcomes forced by fault injection on the hand-outs taken before
    /// each (their number, the outcome), outermost first.
    forced: Forced,
}

impl Taking {
    #[inline]
    fn new() -> Self {
        Taking {
            holds: Holds::None,
            taken: 0,
            deadline: None,
            forced: Vec::new(),
        }
    }

    #[inline]
    fn hold(&mut self, held: Held) {
        self.holds.push(held);
        self.taken += 1;
    }

    /// Asks `policy` (at index `idx`) without waiting.
    #[inline(always)]
    fn at_once<T, E>(
        &mut self,
        policy: &Policy<T, E>,
        idx: usize,
        refused: &mut Option<Error<E>>,
    ) -> Step {
        let mut refuse = |e: Error<E>| {
            *refused = Some(e);
            Step::Refused
        };
        match policy {
            Policy::Timeout(t) => {
                if let Some(s) = rules::timeout_deadline(t, self.deadline.map(|d| d.at)) {
                    self.deadline = Some(Deadline {
                        at: s.at,
                        span: nanos(s.at.saturating_duration_since(s.now)),
                        idx: idx as u32,
                        outside: self.taken,
                    });
                }
                Step::Next
            }
            Policy::CircuitBreaker(b) => match b.try_acquire_owned() {
                Ok(p) => {
                    self.hold(Held::Breaker(p));
                    Step::Next
                }
                Err(r) => refuse(Error::Rejected(r)),
            },
            Policy::Bulkhead(b) if b.max_queued() == 0 => match b.try_acquire_owned() {
                Ok(p) => {
                    self.hold(Held::Bulkhead(p));
                    Step::Next
                }
                Err(full) => refuse(Error::BulkheadFull(full)),
            },
            Policy::RateLimiter(r) if r.max_wait().is_zero() => match r.try_acquire() {
                Ok(()) => Step::Next,
                Err(limited) => refuse(Error::RateLimited(limited)),
            },
            Policy::Bulkhead(_)
            | Policy::RateLimiter(_)
            | Policy::ExternalRateLimiter(_)
            | Policy::Chaos(_)
            | Policy::Retry(_)
            | Policy::Hedge(_)
            | Policy::Fallback(_) => Step::Wait,
        }
    }
}

/// Whether a policy admits or refuses a call, perhaps after waiting, and
/// never calls again.
pub(super) fn is_admissible<T, E>(policy: &Policy<T, E>) -> bool {
    !matches!(
        policy,
        Policy::Retry(_) | Policy::Hedge(_) | Policy::Fallback(_)
    )
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<T, E> Admitted<T, E> {
    /// The instant the call must be cancelled at: the earliest deadline of
    /// the pipeline's timeouts and of the enclosing task
    /// ([`current_deadline`](crate::timeout::current_deadline)). `None` when
    /// the pipeline has no timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.map(|d| d.at)
    }

    /// Runs `f` inside the call's [`deadline`](Self::deadline), so that the
    /// policies inside the call see it as
    /// [`current_deadline`](crate::timeout::current_deadline) (as they do
    /// in [`execute`](Pipeline::execute)): poll the call's future in `f`.
    /// Without a deadline, just runs `f`.
    #[inline]
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.deadline {
            Some(d) => crate::timeout::sync_scope(d.at, f),
            None => f(),
        }
    }
}

impl<T: 'static, E: 'static> Admitted<T, E> {
    /// The call ended with `result`: each breaker records the outcome the
    /// pipeline's classifier gives it, the slots are released, and the
    /// result comes back with the call's error as [`Error::Inner`].
    pub fn finish(self, result: Result<T, E>) -> Result<T, Error<E>> {
        self.record(&result);
        result.map_err(Error::Inner)
    }

    /// Like [`finish`](Self::finish), for a caller that keeps the result
    /// (and its error type): each breaker records the outcome the
    /// pipeline's classifier gives `result`, and the slots are released.
    #[inline]
    pub fn record(mut self, result: &Result<T, E>) {
        let classify = self.pipeline.inner.classify.as_deref();
        std::mem::replace(&mut self.holds, Holds::None).give_back(|left| {
            forced_or(&self.forced, left, || {
                rules::outcome(classify, Ended::Call(result))
            })
        });
    }

    /// Records `outcome` in every breaker and releases the slots: for a
    /// caller that judges the call itself — say, when the response body of
    /// an HTTP call ends, long after the head was classified.
    #[inline]
    pub fn record_outcome(mut self, outcome: Outcome) {
        let forced = std::mem::take(&mut self.forced);
        std::mem::replace(&mut self.holds, Holds::None)
            .give_back(|left| forced_or(&forced, left, || outcome));
    }

    /// Runs what fault injection `chaos`, placed inside every policy of
    /// this call (where the dependency's own failures would be), decided
    /// for it (`chaos.decide()`): waits an injected latency within the
    /// deadline, and then hands the call back to be made, or ends it the way
    /// the pipeline's walk does — an abort, error or reset as the error the
    /// policies judge (a failure; an injected `error` as the caller's own
    /// with [`chaos_error`](crate::PipelineBuilder::chaos_error)), a stall or a
    /// latency past the deadline as [`timed_out`](Self::timed_out). A forced
    /// outcome holds for every breaker of the call.
    ///
    /// For middleware that keeps a fault injection of its own beside a
    /// direct pipeline, so that the pipeline keeps its fast path (the
    /// proxy's route faults).
    pub async fn inject(
        mut self,
        chaos: &crate::Chaos,
        injection: crate::chaos::Injection,
    ) -> Result<Self, Error<E>> {
        if let Some(d) = injection.delay {
            if within(self.deadline(), tokio::time::sleep(d))
                .await
                .is_none()
            {
                return Err(self.timed_out());
            }
        }
        match injection.fault {
            None => Ok(self),
            Some(Fault::Outcome(o)) => {
                // Inside every hand-out of the call.
                self.forced.push((u32::MAX, o));
                Ok(self)
            }
            Some(Fault::Stall) => {
                within(self.deadline(), std::future::pending::<()>()).await;
                Err(self.timed_out())
            }
            Some(fault) => {
                let error = self.pipeline.inner.injected(chaos, fault);
                let holds = std::mem::replace(&mut self.holds, Holds::None);
                let forced = std::mem::take(&mut self.forced);
                Err(self.pipeline.give_back_refused(holds, &forced, error))
            }
        }
    }

    /// The deadline passed before the call ended (the caller has dropped
    /// it): each breaker counts a failure, the slots are released, and the
    /// timeout whose deadline it was emits its `TimedOut` event and makes
    /// the [`Error::Timeout`], as in [`execute`](Pipeline::execute).
    ///
    /// Without a deadline (a pipeline with no timeout) there is no such
    /// timeout: the error is then a [`Timeout`] named after the pipeline,
    /// with no time elapsed.
    pub fn timed_out(mut self) -> Error<E> {
        let mut error = None;
        let outside = self.deadline.map_or(0, |d| d.outside as usize);
        let classify = self.pipeline.inner.classify.as_deref();
        let forced = std::mem::take(&mut self.forced);
        std::mem::replace(&mut self.holds, Holds::None).each(|left, held| {
            if left >= outside {
                // Inside the timeout: cut off by its deadline.
                return held.give_back(|| {
                    forced_or(&forced, left, || rules::outcome(classify, Ended::CutOff))
                });
            }
            // Outside it: the timeout unwinds first (its event before any
            // of theirs), and they see its error.
            let error = &*error.get_or_insert_with(|| self.expire());
            held.give_back(|| {
                forced_or(&forced, left, || {
                    rules::outcome(classify, Ended::Stopped(error))
                })
            });
        });
        error.unwrap_or_else(|| self.expire())
    }

    /// The error of the timeout whose deadline expired.
    fn expire(&self) -> Error<E> {
        if let Some(d) = self.deadline {
            if let Some(Policy::Timeout(t)) = self.pipeline.inner.policies.get(d.idx as usize) {
                let started =
                    d.at.checked_sub(Duration::from_nanos(d.span))
                        .unwrap_or(d.at);
                return rules::expired(t, started);
            }
        }
        Error::Timeout(Timeout::new(self.pipeline.name(), Duration::ZERO))
    }
}

impl<T, E> fmt::Debug for Admitted<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admitted")
            .field("pipeline", &self.pipeline.inner.name)
            .field("deadline", &self.deadline())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use crate::timeout::{current_deadline, with_deadline};
    use crate::{
        Bulkhead, CircuitBreaker, Error, EventKind, Outcome, Pipeline, RateLimiter, Retry,
        TimeoutPolicy,
    };

    type P = Pipeline<u32, &'static str>;

    fn admitted(p: &P) -> super::Admitted<u32, &'static str> {
        match p.admit() {
            Some(Ok(a)) => a,
            Some(Err(e)) => panic!("refused: {e}"),
            None => panic!("not a direct pipeline"),
        }
    }

    #[tokio::test]
    async fn a_breaker_records_what_the_classifier_says() {
        let breaker = CircuitBreaker::builder("b").build().unwrap();
        let p: P = Pipeline::builder()
            .circuit_breaker(breaker.clone())
            .classify(|r: &Result<u32, &str>| match r {
                Err(e) if *e == "not found" => Outcome::Ignored,
                Err(_) => Outcome::Failure,
                Ok(_) => Outcome::Success,
            })
            .build()
            .unwrap();
        assert_eq!(admitted(&p).deadline(), None);
        assert_eq!(admitted(&p).finish(Ok(7)).unwrap(), 7);
        assert!(matches!(
            admitted(&p).finish(Err("boom")),
            Err(Error::Inner("boom"))
        ));
        admitted(&p).record(&Err("not found"));
        let stats = breaker.stats();
        assert_eq!((stats.calls(), stats.failures()), (2, 1));
        // Dropped without a result: ignored, like a cancelled `execute`.
        drop(admitted(&p));
        assert_eq!(breaker.stats().calls(), 2);
    }

    #[tokio::test]
    async fn pipelines_that_wait_or_call_again_are_not_admitted() {
        let retry: P = Pipeline::builder()
            .retry(Retry::builder("r"))
            .circuit_breaker(CircuitBreaker::builder("b"))
            .build()
            .unwrap();
        assert!(retry.admit().is_none());
        let queued: P = Pipeline::builder()
            .bulkhead(Bulkhead::builder("q").max_concurrent(1).max_queued(1))
            .build()
            .unwrap();
        assert!(queued.admit().is_none());
        let waiting: P = Pipeline::builder()
            .rate_limiter(
                RateLimiter::builder("w")
                    .rate(1, Duration::from_secs(1))
                    .max_wait(Duration::from_millis(10)),
            )
            .build()
            .unwrap();
        assert!(waiting.admit().is_none());
        let empty: P = Pipeline::builder().build().unwrap();
        assert_eq!(admitted(&empty).finish(Ok(1)).unwrap(), 1);
    }

    #[tokio::test]
    async fn refusals_release_what_the_outer_policies_handed_out() {
        let breaker = CircuitBreaker::builder("b").build().unwrap();
        let bulkhead = Bulkhead::builder("k").max_concurrent(1).build().unwrap();
        let p: P = Pipeline::builder()
            .circuit_breaker(breaker.clone())
            .bulkhead(bulkhead.clone())
            .build()
            .unwrap();
        let first = admitted(&p);
        assert_eq!(bulkhead.in_use(), 1);
        assert!(matches!(p.admit(), Some(Err(Error::BulkheadFull(_)))));
        // The outer breaker ignored the refusal.
        assert_eq!(breaker.stats().calls(), 0);
        assert_eq!(first.finish(Ok(1)).unwrap(), 1);
        assert_eq!(bulkhead.in_use(), 0);
        assert_eq!(breaker.stats().calls(), 1);

        breaker.force_open();
        assert!(matches!(p.admit(), Some(Err(Error::Rejected(_)))));
        assert_eq!(bulkhead.in_use(), 0);

        let limiter = RateLimiter::builder("l")
            .rate(1, Duration::from_secs(3600))
            .burst(1)
            .build()
            .unwrap();
        let outer = CircuitBreaker::builder("o").build().unwrap();
        let limited: P = Pipeline::builder()
            .circuit_breaker(outer.clone())
            .rate_limiter(limiter)
            .build()
            .unwrap();
        admitted(&limited).finish(Ok(1)).unwrap();
        assert!(matches!(limited.admit(), Some(Err(Error::RateLimited(_)))));
        assert_eq!(outer.stats().calls(), 1);
    }

    #[tokio::test]
    async fn two_breakers_and_a_bulkhead_each_get_the_result() {
        let outer = CircuitBreaker::builder("outer").build().unwrap();
        let inner = CircuitBreaker::builder("inner").build().unwrap();
        let bulkhead = Bulkhead::builder("k").max_concurrent(2).build().unwrap();
        let p: P = Pipeline::builder()
            .circuit_breaker(outer.clone())
            .bulkhead(bulkhead.clone())
            .circuit_breaker(inner.clone())
            .build()
            .unwrap();
        let a = admitted(&p);
        assert_eq!(bulkhead.in_use(), 1);
        assert!(a.finish(Err("boom")).is_err());
        assert_eq!(bulkhead.in_use(), 0);
        assert_eq!(outer.stats().failures(), 1);
        assert_eq!(inner.stats().failures(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_call_is_a_failure_named_after_its_timeout() {
        let timeout = TimeoutPolicy::builder("t")
            .timeout(Duration::from_millis(100))
            .clock(crate::TokioClock::new())
            .build()
            .unwrap();
        let mut events = timeout.subscribe();
        let outer = CircuitBreaker::builder("outer").build().unwrap();
        let inner = CircuitBreaker::builder("inner").build().unwrap();
        let p: P = Pipeline::builder()
            .circuit_breaker(outer.clone())
            .timeout(timeout)
            .circuit_breaker(inner.clone())
            .build()
            .unwrap();
        let start = Instant::now();
        let a = admitted(&p);
        assert_eq!(a.deadline(), Some(start + Duration::from_millis(100)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Error::Timeout(t) = a.timed_out() else {
            panic!("not a timeout")
        };
        assert_eq!((t.name(), t.elapsed()), ("t", Duration::from_millis(100)));
        assert_eq!(outer.stats().failures(), 1);
        assert_eq!(inner.stats().failures(), 1);
        let event = events.recv().await.unwrap();
        assert!(matches!(event.kind, EventKind::TimedOut { .. }));

        // No timeout: the error is named after the pipeline.
        let bare: P = Pipeline::builder()
            .circuit_breaker(CircuitBreaker::builder("b"))
            .build_named("bare")
            .unwrap();
        let Error::Timeout(t) = admitted(&bare).timed_out() else {
            panic!("not a timeout")
        };
        assert_eq!(t.name(), "bare");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_capped_by_the_enclosing_one_and_published() {
        let p: P = Pipeline::builder()
            .timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let a = admitted(&p);
        let own = a.deadline().unwrap();
        assert_eq!(own, Instant::now() + Duration::from_secs(5));
        assert_eq!(a.in_scope(current_deadline), Some(own));
        assert_eq!(current_deadline(), None);

        let soon = Instant::now() + Duration::from_secs(1);
        with_deadline(soon, async {
            let a = admitted(&p);
            assert_eq!(a.deadline(), Some(soon));
            assert_eq!(a.in_scope(current_deadline), Some(soon));
            // The enclosing deadline expired: a timeout of the pipeline reports it.
            let Error::Timeout(t) = a.timed_out() else {
                panic!("not a timeout")
            };
            assert_eq!(t.name(), p.name());
        })
        .await;
    }
}
