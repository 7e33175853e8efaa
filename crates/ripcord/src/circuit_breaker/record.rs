//! Recording a permit's outcome, and deciding whether it trips the breaker.

use std::time::Duration;

use super::state::{word, HalfOpenCounts};
use super::window::WindowStats;
use super::{consecutive_epoch, consecutive_word, Inner, PermitKind, State};
use crate::event::{Event, EventKind, TransitionReason};
#[cfg(feature = "tokio")]
use crate::sync::lock;
use crate::sync::Ordering;
use crate::Outcome;

impl Inner {
    /// Records the verdict of a permit.
    ///
    /// The common case, a success in a closed breaker nobody listens to, is
    /// recorded inline by [`finish_success`](Self::finish_success); everything
    /// else (and a success it cannot record with plain stores) goes the
    /// general way, which does the same and more.
    #[inline(always)]
    pub(crate) fn finish(&self, epoch: u64, kind: PermitKind, start: u64, outcome: Outcome) {
        if kind == PermitKind::Counted
            && outcome == Outcome::Success
            && self.finish_success(epoch, start)
        {
            return;
        }
        self.finish_general(epoch, kind, start, outcome);
    }

    /// Records a success of `epoch` if the breaker is still closed (and not
    /// ramping) in that epoch, no listener wants an outcome event, the call
    /// was not slow and the window can count it with plain stores. Returns
    /// false, having changed nothing, otherwise.
    #[inline(always)]
    fn finish_success(&self, epoch: u64, start: u64) -> bool {
        if self.state.load(Ordering::Acquire) != word::pack(State::Closed, epoch, false)
            || self.events.active()
        {
            return false;
        }
        let mut now = 0;
        if self.timed {
            now = self.clock.now_nanos();
            if now.saturating_sub(start) >= self.slow_nanos {
                return false;
            }
        }
        if !self.window.record_success(epoch, now) {
            return false;
        }
        #[cfg(feature = "tokio")]
        if let Some(link) = &self.link {
            link.mark();
        }
        let c = self.consecutive.load(Ordering::Relaxed);
        if c as u32 != 0 {
            self.clear_consecutive(epoch, c);
        }
        true
    }

