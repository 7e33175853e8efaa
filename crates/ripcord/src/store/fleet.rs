//! The per-process link between local breakers and a [`StateStore`].

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{
    FleetNotice, FleetView, ProbeReport, StateStore, StoreError, SyncEntry, TransitionRequest,
    WindowTotals,
};
use crate::circuit_breaker::Inner;
use crate::{ConfigError, State};

/// A handle on the shared state of a fleet: one store, one background task
/// per process that syncs every breaker linked to it. Cheap to clone.
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
    on_sync: Option<SyncHook>,
    members: Mutex<Vec<Weak<Inner>>>,
    tx: mpsc::UnboundedSender<Msg>,
    degraded: AtomicBool,
    syncs: AtomicU64,
    last_sync_nanos: AtomicU64,
}

pub(crate) enum Msg {
    /// A local transition to publish (compare-and-set, or an override).
    Transition(Weak<Inner>, TransitionRequest),
    /// A half-open breaker wants a probe permit.
    WantProbe(Weak<Inner>),
    /// A probe's verdict.
    Probe(Weak<Inner>, ProbeReport),
    /// A new breaker: sync it at once so it starts in the fleet's state.
    Joined,
    /// Sync everything now and say when done.
    SyncNow(oneshot::Sender<()>),
}

/// The per-breaker side of the link (held by the breaker).
pub(crate) struct Link {
    pub(crate) fleet: Arc<Shared>,
    /// The last fleet epoch this breaker knows.
    pub(crate) fleet_epoch: AtomicU64,
    /// The fleet window minus this instance's own share, from the last sync.
    others: [AtomicU64; 3],
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
}

impl Link {
    pub(crate) fn new(fleet: &Fleet) -> Self {
        Link {
            fleet: fleet.shared.clone(),
            fleet_epoch: AtomicU64::new(0),
            others: Default::default(),
            granted: AtomicU32::new(0),
            want_probe: AtomicBool::new(false),
            pending: AtomicU32::new(0),
            local_only: AtomicBool::new(false),
            audited_epoch: AtomicU64::new(0),
        }
    }

    /// Whether the fleet decides (false while the store is unreachable: the
    /// breaker then decides alone).
    pub(crate) fn active(&self) -> bool {
        !self.fleet.degraded.load(Ordering::Relaxed) && !self.local_only.load(Ordering::Relaxed)
    }

    pub(crate) fn others(&self) -> WindowTotals {
        WindowTotals {
            calls: self.others[0].load(Ordering::Relaxed),
            failures: self.others[1].load(Ordering::Relaxed),
            slow: self.others[2].load(Ordering::Relaxed),
        }
    }

    fn set_others(&self, w: WindowTotals) {
        self.others[0].store(w.calls, Ordering::Relaxed);
        self.others[1].store(w.failures, Ordering::Relaxed);
        self.others[2].store(w.slow, Ordering::Relaxed);
    }

    pub(crate) fn send_transition(&self, me: Weak<Inner>, req: TransitionRequest) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.fleet.tx.send(Msg::Transition(me, req)).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn want_probe(&self, me: Weak<Inner>) {
        if !self.want_probe.swap(true, Ordering::AcqRel) {
            let _ = self.fleet.tx.send(Msg::WantProbe(me));
        }
    }

    pub(crate) fn send_probe(&self, me: Weak<Inner>, report: ProbeReport) {
        let _ = self.fleet.tx.send(Msg::Probe(me, report));
    }

    pub(crate) fn joined(&self) {
        let _ = self.fleet.tx.send(Msg::Joined);
    }

    pub(crate) fn reset_probes(&self) {
        self.granted.store(0, Ordering::Release);
        self.want_probe.store(false, Ordering::Release);
    }
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

