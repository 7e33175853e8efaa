//! The breaker's side of the fleet: it implements the fleet's [`Member`]
//! trait, so the fleet's tasks read its window and hand it views without
//! knowing its internals.

use std::time::Duration;

use super::state::word;
use super::{nanos, Inner, State};
use crate::event::{Event, EventKind, TransitionReason};
use crate::store::{FleetNotice, FleetView, Link, Member, WindowTotals};
use crate::sync::{lock, Ordering};

impl Member for Inner {
    fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn window(&self) -> WindowTotals {
        let w = self.state.load(Ordering::Acquire);
        match word::state(w) {
            State::Closed | State::MetricsOnly => {
                let s = self.window.stats(word::epoch(w), self.clock.now_nanos());
                WindowTotals {
                    calls: s.calls(),
                    failures: s.failures(),
                    slow: s.slow(),
                }
            }
            _ => WindowTotals::default(),
        }
    }

    fn half_open_limit(&self) -> u32 {
        u32::from(self.half_open_calls)
    }

    /// Applies the fleet's view of this breaker, if it is news, and reports a
    /// manual override once per fleet epoch as an audit event (whether its
    /// notice or a sync brought the change first).
    fn adopt(&self, view: &FleetView, notice: Option<&FleetNotice>) {
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

    /// Reports a change in the store's health to listeners.
    fn store_degraded(&self, degraded: bool, detail: Option<String>) {
        if self.events.active() {
            self.events.emit(Event {
                name: self.name.clone(),
                at: Duration::from_nanos(self.clock.now_nanos()),
                epoch: self.epoch_now(),
                kind: EventKind::StoreDegraded { degraded, detail },
            });
        }
    }
}

impl Inner {
    /// Moves the local breaker to the fleet's state if the view is news.
    /// Returns whether it made a transition.
    fn adopt_view(&self, link: &Link, view: &FleetView) -> bool {
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
}
