//! The per-process link between local breakers and a [`StateStore`]: the
//! public [`Fleet`] handle, and the three lanes that talk to the store (the
//! sync task, the control lane for transitions and probes, and the notice
//! listener).

mod control;
mod member;
mod sync;

pub(crate) use member::{Link, Member};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{FleetView, ProbeReport, StateStore, StoreError, TransitionRequest};
use crate::{ConfigError, State};

/// A handle on the shared state of a fleet: one store, and background tasks
/// per process that keep every breaker linked to it in step with the fleet.
/// Cheap to clone.
///
/// Build it inside a tokio runtime; link breakers with
/// [`CircuitBreakerBuilder::fleet`](crate::CircuitBreakerBuilder::fleet).
#[derive(Clone)]
pub struct Fleet {
    pub(crate) shared: Arc<Shared>,
}

/// Configures a [`Fleet`].
#[must_use = "a builder does nothing until build() is called"]
pub struct FleetBuilder {
    store: Arc<dyn StateStore>,
    instance: Option<String>,
    sync_interval: Duration,
    timeout: Duration,
    ttl: Duration,
    pubsub: bool,
    quorum: u32,
    on_sync: Option<SyncHook>,
    reconcile_interval: Option<Duration>,
}

/// A callback told of every sync round trip: its latency and whether it
/// worked.
type SyncHook = Arc<dyn Fn(Duration, bool) + Send + Sync>;

impl fmt::Debug for FleetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBuilder")
            .field("store", &self.store)
            .field("instance", &self.instance)
            .field("sync_interval", &self.sync_interval)
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .field("pubsub", &self.pubsub)
            .field("quorum", &self.quorum)
            .field("reconcile_interval", &self.reconcile_interval)
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) instance: String,
    pub(crate) sync_interval: Duration,
    timeout: Duration,
    pub(crate) ttl: Duration,
    pub(crate) quorum: u32,
    reconcile_interval: Duration,
    on_sync: Option<SyncHook>,
    members: Mutex<Members>,
    sync_tx: mpsc::UnboundedSender<SyncMsg>,
    control_tx: mpsc::UnboundedSender<Control>,
    degraded: AtomicBool,
    /// The store answered again after being unreachable: the next sync
    /// reports every breaker and reads every state.
    rejoin: AtomicBool,
    /// Notices may have been lost: reconcile every breaker at the next round.
    missed_notices: AtomicBool,
    /// Sync rounds started (the fleet's coarse clock).
    round: AtomicU64,
    syncs: AtomicU64,
    last_sync_nanos: AtomicU64,
    last_lag_nanos: AtomicU64,
    max_lag_nanos: AtomicU64,
    last_reported: AtomicU64,
    reconciled: AtomicU64,
}

/// The breakers linked to one fleet, in order and by name.
#[derive(Default)]
struct Members {
    all: Vec<Weak<dyn Member>>,
    by_name: HashMap<String, Vec<Weak<dyn Member>>>,
}

/// Work for the sync task.
enum SyncMsg {
    /// A new breaker: sync it at once so it starts in the fleet's state.
    Joined(Weak<dyn Member>),
    /// A breaker was dropped; its last report (of `epoch`) held calls.
    Left { name: String, epoch: u64 },
    /// Sync every breaker now and say when done.
    SyncNow(oneshot::Sender<()>),
}

/// Work for the control lane (never queued behind a sync).
enum Control {
    /// A local transition to publish (compare-and-set, or an override).
    Transition(Weak<dyn Member>, TransitionRequest),
    /// A half-open breaker wants a probe permit.
    WantProbe(Weak<dyn Member>),
    /// A probe's verdict.
    Probe(Weak<dyn Member>, ProbeReport),
}

impl Fleet {
    /// Starts configuring a fleet on `store`.
    pub fn builder(store: impl StateStore) -> FleetBuilder {
        FleetBuilder::from_arc(Arc::new(store))
    }