    /// Syncs every linked breaker now (instead of at the next interval) and
    /// waits until it is done, e.g. right after building breakers so they
    /// start in the fleet's state.
    pub async fn sync_now(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.tx.send(Msg::SyncNow(tx)).is_ok() {
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

    /// Whether to listen for transitions pushed by the store (default true);
    /// without it, instances learn of them at the next sync.
    pub fn pubsub(mut self, on: bool) -> Self {
        self.pubsub = on;
        self
    }

    /// Checks the options and starts the background task on the current tokio
    /// runtime.
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
        let (tx, rx) = mpsc::unbounded_channel();
        let notices = if self.pubsub {
            self.store.subscribe()
        } else {
            None
        };
        let shared = Arc::new(Shared {
            store: self.store,
            instance,
            sync_interval: self.sync_interval,
            timeout: self.timeout,
            ttl: self.ttl,
            quorum: self.quorum,
            on_sync: self.on_sync,
            members: Mutex::new(Vec::new()),
            tx,
            degraded: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            last_sync_nanos: AtomicU64::new(0),
        });
        handle.spawn(run(Arc::downgrade(&shared), rx, notices));
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
    pub(crate) fn register(&self, member: Weak<Inner>) {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|w| w.strong_count() > 0);
        m.push(member);
    }

    fn members(&self) -> Vec<Arc<Inner>> {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|w| w.strong_count() > 0);
        m.iter().filter_map(Weak::upgrade).collect()
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
    /// that changes.
    fn health(&self, result: Result<(), &StoreError>) {
        let degraded = result.is_err();
        if self.degraded.swap(degraded, Ordering::AcqRel) != degraded {
            let detail = result.err().map(ToString::to_string);
            for m in self.members() {
                m.store_degraded(degraded, detail.clone());
            }
        }
    }

    async fn sync_all(&self) {
        let members = self.members();
        if members.is_empty() {
            return;
        }
        let entries: Vec<SyncEntry> = members.iter().map(|m| m.sync_entry(self)).collect();
        // tokio's clock, like every timer here: it follows paused time in tests.
        let started = tokio::time::Instant::now();
        let result = self.call(self.store.sync(&self.instance, &entries)).await;
        let latency = started.elapsed();
        if let Some(hook) = &self.on_sync {
            hook(latency, result.is_ok());
        }
        match result {
            Ok(views) => {
                self.last_sync_nanos
                    .store(latency.as_nanos() as u64, Ordering::Relaxed);
                self.syncs.fetch_add(1, Ordering::Relaxed);
                self.health(Ok(()));
                for ((m, entry), view) in members.iter().zip(&entries).zip(views) {
                    if let Some(link) = m.link() {
                        if view.epoch == entry.fleet_epoch {
                            link.set_others(view.window.saturating_sub(entry.window));
                        } else {
                            link.set_others(WindowTotals::default());
                        }
                    }
                    m.adopt(&view, None);
                }
            }
            Err(e) => self.health(Err(&e)),
        }
    }

    async fn handle(&self, msg: Msg) {
        match msg {
            Msg::Transition(who, req) => {
                let result = self.call(self.store.transition(&req)).await;
                let Some(m) = who.upgrade() else { return };
                let Some(link) = m.link() else { return };
                link.pending.fetch_sub(1, Ordering::AcqRel);
                match result {
                    Ok(r) => {
                        self.health(Ok(()));
                        if r.applied {
                            link.fleet_epoch.fetch_max(r.view.epoch, Ordering::AcqRel);
                        } else if r.quorum_refused {
                            // Too few instances see it: stay open here only.
                            link.local_only.store(true, Ordering::Release);
                        } else {
                            m.adopt(&r.view, None);
                        }
                    }
                    Err(e) => self.health(Err(&e)),
                }
            }
            Msg::WantProbe(who) => {
                let Some(m) = who.upgrade() else { return };
                let Some(link) = m.link() else { return };
                let epoch = link.fleet_epoch.load(Ordering::Acquire);
                let limit = m.half_open_limit();
                let r = self
                    .call(self.store.acquire_probe(m.name(), epoch, limit, self.ttl))
                    .await;
                link.want_probe.store(false, Ordering::Release);
                match r {
                    Ok(granted) => {
                        self.health(Ok(()));
                        if granted && link.fleet_epoch.load(Ordering::Acquire) == epoch {
                            link.granted.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    Err(e) => self.health(Err(&e)),
                }
            }
            Msg::Probe(who, report) => {
                let r = self.call(self.store.report_probe(&report)).await;
                let Some(m) = who.upgrade() else { return };
                match r {
                    Ok(view) => {
                        self.health(Ok(()));
                        m.adopt(&view, None);
                    }
                    Err(e) => self.health(Err(&e)),
                }
            }
            Msg::Joined => self.sync_all().await,
            Msg::SyncNow(done) => {
                self.sync_all().await;
                let _ = done.send(());
            }
        }
    }

    fn notice(&self, n: &FleetNotice) {
        for m in self.members() {
            if m.name() == n.view.name {
                m.adopt(&n.view, Some(n));
            }
        }
    }
}

async fn run(
    shared: Weak<Shared>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    mut notices: Option<tokio::sync::broadcast::Receiver<FleetNotice>>,
) {
    let interval = match shared.upgrade() {
        Some(s) => s.sync_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let notice = async {
            match notices.as_mut() {
                Some(rx) => Some(rx.recv().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {
                let Some(s) = shared.upgrade() else { return };
                s.sync_all().await;
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                let Some(s) = shared.upgrade() else { return };
                s.handle(msg).await;
            }
            n = notice => {
                let Some(s) = shared.upgrade() else { return };
                match n {
                    Some(Ok(n)) => s.notice(&n),
                    // Missed notices are repaired by the next sync.
                    Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => s.sync_all().await,
                    Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) | None => notices = None,
                }
            }
        }
    }
}

/// Names of breakers linked to this fleet, for diagnostics.
impl Fleet {
    /// The names of the live breakers linked to this fleet.
    pub fn breaker_names(&self) -> Vec<String> {
        let set: HashSet<String> = self
            .shared
            .members()
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        let mut v: Vec<String> = set.into_iter().collect();
        v.sort();
        v
    }
}
