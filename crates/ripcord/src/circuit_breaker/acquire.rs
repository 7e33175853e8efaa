//! Deciding a call: admit it (with a permit) or reject it.

use std::time::Duration;

use super::state::{word, HalfOpenCounts};
use super::{nanos, Inner, Permit, PermitKind, State};
use crate::event::{Event, EventKind, TransitionReason};
use crate::random::SplitMix64;
use crate::sync::{lock, Ordering};
use crate::Rejected;

impl Inner {
    #[inline]
    pub(super) fn now_if_timed(&self) -> u64 {
        if self.timed {
            self.clock.now_nanos()
        } else {
            0
        }
    }

    /// Decides one call. The two hot cases are decided inline: a closed
    /// breaker admits; an open one whose open period is not over (or a
    /// forced-open one) rejects with a plain value. Everything else goes the
    /// general way.
    #[inline(always)]
    pub(super) fn acquire(&self) -> Result<Permit<'_>, Rejected> {
        let w = self.state.load(Ordering::Acquire);
        if w & word::FAST_MASK == 0 {
            return Ok(Permit::new(
                self,
                word::epoch(w),
                PermitKind::Counted,
                self.now_if_timed(),
            ));
        }
        self.acquire_rest(w)
    }

    /// Decides a call that found state word `w` not closed (or ramping). An
    /// open breaker whose open period is not over, and a forced-open one,
    /// reject with a plain value (no lock, no allocation) when no listener
    /// wants a rejection event. Everything else goes the general way.
    #[inline(always)]
    pub(super) fn acquire_rest(&self, w: u64) -> Result<Permit<'_>, Rejected> {
        if let Some(r) = self.fast_rejection(w) {
            return Err(r);
        }
        self.acquire_general(w)
    }

    /// The rejection of a forced-open breaker, or of an open one whose open
    /// period is not over, when no listener wants a rejection event.
    #[inline(always)]
    pub(super) fn fast_rejection(&self, w: u64) -> Option<Rejected> {
        if w & word::FAST_MASK == State::ForcedOpen.code() && !self.events.active() {
            return Some(self.open_rejection(w, State::ForcedOpen, 0));
        }
        if w & word::FAST_MASK == State::Open.code() {
            let now = self.clock.now_nanos();
            let until = self.timing.open_until.load(Ordering::Acquire);
            if now < until && !self.events.active() {
                return Some(self.open_rejection(w, State::Open, until - now));
            }
        }
        None
    }

    /// Decides a call the fast paths did not: out of line.
    #[inline(never)]
    pub(super) fn acquire_general(&self, w: u64) -> Result<Permit<'_>, Rejected> {
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

    pub(super) fn recovery_allows(&self, epoch: u64) -> bool {
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

    pub(super) fn end_ramp(&self) {
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
}
