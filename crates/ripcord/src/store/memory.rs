//! An in-process [`StateStore`]: the reference semantics that the Redis store
//! mirrors in Lua, and a way to run a simulated fleet in one test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use super::{
    BoxFuture, FleetNotice, FleetView, Heartbeat, ProbeReport, ReconcileEntry, StateStore,
    StoreError, SyncEntry, TransitionRequest, TransitionResult, WindowTotals,
};
use crate::circuit_breaker::nanos;
use crate::clock::ClockHandle;
use crate::{Clock, State};

#[derive(Debug)]
struct Report {
    epoch: u64,
    window: WindowTotals,
    at: u64,
    stale_after: u64,
}

/// An instance's last heartbeat.
#[derive(Debug, Clone, Copy)]
struct Beat {
    at: u64,
    stale_after: u64,
    ttl: u64,
}

/// Instances whose heartbeat is fresh, by id.
type Beats = HashMap<String, Beat>;

impl Report {
    /// Whether this report counts: fresh by itself, or its instance alive.
    fn live(&self, id: &str, beats: &Beats, now: u64) -> bool {
        now.saturating_sub(self.at) <= self.stale_after
            || beats
                .get(id)
                .is_some_and(|b| now.saturating_sub(b.at) <= b.stale_after)
    }
}

#[derive(Debug)]
struct Entry {
    state: State,
    epoch: u64,
    open_until: u64,
    override_until: Option<u64>,
    reports: HashMap<String, Report>,
    probes_granted: u32,
    probe_successes: u32,
    probe_failures: u32,
    touched: u64,
    ttl: u64,
}

impl Entry {
    fn new(now: u64) -> Self {
        Entry {
            state: State::Closed,
            epoch: 0,
            open_until: 0,
            override_until: None,
            reports: HashMap::new(),
            probes_granted: 0,
            probe_successes: 0,
            probe_failures: 0,
            touched: now,
            ttl: u64::MAX,
        }
    }

    fn set(&mut self, to: State, now: u64, open_for: u64) {
        self.state = to;
        self.epoch += 1;
        self.open_until = if to == State::Open {
            now.saturating_add(open_for)
        } else {
            0
        };
        self.override_until = None;
        self.probes_granted = 0;
        self.probe_successes = 0;
        self.probe_failures = 0;
    }

    fn view(&self, name: &str, now: u64, beats: &Beats) -> FleetView {
        let mut window = WindowTotals::default();
        let mut instances = 0;
        for (id, r) in &self.reports {
            if r.epoch == self.epoch && r.live(id, beats, now) {
                window.calls += r.window.calls;
                window.failures += r.window.failures;
                window.slow += r.window.slow;
                instances += 1;
            }
        }
        FleetView {
            name: name.to_string(),
            state: self.state,
            epoch: self.epoch,
            open_remaining: Duration::from_nanos(self.open_until.saturating_sub(now)),
            window,
            instances,
            override_expires_in: self
                .override_until
                .map(|u| Duration::from_nanos(u.saturating_sub(now))),
        }
    }
}

#[derive(Debug, Default)]
struct Data {
    entries: HashMap<String, Entry>,
    beats: Beats,
}

#[derive(Debug)]
struct Inner {
    data: Mutex<Data>,
    notices: broadcast::Sender<FleetNotice>,
    clock: ClockHandle,
    /// While true, every call fails as if the store were unreachable (tests).
    down: std::sync::atomic::AtomicBool,
    calls: std::sync::atomic::AtomicU64,
}

