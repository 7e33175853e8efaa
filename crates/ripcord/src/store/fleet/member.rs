//! The seam between the fleet and its breakers: the [`Member`] trait the
//! fleet declares (the breaker implements it), and the per-breaker [`Link`]
//! the breaker holds. The fleet never sees a breaker's internals.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use super::{Control, Shared, SyncMsg};
use crate::store::{FleetNotice, FleetView, ProbeReport, TransitionRequest, WindowTotals};

/// What the fleet needs of a breaker linked to it.
pub(crate) trait Member: Send + Sync {
    /// The breaker's side of the link.
    fn link(&self) -> Option<&Link>;
    /// The breaker's (fleet-wide) name.
    fn name(&self) -> &str;
    /// This instance's current window (zero unless the breaker counts calls).
    fn window(&self) -> WindowTotals;
    /// Probes per half-open period.
    fn half_open_limit(&self) -> u32;
    /// Applies the fleet's view (from a sync, a reconciliation, a transition
    /// answer, or a notice).
    fn adopt(&self, view: &FleetView, notice: Option<&FleetNotice>);
    /// Tells listeners the store became unreachable (or reachable again).
    fn store_degraded(&self, degraded: bool, detail: Option<String>);
}

/// How many sync rounds the others' share of the fleet window stays valid
/// after the breaker last received it.
const OTHERS_VALID_ROUNDS: u64 = 2;

/// The per-breaker side of the link (held by the breaker).
pub(crate) struct Link {
    pub(crate) fleet: Arc<Shared>,
    name: String,
    /// The last fleet epoch this breaker knows.
    pub(crate) fleet_epoch: AtomicU64,
    /// The fleet window minus this instance's own share, from the last sync
    /// that carried this breaker, and the round of that sync.
    others: [AtomicU64; 3],
    others_round: AtomicU64,
    /// Probe permits the store granted for the current half-open period.
    pub(crate) granted: AtomicU32,
    want_probe: AtomicBool,
    /// Local transitions sent to the store and not yet answered.
    pub(crate) pending: AtomicU32,
    /// Opened on this instance only (the fleet's quorum was not met): the
    /// breaker decides alone until it closes again or the fleet moves on.
    pub(crate) local_only: AtomicBool,
    /// The latest fleet epoch whose manual change was reported as an audit
    /// event (a sync may deliver the change before its notice does).
    pub(crate) audited_epoch: AtomicU64,
    /// Sync bookkeeping, written by the fleet's tasks only.
    pub(super) sync: SyncState,
}

/// What the sync task remembers of one breaker.
#[derive(Default)]
pub(super) struct SyncState {
    /// An outcome was recorded since the last report.
    pub(super) dirty: AtomicBool,
    /// Report at the next sync whatever the window (a failed sync, a
    /// duplicate breaker that left).
    pub(super) force: AtomicBool,
    /// The last report: fleet epoch and window.
    reported: [AtomicU64; 4],
    /// The last report held calls: the window may still move as time passes.
    pub(super) warm: AtomicBool,
    /// The last round this breaker is synced again after reporting news, so
    /// it also learns of reports the other instances made just after its own.
    pub(super) tail_round: AtomicU64,
    /// The round the keys' TTL was last refreshed.
    pub(super) touched_round: AtomicU64,
    /// The round at which an override this breaker saw lapses (0: none).
    pub(super) lapse_round: AtomicU64,
}

impl SyncState {
    pub(super) fn reported(&self) -> (u64, WindowTotals) {
        (
            self.reported[0].load(Ordering::Relaxed),
            WindowTotals {
                calls: self.reported[1].load(Ordering::Relaxed),
                failures: self.reported[2].load(Ordering::Relaxed),
                slow: self.reported[3].load(Ordering::Relaxed),
            },
        )
    }

    pub(super) fn set_reported(&self, epoch: u64, w: WindowTotals) {
        self.reported[0].store(epoch, Ordering::Relaxed);
        self.reported[1].store(w.calls, Ordering::Relaxed);
        self.reported[2].store(w.failures, Ordering::Relaxed);
        self.reported[3].store(w.slow, Ordering::Relaxed);
        self.warm.store(w.calls > 0, Ordering::Relaxed);
    }
}