    /// This instance's id in the fleet.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.shared.store
    }

    /// Whether the store is currently unreachable (breakers decide alone).
    pub fn is_degraded(&self) -> bool {
        self.shared.degraded.load(Ordering::Relaxed)
    }

    /// Completed sync round trips.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Duration of the last sync round trip.
    pub fn last_sync_latency(&self) -> Duration {
        Duration::from_nanos(self.shared.last_sync_nanos.load(Ordering::Relaxed))
    }

    /// How late the last periodic sync finished, from the moment it was due
    /// (a sync later than one `sync_interval` delays the next one).
    pub fn last_sync_lag(&self) -> Duration {
        Duration::from_nanos(self.shared.last_lag_nanos.load(Ordering::Relaxed))
    }

    /// The latest a periodic sync has finished, from the moment it was due,
    /// since the fleet was built or [`reset_max_sync_lag`](Self::reset_max_sync_lag).
    pub fn max_sync_lag(&self) -> Duration {
        Duration::from_nanos(self.shared.max_lag_nanos.load(Ordering::Relaxed))
    }

    /// Starts a new measurement of [`max_sync_lag`](Self::max_sync_lag).
    pub fn reset_max_sync_lag(&self) {
        self.shared.max_lag_nanos.store(0, Ordering::Relaxed);
    }

    /// Breakers whose windows the last sync reported (the others had nothing
    /// new and cost the store nothing).
    pub fn last_sync_reported(&self) -> u64 {
        self.shared.last_reported.load(Ordering::Relaxed)
    }

    /// Breakers checked by reconciliation passes so far.
    pub fn reconciled(&self) -> u64 {
        self.shared.reconciled.load(Ordering::Relaxed)
    }

    /// Syncs every linked breaker now (instead of at the next interval) and
    /// waits until it is done, e.g. right after building breakers so they
    /// start in the fleet's state.
    pub async fn sync_now(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.sync_tx.send(SyncMsg::SyncNow(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Sets a breaker's state for the whole fleet, unconditionally (manual
    /// control), optionally lapsing back to closed after `expires_in`. Every
    /// instance applies it and reports it as an audit event naming `actor`.
    pub async fn override_state(
        &self,
        name: &str,
        to: State,
        expires_in: Option<Duration>,
        actor: &str,
    ) -> Result<FleetView, StoreError> {
        let req = TransitionRequest {
            name: name.to_string(),
            from_epoch: None,
            from_state: None,
            quorum: 0,
            to,
            open_for: Duration::ZERO,
            expires_in,
            actor: actor.to_string(),
            reason: format!("manual override to {to}"),
            ttl: self.shared.ttl,
        };
        let r = self.shared.call(self.shared.store.transition(&req)).await?;
        Ok(r.view)
    }

    /// The names of the live breakers linked to this fleet.
    pub fn breaker_names(&self) -> Vec<String> {
        let m = self
            .shared
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = m
            .by_name
            .iter()
            .filter(|(_, ws)| ws.iter().any(|w| w.strong_count() > 0))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("instance", &self.shared.instance)
            .field("store", &self.shared.store)
            .field("sync_interval", &self.shared.sync_interval)
            .field("degraded", &self.is_degraded())
            .finish()
    }
}

impl FleetBuilder {
    /// Starts configuring a fleet on a shared store.
    pub fn from_arc(store: Arc<dyn StateStore>) -> Self {
        FleetBuilder {
            store,
            instance: None,
            sync_interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            ttl: Duration::from_secs(600),
            pubsub: true,
            quorum: 0,
            on_sync: None,
            reconcile_interval: None,
        }
    }

    /// Calls `hook` after every sync round trip with its latency and whether
    /// it worked (e.g. to export the store's sync latency as a metric). It
    /// runs on the sync task: keep it short.
    pub fn on_sync(mut self, hook: impl Fn(Duration, bool) + Send + Sync + 'static) -> Self {
        self.on_sync = Some(Arc::new(hook));
        self
    }

    /// Quorum-assisted opening: a breaker's own trip opens it fleet-wide only
    /// when at least `k` live instances (itself included) see failures or slow
    /// calls in their windows; otherwise it opens on this instance alone,
    /// probes and recovers on its own, and rejoins the fleet when it closes.
    /// So one instance with a broken network path does not cut off the whole
    /// fleet. 0 or 1: no quorum (default).
    pub fn quorum(mut self, k: u32) -> Self {
        self.quorum = k;
        self
    }

    /// This instance's id (default: host name and process id).
    pub fn instance(mut self, id: &str) -> Self {
        self.instance = Some(id.to_string());
        self
    }

    /// How often windows are reported and fleet state read (default 100 ms;
    /// 1 ms to 60 s).
    pub fn sync_interval(mut self, d: Duration) -> Self {
        self.sync_interval = d;
        self
    }

    /// How long to wait for the store on each round trip before declaring it
    /// degraded (default 500 ms). Calls never wait on the store.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// How long a breaker's keys outlive its last use (default 10 minutes).
    pub fn ttl(mut self, d: Duration) -> Self {
        self.ttl = d;
        self
    }

    /// How often every breaker is checked against the store in a batched
    /// reconciliation pass, which repairs missed notices and keeps the keys
    /// of idle breakers alive (default 60 s, or half the TTL if that is
    /// shorter; from the sync interval to half the TTL). Active breakers do
    /// not wait for it: each sync brings back their state. It is at once
    /// after the push channel reconnected. Without pub/sub, every sync reads
    /// every breaker instead.
    pub fn reconcile_interval(mut self, d: Duration) -> Self {
        self.reconcile_interval = Some(d);
        self
    }

    /// Whether to listen for transitions pushed by the store (default true);
    /// without it, instances learn of them at the next sync (every sync then
    /// carries every breaker).
    pub fn pubsub(mut self, on: bool) -> Self {
        self.pubsub = on;
        self
    }

    /// Checks the options and starts the background tasks on the current
    /// tokio runtime.
    pub fn build(self) -> Result<Fleet, ConfigError> {
        if self.sync_interval < Duration::from_millis(1)
            || self.sync_interval > Duration::from_secs(60)
        {
            return Err(ConfigError::new(
                "sync_interval",
                self.sync_interval,
                "a sync interval from 1ms to 60s",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                "timeout",
                self.timeout,
                "a store timeout greater than zero",
            ));
        }
        if self.ttl < self.sync_interval * 2 {
            return Err(ConfigError::new(
                "ttl",
                self.ttl,
                "a key TTL of at least two sync intervals",
            ));
        }
        let reconcile_interval = match self.reconcile_interval {
            Some(d) if d < self.sync_interval || d > self.ttl / 2 => {
                return Err(ConfigError::new(
                    "reconcile_interval",
                    d,
                    "a reconciliation interval from the sync interval to half the key TTL",
                ));
            }
            Some(d) => d,
            None => Duration::from_secs(60).clamp(self.sync_interval, self.ttl / 2),
        };
        let instance = self.instance.unwrap_or_else(default_instance);
        if instance.is_empty() {
            return Err(ConfigError::new(
                "instance",
                instance,
                "a non-empty instance id",
            ));
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Err(ConfigError::new(
                "fleet",
                "no tokio runtime",
                "to be built inside a tokio runtime (its sync task runs there)",
            ));
        };
        let (sync_tx, sync_rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let notices = if self.pubsub {
            self.store.subscribe()
        } else {
            None
        };
        let pushed = notices.is_some();
        let shared = Arc::new(Shared {
            store: self.store,
            instance,
            sync_interval: self.sync_interval,
            timeout: self.timeout,
            ttl: self.ttl,
            quorum: self.quorum,
            reconcile_interval,
            on_sync: self.on_sync,
            members: Mutex::new(Members::default()),
            sync_tx,
            control_tx,
            degraded: AtomicBool::new(false),
            rejoin: AtomicBool::new(false),
            missed_notices: AtomicBool::new(false),
            round: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            last_sync_nanos: AtomicU64::new(0),
            last_lag_nanos: AtomicU64::new(0),
            max_lag_nanos: AtomicU64::new(0),
            last_reported: AtomicU64::new(0),
            reconciled: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&shared);
        handle.spawn(sync::run(weak.clone(), sync_rx, pushed));
        handle.spawn(control::run(weak.clone(), control_rx));
        if let Some(rx) = notices {
            handle.spawn(control::listen(weak, rx));
        }
        Ok(Fleet { shared })
    }
}

fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "host".to_string());
    format!("{host}-{}", std::process::id())
}

impl Shared {
    fn register(&self, name: &str, member: Weak<dyn Member>) {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        m.all.push(member.clone());
        m.by_name.entry(name.to_string()).or_default().push(member);
    }

    /// Every live breaker (dropping the dead from the list).
    fn members(&self) -> Vec<Arc<dyn Member>> {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(m.all.len());
        m.all.retain(|w| match w.upgrade() {
            Some(a) => {
                out.push(a);
                true
            }
            None => false,
        });
        out
    }

    /// The live breakers named `name`.
    fn named(&self, name: &str) -> Vec<Arc<dyn Member>> {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ws) = m.by_name.get_mut(name) else {
            return Vec::new();
        };
        ws.retain(|w| w.strong_count() > 0);
        let out: Vec<_> = ws.iter().filter_map(Weak::upgrade).collect();
        if ws.is_empty() {
            m.by_name.remove(name);
        }
        out
    }

    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// Records whether the last store call worked; tells every breaker when
    /// that changes, and asks for a full re-join when the store is back.
    fn health(&self, result: Result<(), &StoreError>) {
        let degraded = result.is_err();
        if self.degraded.swap(degraded, Ordering::AcqRel) != degraded {
            if !degraded {
                self.rejoin.store(true, Ordering::Release);
            }
            let detail = result.err().map(ToString::to_string);
            for m in self.members() {
                m.store_degraded(degraded, detail.clone());
            }
        }
    }
}