/// A [`StateStore`] in process memory. Clones share the same state, so several
/// [`Fleet`](super::Fleet)s on one `MemoryStore` behave like instances sharing
/// one Redis.
///
/// ```
/// use ripcord::store::{Fleet, MemoryStore};
/// use ripcord::{CircuitBreaker, Outcome, State};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = MemoryStore::new();
/// let a = Fleet::builder(store.clone()).instance("a").build().unwrap();
/// let b = Fleet::builder(store.clone()).instance("b").build().unwrap();
/// let on_a = CircuitBreaker::builder("payments").consecutive_failures(1).fleet(&a).build().unwrap();
/// let on_b = CircuitBreaker::builder("payments").consecutive_failures(1).fleet(&b).build().unwrap();
///
/// on_a.try_acquire().unwrap().record(Outcome::Failure);
/// assert_eq!(on_a.state(), State::Open);
/// b.sync_now().await; // normally within one sync interval, or at once by pub/sub
/// assert_eq!(on_b.state(), State::Open);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        MemoryStore::with_clock(crate::SystemClock::new())
    }

    /// An empty store whose time (open durations, staleness, expiries) comes
    /// from `clock`.
    pub fn with_clock(clock: impl Clock) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                data: Mutex::new(Data::default()),
                notices: broadcast::channel(1024).0,
                clock: ClockHandle::from_clock(clock),
                down: std::sync::atomic::AtomicBool::new(false),
                calls: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Makes every call fail as if the store were unreachable (`true`), or
    /// brings it back (`false`). For fault tests.
    pub fn set_down(&self, down: bool) {
        self.inner
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Store operations served so far (each `sync` counts once, like one
    /// pipelined round trip).
    pub fn operations(&self) -> u64 {
        self.inner.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn enter(&self) -> Result<(u64, std::sync::MutexGuard<'_, Data>), StoreError> {
        if self.inner.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable("memory store is down".into()));
        }
        self.inner
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let now = self.inner.clock.now_nanos();
        let mut data = self.inner.data.lock().unwrap_or_else(|e| e.into_inner());
        data.entries
            .retain(|_, e| now.saturating_sub(e.touched) <= e.ttl);
        data.beats.retain(|_, b| now.saturating_sub(b.at) <= b.ttl);
        Ok((now, data))
    }

    fn publish(&self, view: FleetView, actor: &str, reason: &str, manual: bool) {
        let _ = self.inner.notices.send(FleetNotice {
            view,
            actor: actor.to_string(),
            reason: reason.to_string(),
            manual,
        });
    }
}

/// Lapses an expired override; returns the notice to publish.
fn lapse(name: &str, e: &mut Entry, now: u64, beats: &Beats) -> Option<FleetView> {
    match e.override_until {
        Some(until) if now >= until => {
            e.set(State::Closed, now, 0);
            Some(e.view(name, now, beats))
        }
        _ => None,
    }
}