impl Link {
    pub(crate) fn new(fleet: &super::Fleet, name: &str) -> Self {
        Link {
            fleet: fleet.shared.clone(),
            name: name.to_string(),
            fleet_epoch: AtomicU64::new(0),
            others: Default::default(),
            others_round: AtomicU64::new(0),
            granted: AtomicU32::new(0),
            want_probe: AtomicBool::new(false),
            pending: AtomicU32::new(0),
            local_only: AtomicBool::new(false),
            audited_epoch: AtomicU64::new(0),
            sync: SyncState::default(),
        }
    }

    /// Registers the breaker with the fleet; its first sync follows at once,
    /// so it starts in the fleet's state.
    pub(crate) fn join(&self, me: Weak<dyn Member>) {
        self.fleet.register(&self.name, me.clone());
        let _ = self.fleet.sync_tx.send(SyncMsg::Joined(me));
    }

    /// Whether the fleet decides (false while the store is unreachable: the
    /// breaker then decides alone).
    pub(crate) fn active(&self) -> bool {
        !self.fleet.degraded.load(Ordering::Relaxed) && !self.local_only.load(Ordering::Relaxed)
    }

    /// Marks the window as changed (an outcome was recorded): it is reported
    /// at the next sync. One load when already marked.
    #[inline]
    pub(crate) fn mark(&self) {
        if !self.sync.dirty.load(Ordering::Relaxed) {
            self.sync.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// The rest of the fleet's window, or nothing if this breaker has not
    /// been synced lately (it was idle here: its last view may be old).
    pub(crate) fn others(&self) -> WindowTotals {
        let round = self.fleet.round.load(Ordering::Relaxed);
        if round.saturating_sub(self.others_round.load(Ordering::Acquire)) > OTHERS_VALID_ROUNDS {
            return WindowTotals::default();
        }
        WindowTotals {
            calls: self.others[0].load(Ordering::Relaxed),
            failures: self.others[1].load(Ordering::Relaxed),
            slow: self.others[2].load(Ordering::Relaxed),
        }
    }

    pub(super) fn set_others(&self, w: WindowTotals, round: u64) {
        self.others[0].store(w.calls, Ordering::Relaxed);
        self.others[1].store(w.failures, Ordering::Relaxed);
        self.others[2].store(w.slow, Ordering::Relaxed);
        self.others_round.store(round, Ordering::Release);
    }

    pub(crate) fn send_transition(&self, me: Weak<dyn Member>, req: TransitionRequest) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self
            .fleet
            .control_tx
            .send(Control::Transition(me, req))
            .is_err()
        {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn want_probe(&self, me: Weak<dyn Member>) {
        if !self.want_probe.swap(true, Ordering::AcqRel) {
            let _ = self.fleet.control_tx.send(Control::WantProbe(me));
        }
    }

    pub(super) fn probe_answered(&self) {
        self.want_probe.store(false, Ordering::Release);
    }

    pub(crate) fn send_probe(&self, me: Weak<dyn Member>, report: ProbeReport) {
        let _ = self.fleet.control_tx.send(Control::Probe(me, report));
    }

    pub(crate) fn reset_probes(&self) {
        self.granted.store(0, Ordering::Release);
        self.want_probe.store(false, Ordering::Release);
    }

    /// Remembers when an override in `view` lapses, so this breaker is synced
    /// then (the store lapses it at that sync and tells every instance).
    pub(super) fn note_override(&self, view: &FleetView) {
        let at = match view.override_expires_in {
            Some(d) => {
                let interval = self.fleet.sync_interval.as_nanos().max(1);
                let rounds = u64::try_from(d.as_nanos().div_ceil(interval)).unwrap_or(u64::MAX);
                self.fleet
                    .round
                    .load(Ordering::Relaxed)
                    .saturating_add(rounds)
                    .saturating_add(1)
            }
            None => 0,
        };
        self.sync.lapse_round.store(at, Ordering::Relaxed);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Its last report must stop counting while this instance lives on.
        if self.sync.warm.load(Ordering::Relaxed) {
            let _ = self.fleet.sync_tx.send(SyncMsg::Left {
                name: std::mem::take(&mut self.name),
                epoch: self.sync.reported().0,
            });
        }
    }
}
