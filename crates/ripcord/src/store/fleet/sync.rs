//! The sync task: every interval, one heartbeat carrying the windows that
//! changed; joins; full syncs on demand and after an outage; and the slow,
//! batched reconciliation pass.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Link, Member, Shared, SyncMsg};
use crate::random::SplitMix64;
use crate::store::{FleetView, Heartbeat, ReconcileEntry, StoreError, SyncEntry, WindowTotals};

/// Reports per sync round trip.
const SYNC_CHUNK: usize = 512;

/// Breakers a reconciliation pass checks per round: a pass over many
/// breakers is spread over rounds, so no sync waits behind a whole pass and
/// the store never runs one long batch that other instances' syncs queue
/// behind.
const PASS_CHUNK: usize = 512;

/// What a sync round carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Breakers with news only.
    Changed,
    /// Every breaker (a re-join, `sync_now`, or no pub/sub).
    All,
}

/// The sync task's own state.
struct Task {
    /// Reports of dropped breakers still to send (zero windows).
    left: Vec<SyncEntry>,
    /// The next round at which a reconciliation pass starts.
    next_pass: u64,
    /// [`StateStore::resubscriptions`](crate::store::StateStore::resubscriptions) last seen.
    resubscriptions: u64,
    /// Whether notices are pushed (otherwise every sync carries everything).
    pushed: bool,
    /// The reconciliation pass under way: the breakers it checks, and how
    /// many it has checked.
    pass: Option<(Vec<Arc<dyn Member>>, usize)>,
}

pub(super) async fn run(
    shared: Weak<Shared>,
    mut rx: mpsc::UnboundedReceiver<SyncMsg>,
    pushed: bool,
) {
    let Some(s) = shared.upgrade() else { return };
    let interval = s.sync_interval;
    let pass_rounds = rounds(s.reconcile_interval, interval);
    // Instances started together spread their passes over a quarter of one.
    let jitter = SplitMix64::from_entropy().next_u64() % (pass_rounds / 4).max(1);
    let mut task = Task {
        left: Vec::new(),
        next_pass: pass_rounds + jitter,
        resubscriptions: 0,
        pushed,
        pass: None,
    };
    drop(s);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            due = tick.tick() => {
                let Some(s) = shared.upgrade() else { return };
                s.round(&mut task, due).await;
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                let Some(s) = shared.upgrade() else { return };
                let mut joined = Vec::new();
                let mut done = Vec::new();
                let mut next = Some(msg);
                // Take every message already queued: a registry creating many
                // breakers at once joins them in one sync.
                while let Some(msg) = next {
                    match msg {
                        SyncMsg::Joined(m) => joined.extend(m.upgrade()),
                        SyncMsg::Left { name, epoch } => s.left(&mut task, name, epoch),
                        SyncMsg::SyncNow(tx) => done.push(tx),
                    }
                    next = rx.try_recv().ok();
                }
                if !done.is_empty() {
                    let all = s.members();
                    s.sync(&all, Scope::All, &mut task).await;
                    for tx in done {
                        let _ = tx.send(());
                    }
                } else if !joined.is_empty() {
                    s.sync(&joined, Scope::All, &mut task).await;
                }
            }
        }
    }
}

