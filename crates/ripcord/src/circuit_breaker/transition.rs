//! Changing state: the only code that writes the state word.

use std::time::Duration;

use super::state::{word, HalfOpenCounts};
use super::{nanos, recovery, Control, Inner, State};
use crate::event::{Event, EventKind, TransitionReason};
use crate::sync::{lock, Ordering};

impl Inner {
    pub(super) fn epoch_now(&self) -> u64 {
        word::epoch(self.state.load(Ordering::Acquire))
    }

    /// Moves from `from` in `epoch` to `to`; does nothing (and returns false)
    /// if the breaker is no longer there.
    pub(super) fn transition(
        &self,
        epoch: u64,
        from: State,
        to: State,
        reason: TransitionReason,
    ) -> bool {
        self.transition_with(epoch, from, to, reason, false)
    }

    pub(super) fn transition_with(
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
    pub(super) fn transition_any(&self, to: State) {
        let mut control = lock(&self.control);
        let w = self.state.load(Ordering::Acquire);
        self.apply(&mut control, w, to, TransitionReason::Manual, false, None);
        drop(control);
        self.after_transition(to);
    }

    /// Prepares the new state's data, then publishes the state word. Runs under
    /// the control lock, which orders transitions (and their events).
    pub(super) fn apply(
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
    pub(super) fn after_transition(&self, to: State) {
        self.events.drain();
        if to == State::Open {
            recovery::on_open(self);
        }
    }

    pub(super) fn tick(&self) {
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
}
