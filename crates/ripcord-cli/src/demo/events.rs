//! Records the breaker's transitions from its events, with the reason for each.
//!
//! The recorder is an `on_event` callback rather than a broadcast subscription:
//! a callback runs on the thread that caused the event and cannot fall behind,
//! so no transition is ever lost, however many outcome events the load makes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ripcord::{Event, EventKind, Outcome, State, TransitionReason};

use super::view::{percent, secs, short};
use super::Plan;

/// One change of the breaker's state.
#[derive(Debug, Clone)]
pub(crate) struct Transition {
    /// When it happened, since the demo's start.
    pub(crate) at: Duration,
    /// The state before.
    pub(crate) from: State,
    /// The state after.
    pub(crate) to: State,
    /// Why, in a few words.
    pub(crate) why: String,
}

/// The transitions recorded, and whether any are missing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Transitions {
    /// Every transition seen, in order.
    pub(crate) list: Vec<Transition>,
    /// Transitions known to be missing: the breaker's epoch moved by more than
    /// one between two transitions seen. Zero unless events are lost.
    pub(crate) missed: u64,
}

/// Shared handle to the recorder; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    /// The recorder, shared with the breaker's callback.
    recorder: Arc<Mutex<Recorder>>,
}

impl Timeline {
    /// A timeline for a demo started when the breaker's clock read `origin`.
    pub(crate) fn new(plan: &Plan, origin: Duration) -> Self {
        let recorder = Recorder {
            origin,
            failure_rate: plan.failure_rate,
            slow_rate: plan.slow_rate,
            slow_threshold: plan.slow_threshold,
            half_open_calls: plan.half_open_calls,
            transitions: Transitions::default(),
            epoch: None,
            last_probe: None,
        };
        Timeline {
            recorder: Arc::new(Mutex::new(recorder)),
        }
    }

    /// The callback to give the breaker's builder (`on_event`).
    pub(crate) fn listener(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let recorder = Arc::clone(&self.recorder);
        move |event: &Event| {
            // Outcomes arrive by the thousand: skip all but probes before locking.
            let wanted = match &event.kind {
                EventKind::Transition { .. } => true,
                EventKind::Outcome { probe, .. } => *probe,
                _ => false,
            };
            if wanted {
                recorder
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .on_event(event);
            }
        }
    }

    /// The transitions recorded so far.
    pub(crate) fn transitions(&self) -> Transitions {
        self.recorder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .transitions
            .clone()
    }
}

/// How the last half-open probe ended.
#[derive(Debug, Clone, Copy)]
struct Probe {
    /// Its outcome.
    outcome: Outcome,
    /// How long it took.
    took: Duration,
    /// Whether it was slow.
    slow: bool,
}

/// Turns events into [`Transition`]s.
#[derive(Debug)]
struct Recorder {
    /// The breaker's clock at the demo's start.
    origin: Duration,
    /// The failure-rate threshold, to explain trips.
    failure_rate: f64,
    /// The slow-call-rate threshold, to explain trips.
    slow_rate: f64,
    /// The slow-call threshold, to explain trips.
    slow_threshold: Duration,
    /// Probes per half-open period, to explain closings.
    half_open_calls: u32,
    /// What was recorded so far.
    transitions: Transitions,
    /// The epoch of the last transition seen.
    epoch: Option<u64>,
    /// The last half-open probe to finish, to explain re-openings.
    last_probe: Option<Probe>,
}

impl Recorder {
    /// Takes one event.
    fn on_event(&mut self, event: &Event) {
        match event.kind {
            EventKind::Outcome {
                outcome,
                duration,
                slow,
                probe: true,
            } => {
                self.last_probe = Some(Probe {
                    outcome,
                    took: duration,
                    slow,
                });
            }
            EventKind::Transition { from, to, reason } => {
                if let Some(last) = self.epoch {
                    self.transitions.missed += event.epoch.saturating_sub(last + 1);
                }
                self.epoch = Some(event.epoch);
                let at = event.at.saturating_sub(self.origin);
                let why = self.why(at, reason);
                self.transitions.list.push(Transition { at, from, to, why });
                self.last_probe = None;
            }
            _ => {}
        }
    }

    /// A short reason for a transition happening at `at`.
    fn why(&self, at: Duration, reason: TransitionReason) -> String {
        match reason {
            TransitionReason::FailureRate => {
                format!(
                    "failure rate ≥ {} in the window",
                    percent(self.failure_rate)
                )
            }
            TransitionReason::SlowCallRate => format!(
                "slow-call rate ≥ {} (calls ≥ {}) in the window",
                percent(self.slow_rate),
                short(self.slow_threshold)
            ),
            TransitionReason::OpenElapsed => match self.transitions.list.last() {
                Some(opened) => format!("open for {}", secs(at.saturating_sub(opened.at))),
                None => reason.to_string(),
            },
            TransitionReason::ProbesSucceeded => {
                format!("{} probes succeeded", self.half_open_calls)
            }
            TransitionReason::ProbeFailed => match self.last_probe {
                Some(p) if p.outcome == Outcome::Failure => "a probe failed".to_owned(),
                Some(p) if p.slow => format!(
                    "a probe was slow ({} ≥ {})",
                    secs(p.took),
                    short(self.slow_threshold)
                ),
                _ => reason.to_string(),
            },
            TransitionReason::Fleet => "the fleet's shared state (via the store)".to_owned(),
            _ => reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ripcord::Name;

    fn event(at_ms: u64, epoch: u64, kind: EventKind) -> Event {
        Event {
            name: Name::new("dependency"),
            at: Duration::from_millis(at_ms),
            epoch,
            kind,
        }
    }

    fn transition(from: State, to: State, reason: TransitionReason) -> EventKind {
        EventKind::Transition { from, to, reason }
    }

    #[test]
    fn transitions_are_timed_from_the_origin_and_explained() {
        let plan = Plan::new(&crate::demo::DemoArgs {
            duration: Duration::from_secs(20),
            seed: 1,
            callers: 4,
            store: None,
            admin: "127.0.0.1:0".parse().unwrap(),
        });
        let timeline = Timeline::new(&plan, Duration::from_secs(100));
        let listen = timeline.listener();
        use State::{Closed, HalfOpen, Open};
        use TransitionReason as R;
        listen(&event(105_000, 1, transition(Closed, Open, R::FailureRate)));
        listen(&event(
            105_500,
            2,
            transition(Open, HalfOpen, R::OpenElapsed),
        ));
        listen(&event(
            107_000,
            2,
            EventKind::Outcome {
                outcome: Outcome::Success,
                duration: Duration::from_millis(1_500),
                slow: true,
                probe: true,
            },
        ));
        listen(&event(
            107_000,
            3,
            transition(HalfOpen, Open, R::ProbeFailed),
        ));
        // Epoch 4 never arrives.
        listen(&event(
            109_000,
            5,
            transition(HalfOpen, Closed, R::ProbesSucceeded),
        ));

        let t = timeline.transitions();
        let whys: Vec<&str> = t.list.iter().map(|t| t.why.as_str()).collect();
        assert_eq!(
            whys,
            [
                "failure rate ≥ 50% in the window",
                "open for 0.50s",
                "a probe was slow (1.50s ≥ 800ms)",
                "3 probes succeeded",
            ]
        );
        assert_eq!(t.list[0].at, Duration::from_secs(5));
        assert_eq!(t.missed, 1);
    }
}