/// Whole sync intervals in `d`, at least one.
fn rounds(d: Duration, interval: Duration) -> u64 {
    u64::try_from(d.as_nanos() / interval.as_nanos().max(1))
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Shared {
    /// One periodic round: the sync (heartbeat and news), then a
    /// reconciliation pass if one is due.
    async fn round(&self, task: &mut Task, due: Instant) {
        let round = self.round.fetch_add(1, Ordering::AcqRel) + 1;
        let members = self.members();
        let scope = if self.rejoin.swap(false, Ordering::AcqRel) || !task.pushed {
            Scope::All
        } else {
            Scope::Changed
        };
        if self.sync(&members, scope, task).await {
            let lag = u64::try_from(due.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.last_lag_nanos.store(lag, Ordering::Relaxed);
            self.max_lag_nanos.fetch_max(lag, Ordering::Relaxed);
        }
        let resubscriptions = self.store.resubscriptions();
        let missed = self.missed_notices.swap(false, Ordering::AcqRel)
            || resubscriptions != task.resubscriptions;
        task.resubscriptions = resubscriptions;
        // Without pub/sub every sync read every state already. A miss
        // starts the pass again, over the breakers there are now.
        if task.pushed && (missed || (task.pass.is_none() && round >= task.next_pass)) {
            task.next_pass = round + rounds(self.reconcile_interval, self.sync_interval);
            task.pass = Some((members, 0));
        }
        if let Some((list, done)) = task.pass.as_mut() {
            let end = (*done + PASS_CHUNK).min(list.len());
            let checked = self.reconcile(&list[*done..end], round).await;
            *done = if checked { end } else { list.len() };
            if *done >= list.len() {
                task.pass = None;
            }
        }
    }

    fn left(&self, task: &mut Task, name: String, epoch: u64) {
        let others = self.named(&name);
        if others.is_empty() {
            task.left.push(SyncEntry {
                name,
                fleet_epoch: epoch,
                window: WindowTotals::default(),
                stale_after: self.stale_after(),
                touch: false,
                ttl: self.ttl,
            });
        } else {
            // Another breaker of that name reports for this instance now.
            for link in others.iter().filter_map(|m| m.link()) {
                link.sync.force.store(true, Ordering::Relaxed);
            }
        }
    }

    fn stale_after(&self) -> Duration {
        (self.sync_interval * 3).max(Duration::from_secs(1))
    }

    fn touch_rounds(&self) -> u64 {
        rounds(self.ttl / 4, self.sync_interval)
    }

    /// Reports the breakers of `members` that `scope` selects, with the
    /// heartbeat, and applies the views. Returns whether the store answered.
    async fn sync(&self, members: &[Arc<dyn Member>], scope: Scope, task: &mut Task) -> bool {
        let round = self.round.load(Ordering::Acquire);
        let touch_rounds = self.touch_rounds();
        let mut picked: Vec<&Arc<dyn Member>> = Vec::new();
        let mut entries: Vec<SyncEntry> = Vec::new();
        for m in members {
            let Some(link) = m.link() else { continue };
            let st = &link.sync;
            let dirty = st.dirty.swap(false, Ordering::AcqRel);
            let forced = st.force.swap(false, Ordering::AcqRel);
            let lapse = st.lapse_round.load(Ordering::Relaxed);
            let lapsing = lapse != 0 && round >= lapse;
            let warm = st.warm.load(Ordering::Relaxed);
            let tail = round <= st.tail_round.load(Ordering::Relaxed);
            let news = dirty || forced || lapsing || tail;
            if scope == Scope::Changed && !(news || warm) {
                continue; // nothing new: costs the store nothing
            }
            let window = m.window();
            let fleet_epoch = link.fleet_epoch.load(Ordering::Acquire);
            if scope == Scope::Changed && !news && st.reported() == (fleet_epoch, window) {
                continue; // warm, but its window did not move
            }
            if dirty {
                st.tail_round.store(round + 1, Ordering::Relaxed);
            }
            if lapsing {
                st.lapse_round.store(0, Ordering::Relaxed);
            }
            let touched = st.touched_round.load(Ordering::Relaxed);
            entries.push(SyncEntry {
                name: m.name().to_string(),
                fleet_epoch,
                window,
                stale_after: self.stale_after(),
                touch: touched == 0 || round.saturating_sub(touched) >= touch_rounds,
                ttl: self.ttl,
            });
            picked.push(m);
        }
        let reported = picked.len();
        entries.append(&mut task.left);
        // Generous: a late heartbeat must not make this instance's idle
        // reports stop counting.
        let heartbeat = Heartbeat {
            instance: self.instance.clone(),
            stale_after: self.stale_after() * 3,
            ttl: self.stale_after() * 12,
            required: reported < members.len(),
        };
        // Many reports (a re-join, a registry's first sync) go in chunks, so
        // each round trip stays well inside the timeout.
        let mut start = 0;
        loop {
            let end = (start + SYNC_CHUNK).min(entries.len());
            let chunk = &entries[start..end];
            // tokio's clock, like every timer here: it follows paused time in tests.
            let began = Instant::now();
            let result = self.call(self.store.sync(&heartbeat, chunk)).await;
            let latency = began.elapsed();
            if let Some(hook) = &self.on_sync {
                hook(latency, result.is_ok());
            }
            let views = match result {
                Ok(views) if views.len() == chunk.len() => views,
                Ok(views) => {
                    let e = StoreError::Unavailable(format!(
                        "{} views for {} reports",
                        views.len(),
                        chunk.len()
                    ));
                    self.failed(&picked, &entries, start, task, &e);
                    return false;
                }
                Err(e) => {
                    self.failed(&picked, &entries, start, task, &e);
                    return false;
                }
            };
            self.last_sync_nanos.store(
                u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            self.syncs.fetch_add(1, Ordering::Relaxed);
            self.health(Ok(()));
            for (i, view) in (start..end).zip(&views) {
                let (Some(m), entry) = (picked.get(i), &entries[i]) else {
                    continue; // the report of a breaker that left
                };
                let Some(link) = m.link() else { continue };
                link.sync.set_reported(entry.fleet_epoch, entry.window);
                if entry.touch {
                    link.sync
                        .touched_round
                        .store(round.max(1), Ordering::Relaxed);
                }
                let others = if view.epoch == entry.fleet_epoch {
                    view.window.saturating_sub(entry.window)
                } else {
                    WindowTotals::default()
                };
                link.set_others(others, round);
                self.apply(m.as_ref(), view);
            }
            start = end;
            if start >= entries.len() {
                break;
            }
        }
        self.last_reported.store(reported as u64, Ordering::Relaxed);
        true
    }

    /// A sync that did not complete: what it did not carry goes again.
    fn failed(
        &self,
        picked: &[&Arc<dyn Member>],
        entries: &[SyncEntry],
        from: usize,
        task: &mut Task,
        e: &StoreError,
    ) {
        for (i, entry) in entries.iter().enumerate().skip(from) {
            match picked.get(i) {
                Some(m) => {
                    if let Some(link) = m.link() {
                        link.sync.force.store(true, Ordering::Relaxed);
                    }
                }
                None => task.left.push(entry.clone()),
            }
        }
        self.health(Err(e));
    }

    /// Applies a view from the store to one breaker.
    fn apply(&self, m: &dyn Member, view: &FleetView) {
        if let Some(link) = m.link() {
            link.note_override(view);
        }
        m.adopt(view, None);
    }

    /// Checks the epochs of `members` against the store, in batches; adopts
    /// what changed and refreshes the TTL of keys that need it. Returns
    /// false when the store failed (the pass ends: the re-join after the
    /// outage reads every state).
    async fn reconcile(&self, members: &[Arc<dyn Member>], round: u64) -> bool {
        const BATCH: usize = 2048;
        let touch_rounds = self.touch_rounds();
        for chunk in members.chunks(BATCH) {
            let chunk: Vec<(&Arc<dyn Member>, &Link)> =
                chunk.iter().filter_map(|m| Some((m, m.link()?))).collect();
            let entries: Vec<ReconcileEntry> = chunk
                .iter()
                .map(|(m, link)| {
                    let touched = link.sync.touched_round.load(Ordering::Relaxed);
                    ReconcileEntry {
                        name: m.name().to_string(),
                        known_epoch: link.fleet_epoch.load(Ordering::Acquire),
                        touch: round.saturating_sub(touched) >= touch_rounds,
                        ttl: self.ttl,
                    }
                })
                .collect();
            match self.call(self.store.reconcile(&entries)).await {
                Ok(views) => {
                    self.health(Ok(()));
                    self.reconciled
                        .fetch_add(entries.len() as u64, Ordering::Relaxed);
                    for (((m, link), entry), view) in chunk.iter().zip(&entries).zip(views) {
                        if entry.touch {
                            link.sync
                                .touched_round
                                .store(round.max(1), Ordering::Relaxed);
                        }
                        if let Some(view) = view {
                            self.apply(m.as_ref(), &view);
                        }
                    }
                }
                Err(e) => {
                    // The store is back when a sync works again, and that
                    // re-join reads every state.
                    self.health(Err(&e));
                    return false;
                }
            }
        }
        true
    }
}