impl StateStore for MemoryStore {
    fn sync<'a>(
        &'a self,
        heartbeat: &'a Heartbeat,
        entries: &'a [SyncEntry],
    ) -> BoxFuture<'a, Result<Vec<FleetView>, StoreError>> {
        Box::pin(async move {
            let (now, mut data) = self.enter()?;
            let Data {
                entries: map,
                beats,
            } = &mut *data;
            let instance = heartbeat.instance.as_str();
            beats.insert(
                instance.to_string(),
                Beat {
                    at: now,
                    stale_after: nanos(heartbeat.stale_after),
                    ttl: nanos(heartbeat.ttl),
                },
            );
            let mut views = Vec::with_capacity(entries.len());
            let mut notices = Vec::new();
            for s in entries {
                let e = map.entry(s.name.clone()).or_insert_with(|| Entry::new(now));
                if s.touch || e.ttl == u64::MAX {
                    e.touched = now;
                    e.ttl = nanos(s.ttl);
                }
                if let Some(v) = lapse(&s.name, e, now, beats) {
                    notices.push(v);
                }
                e.reports.insert(
                    instance.to_string(),
                    Report {
                        epoch: s.fleet_epoch,
                        window: s.window,
                        at: now,
                        stale_after: nanos(s.stale_after),
                    },
                );
                e.reports.retain(|id, r| r.live(id, beats, now));
                views.push(e.view(&s.name, now, beats));
            }
            drop(data);
            for v in notices {
                self.publish(v, "store", "override expired", true);
            }
            Ok(views)
        })
    }

    fn reconcile<'a>(
        &'a self,
        entries: &'a [ReconcileEntry],
    ) -> BoxFuture<'a, Result<Vec<Option<FleetView>>, StoreError>> {
        Box::pin(async move {
            let (now, mut data) = self.enter()?;
            let Data {
                entries: map,
                beats,
            } = &mut *data;
            let mut views = Vec::with_capacity(entries.len());
            let mut notices = Vec::new();
            for r in entries {
                // A breaker the store does not have has nothing to teach.
                let Some(e) = map.get_mut(&r.name) else {
                    views.push(None);
                    continue;
                };
                if r.touch {
                    e.touched = now;
                    e.ttl = nanos(r.ttl);
                }
                let lapsed = lapse(&r.name, e, now, beats);
                let news = lapsed.is_some() || e.epoch != r.known_epoch;
                if let Some(v) = lapsed {
                    notices.push(v);
                }
                views.push(news.then(|| e.view(&r.name, now, beats)));
            }
            drop(data);
            for v in notices {
                self.publish(v, "store", "override expired", true);
            }
            Ok(views)
        })
    }

    fn transition<'a>(
        &'a self,
        r: &'a TransitionRequest,
    ) -> BoxFuture<'a, Result<TransitionResult, StoreError>> {
        Box::pin(async move {
            let (now, mut data) = self.enter()?;
            let Data {
                entries: map,
                beats,
            } = &mut *data;
            let e = map.entry(r.name.clone()).or_insert_with(|| Entry::new(now));
            e.touched = now;
            e.ttl = nanos(r.ttl);
            let lapsed = lapse(&r.name, e, now, beats);
            let mut quorum_refused = false;
            let allowed = match r.from_epoch {
                None => true,
                Some(from) => {
                    let cas = from == e.epoch
                        && r.from_state.is_none_or(|s| s == e.state)
                        && e.override_until.is_none()
                        // The store's clock decides when an open breaker may probe.
                        && !(e.state == State::Open && r.to == State::HalfOpen && now < e.open_until);
                    if cas && r.quorum > 1 && e.state == State::Closed && r.to == State::Open {
                        // The requester counts itself; others count when their
                        // live window of this epoch holds a failure or a slow call.
                        let seeing = 1 + e
                            .reports
                            .iter()
                            .filter(|(id, rep)| {
                                *id != &r.actor
                                    && rep.epoch == e.epoch
                                    && rep.live(id, beats, now)
                                    && rep.window.failures + rep.window.slow > 0
                            })
                            .count() as u32;
                        quorum_refused = seeing < r.quorum;
                    }
                    cas && !quorum_refused
                }
            };
            if allowed {
                e.set(r.to, now, nanos(r.open_for));
                if r.from_epoch.is_none() {
                    e.override_until = r.expires_in.map(|d| now.saturating_add(nanos(d)));
                }
            }
            let view = e.view(&r.name, now, beats);
            drop(data);
            if let Some(v) = lapsed {
                self.publish(v, "store", "override expired", true);
            }
            if allowed {
                self.publish(view.clone(), &r.actor, &r.reason, r.from_epoch.is_none());
            }
            Ok(TransitionResult {
                applied: allowed,
                quorum_refused,
                view,
            })
        })
    }

    fn acquire_probe<'a>(
        &'a self,
        name: &'a str,
        epoch: u64,
        limit: u32,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let (now, mut data) = self.enter()?;
            let e = data
                .entries
                .entry(name.to_string())
                .or_insert_with(|| Entry::new(now));
            e.touched = now;
            e.ttl = nanos(ttl);
            if e.state == State::HalfOpen && e.epoch == epoch && e.probes_granted < limit {
                e.probes_granted += 1;
                return Ok(true);
            }
            Ok(false)
        })
    }

    fn report_probe<'a>(
        &'a self,
        r: &'a ProbeReport,
    ) -> BoxFuture<'a, Result<FleetView, StoreError>> {
        Box::pin(async move {
            let (now, mut data) = self.enter()?;
            let Data {
                entries: map,
                beats,
            } = &mut *data;
            let e = map.entry(r.name.clone()).or_insert_with(|| Entry::new(now));
            e.touched = now;
            e.ttl = nanos(r.ttl);
            let mut changed = None;
            if e.state == State::HalfOpen && e.epoch == r.epoch {
                if r.success {
                    e.probe_successes += 1;
                } else {
                    e.probe_failures += 1;
                }
                if e.probe_successes >= r.successes_needed {
                    e.set(State::Closed, now, 0);
                    changed = Some("probes succeeded");
                } else if e.probe_failures > r.probes.saturating_sub(r.successes_needed) {
                    e.set(State::Open, now, nanos(r.open_for));
                    changed = Some("probe failed");
                }
            }
            let view = e.view(&r.name, now, beats);
            drop(data);
            if let Some(reason) = changed {
                self.publish(view.clone(), &r.actor, reason, false);
            }
            Ok(view)
        })
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<FleetNotice>> {
        Some(self.inner.notices.subscribe())
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<FleetView>, StoreError>> {
        Box::pin(async move {
            let (now, data) = self.enter()?;
            let mut v: Vec<FleetView> = data
                .entries
                .iter()
                .map(|(k, e)| e.view(k, now, &data.beats))
                .collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(v)
        })
    }
}