    /// Clears the consecutive-failure count of `epoch` after a success.
    #[cold]
    fn clear_consecutive(&self, epoch: u64, c: u64) {
        if consecutive_epoch(c) == epoch as u32 {
            // Clears only this epoch's count; fails harmlessly if a
            // transition already replaced it.
            let _ = self.consecutive.compare_exchange(
                c,
                consecutive_word(epoch, 0),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    #[inline(never)]
    fn finish_general(&self, epoch: u64, kind: PermitKind, start: u64, outcome: Outcome) {
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
        #[cfg(feature = "tokio")]
        if let Some(link) = &self.link {
            link.mark();
        }
        let consecutive = if failure {
            self.count_failure(epoch)
        } else {
            let c = self.consecutive.load(Ordering::Relaxed);
            if c as u32 != 0 {
                self.clear_consecutive(epoch, c);
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
        if !self.rules.reads_window() {
            return self.rules.trip_reason(consecutive, None);
        }
        if self.rules.consecutive_trips(consecutive) {
            return Some(TransitionReason::ConsecutiveFailures);
        }
        let stats = self.window.stats(epoch, now);
        #[cfg(feature = "tokio")]
        if let Some(link) = self.link.as_ref().filter(|l| l.active()) {
            let o = link.others();
            let mut fleet = stats.clone();
            fleet.add_counts(o.calls, o.failures, o.slow);
            return self.rules.fleet_trip_reason(consecutive, &fleet, &stats);
        }
        self.rules.trip_reason(consecutive, Some(&stats))
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
}

/// Trip rules, resolved from the configuration.
pub(super) struct Rules {
    pub(super) failure_rate: Option<f64>,
    pub(super) slow_rate: Option<f64>,
    pub(super) consecutive: Option<u32>,
    pub(super) minimum_calls: u64,
    pub(super) custom: Option<super::config::TripRule>,
}

impl Rules {
    /// Whether some rule looks at the window's statistics.
    pub(super) fn reads_window(&self) -> bool {
        self.failure_rate.is_some() || self.slow_rate.is_some() || self.custom.is_some()
    }

    fn consecutive_trips(&self, consecutive: u32) -> bool {
        self.consecutive.is_some_and(|n| consecutive >= n)
    }

    /// The trip decision, a pure function of the consecutive-failure count and
    /// the window's statistics (`None` when no rule [reads the
    /// window](Self::reads_window)): the reason to open, if any rule holds.
    pub(super) fn trip_reason(
        &self,
        consecutive: u32,
        stats: Option<&WindowStats>,
    ) -> Option<TransitionReason> {
        if self.consecutive_trips(consecutive) {
            return Some(TransitionReason::ConsecutiveFailures);
        }
        let stats = stats?;
        if stats.calls() < self.minimum_calls {
            return None;
        }
        if self.failure_rate.is_some_and(|t| stats.failure_rate() >= t) {
            return Some(TransitionReason::FailureRate);
        }
        if self.slow_rate.is_some_and(|t| stats.slow_rate() >= t) {
            return Some(TransitionReason::SlowCallRate);
        }
        if self.custom.as_ref().is_some_and(|f| f(stats)) {
            return Some(TransitionReason::CustomRule);
        }
        None
    }

    /// The trip decision of a breaker in a fleet: the rate rules judge the
    /// fleet-wide counts `fleet`; a custom rule judges this instance's own
    /// window `own`, whose counts and latency histogram describe the same
    /// calls (latencies are not shared with the fleet).
    #[cfg(feature = "tokio")]
    pub(super) fn fleet_trip_reason(
        &self,
        consecutive: u32,
        fleet: &WindowStats,
        own: &WindowStats,
    ) -> Option<TransitionReason> {
        let rates = self.clone_rates();
        if let Some(reason) = rates.trip_reason(consecutive, Some(fleet)) {
            return Some(reason);
        }
        let f = self.custom.as_ref()?;
        (own.calls() >= self.minimum_calls && f(own)).then_some(TransitionReason::CustomRule)
    }

    /// These rules without the custom one.
    #[cfg(feature = "tokio")]
    fn clone_rates(&self) -> Rules {
        Rules {
            failure_rate: self.failure_rate,
            slow_rate: self.slow_rate,
            consecutive: self.consecutive,
            minimum_calls: self.minimum_calls,
            custom: None,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            failure_rate: Some(0.5),
            slow_rate: Some(0.8),
            consecutive: Some(3),
            minimum_calls: 10,
            custom: None,
        }
    }

    #[test]
    fn the_trip_decision_is_a_function_of_its_inputs() {
        let r = rules();
        let s = |calls, failures, slow| WindowStats::from_counts(calls, failures, slow, None);
        assert_eq!(r.trip_reason(2, Some(&s(10, 2, 0))), None);
        assert_eq!(
            r.trip_reason(3, None),
            Some(TransitionReason::ConsecutiveFailures)
        );
        assert_eq!(
            r.trip_reason(0, Some(&s(9, 9, 9))),
            None,
            "below minimum_calls"
        );
        assert_eq!(
            r.trip_reason(0, Some(&s(10, 5, 0))),
            Some(TransitionReason::FailureRate)
        );
        assert_eq!(
            r.trip_reason(0, Some(&s(10, 0, 8))),
            Some(TransitionReason::SlowCallRate)
        );
        assert_eq!(r.trip_reason(0, Some(&s(10, 4, 7))), None);
        let custom = Rules {
            custom: Some(std::sync::Arc::new(|s: &WindowStats| s.failures() > 0)),
            ..rules()
        };
        assert_eq!(
            custom.trip_reason(0, Some(&s(10, 1, 0))),
            Some(TransitionReason::CustomRule)
        );
        assert!(custom.reads_window());
    }
}
