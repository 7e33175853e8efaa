//! [`RedisStore`]: ripcord's [`StateStore`] on Redis.

mod config;
mod faults;
mod listener;
pub(crate) mod reply;
pub(crate) mod scripts;

pub use config::RedisStoreBuilder;
pub use faults::{FaultAction, FaultAudit, FaultError, FleetFault};

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Cmd, RedisError, Value};
use ripcord::store::{
    BoxFuture, FleetNotice, FleetView, Heartbeat, ProbeReport, ReconcileEntry, StateStore,
    StoreError, SyncEntry, TransitionRequest, TransitionResult,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::connection::{Connection, Settings};
use crate::keys::{slot, Keys};
use scripts::{evalsha, Lua, Scripts};

/// Breakers per script run of a sync or a reconciliation pass: one run is
/// atomic in Redis, so it is kept short enough not to hold up other clients.
const BATCH: usize = 256;

/// A [`StateStore`] on Redis (one server, or a Redis Cluster): the shared
/// state of a fleet of [`CircuitBreaker`](ripcord::CircuitBreaker)s, and the
/// home of [`RedisRateLimiter`](crate::RedisRateLimiter)s.
///
/// Cheap to clone: clones share two connections (one for syncs and
/// reconciliation, one for transitions, probes and rate limits). Every
/// method is a Lua script run by `EVALSHA`; [`sync`](StateStore::sync) and
/// [`reconcile`](StateStore::reconcile) carry up to 256 breakers per script
/// run (per slot on a Cluster), all in one pipelined round trip. See the
/// [crate docs](crate) for the key layout and the semantics.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Transitions, probes, rate limiters: the control lane.
    pub(crate) conn: Connection,
    /// Syncs, reconciliation passes and listings.
    bulk: Connection,
    /// The heartbeats the last sync brought back: `(instance, at µs, stale µs)`.
    live: Mutex<Vec<(String, u64, u64)>>,
    /// When a Cluster store last sent a heartbeat of its own.
    last_beat: Mutex<Option<tokio::time::Instant>>,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    channel: String,
    settings: Settings,
    url: String,
    pubsub: bool,
    notices: broadcast::Sender<FleetNotice>,
    listener: Mutex<Option<JoinHandle<()>>>,
    listener_stats: Arc<listener::Stats>,
    pubsub_clients: Vec<redis::Client>,
    runtime: tokio::runtime::Handle,
    corruptions: AtomicU64,
    corrupt_tx: broadcast::Sender<StoreError>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("cluster", &self.inner.conn.is_cluster())
            .field("key_prefix", &self.inner.keys.prefix())
            .field("corruptions", &self.corruptions())
            .finish()
    }
}

/// Durations cross into Lua as whole microseconds (rounded up, so an open
/// period is never cut short), capped well below 2^53.
fn micros(d: Duration) -> u64 {
    let us = d.as_nanos().div_ceil(1_000);
    u64::try_from(us).unwrap_or(u64::MAX).min(1 << 50)
}

/// Key TTLs in whole milliseconds, at least 1.
pub(crate) fn ttl_millis(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).clamp(1, 1 << 40)
}

impl RedisStore {
    /// Starts configuring a store on the Redis at `url`
    /// (`redis://[user[:password]@]host[:port][/db]`, or `rediss://` with the
    /// `tls` feature).
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::new(url)
    }

    /// The key prefix (default `ripcord`).
    pub fn key_prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// The key of a breaker's shared state (a hash).
    pub fn state_key(&self, name: &str) -> String {
        self.inner.keys.state(name)
    }

    /// The key of a breaker's per-instance window reports (a hash).
    pub fn reports_key(&self, name: &str) -> String {
        self.inner.keys.reports(name)
    }

    /// The key of a fleet-wide rate limiter's state (a hash).
    pub fn rate_limiter_key(&self, name: &str) -> String {
        self.inner.keys.gcra(name)
    }

    /// The pub/sub channel transitions are published on (`<prefix>:events`).
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.conn.is_cluster()
    }

    /// Corrupt or foreign values found in this store's keys so far (each one
    /// was reported, then overwritten or ignored).
    pub fn corruptions(&self) -> u64 {
        self.inner.corruptions.load(Ordering::Relaxed)
    }

    /// Every corrupt or foreign value found from now on, as
    /// [`StoreError::Corrupt`]. (A corrupt breaker state is also published to
    /// every instance as a fleet notice from actor `store`, which their
    /// breakers report as a `FleetOverride` audit event.)
    pub fn subscribe_corruptions(&self) -> broadcast::Receiver<StoreError> {
        self.inner.corrupt_tx.subscribe()
    }

    /// Whether the pub/sub listener is connected and subscribed (false before
    /// the first [`subscribe`](StateStore::subscribe)).
    pub fn is_listening(&self) -> bool {
        self.inner.listener_stats.connected()
    }

    /// Transition notices received over pub/sub so far.
    pub fn notices_received(&self) -> u64 {
        self.inner.listener_stats.received()
    }

    /// One `PING` round trip.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = tokio::time::Instant::now();
        self.inner
            .conn
            .query(0, redis::cmd("PING"))
            .await
            .map_err(|e| self.inner.error(e))?;
        Ok(started.elapsed())
    }

    pub(crate) fn report_corruption(&self, key: String, detail: String) {
        self.inner.corruptions.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .inner
            .corrupt_tx
            .send(StoreError::Corrupt { key, detail });
    }

    /// The array reply of one breaker script, or why it is not one.
    fn script_reply<'v>(&self, key: &str, v: &'v Value) -> Result<&'v [Value], StoreError> {
        match v {
            Value::ServerError(e) => Err(StoreError::Unavailable(format!(
                "script on `{key}` failed: {} {}",
                e.code(),
                e.details().unwrap_or("")
            ))),
            other => reply::array(other).map_err(|detail| StoreError::Corrupt {
                key: key.to_string(),
                detail,
            }),
        }
    }

    /// Caches the heartbeats a sync brought back (the scripts judge
    /// liveness by them).
    fn heartbeats(&self, key: &str, items: &[Value]) -> Result<(), StoreError> {
        let Some((detail, beats)) = items.split_last() else {
            return Err(StoreError::Corrupt {
                key: key.to_string(),
                detail: "empty heartbeat reply".to_string(),
            });
        };
        self.check_corruption(key, Some(detail));
        let mut live = Vec::with_capacity(beats.len() / 3);
        for b in beats.chunks(3) {
            if let [id, at, stale] = b {
                if let (Some(id), Some(at), Some(stale)) = (
                    reply::text(id),
                    reply::int(at).and_then(|n| u64::try_from(n).ok()),
                    reply::int(stale).and_then(|n| u64::try_from(n).ok()),
                ) {
                    live.push((id, at, stale));
                }
            }
        }
        *self.inner.live.lock().unwrap_or_else(|e| e.into_inner()) = live;
        Ok(())
    }

    fn check_corruption(&self, key: &str, v: Option<&Value>) {
        if let Some(detail) = reply::corruption(v) {
            self.report_corruption(key.to_string(), detail);
        }
    }

    fn decode_view(&self, name: &str, key: &str, v: &[Value]) -> Result<FleetView, StoreError> {
        reply::view(name, v).map_err(|detail| StoreError::Corrupt {
            key: key.to_string(),
            detail,
        })
    }
}

/// An `EVALSHA` of a batch script over some breakers: the state and
/// reports keys of each, then `head`, the heartbeats, and each breaker's
/// arguments.
fn batch_cmd<'n>(
    inner: &Inner,
    script: &Lua,
    names: impl Iterator<Item = &'n str>,
    extra_key: Option<&str>,
    head: &[&dyn scripts::ToArg],
    live: &[(String, u64, u64)],
    args: &mut dyn FnMut(&mut Cmd),
) -> (u16, Cmd) {
    let names: Vec<&str> = names.collect();
    let mut c = redis::cmd("EVALSHA");
    c.arg(&script.hash)
        .arg(names.len() * 2 + usize::from(extra_key.is_some()));
    let mut first = None;
    for n in &names {
        let state = inner.keys.state(n);
        first.get_or_insert_with(|| slot(state.as_bytes()));
        c.arg(state).arg(inner.keys.reports(n));
    }
    if let Some(k) = extra_key {
        c.arg(k);
    }
    for a in head {
        a.push(&mut c);
    }
    push_live(&mut c, live);
    args(&mut c);
    (first.unwrap_or(0), c)
}

/// The heartbeat block of a script's arguments.
fn push_live(c: &mut Cmd, live: &[(String, u64, u64)]) {
    c.arg(live.len());
    for (id, at, stale) in live {
        c.arg(id).arg(*at).arg(*stale);
    }
}

/// Groups of at most [`BATCH`] entries that one script may touch together:
/// in order on one server; by slot on a Cluster.
fn groups(cluster: bool, names: &[&str], keys: &Keys) -> Vec<Vec<usize>> {
    if !cluster {
        return (0..names.len())
            .collect::<Vec<_>>()
            .chunks(BATCH)
            .map(<[usize]>::to_vec)
            .collect();
    }
    let mut by_slot: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
    for (i, n) in names.iter().enumerate() {
        by_slot
            .entry(slot(keys.state(n).as_bytes()))
            .or_default()
            .push(i);
    }
    by_slot
        .into_values()
        .flat_map(|v| v.chunks(BATCH).map(<[usize]>::to_vec).collect::<Vec<_>>())
        .collect()
}

impl Inner {
    /// A reply of the bulk connection; when it found the server gone, the
    /// control connection is re-made too (its next transition must not fail
    /// on a connection that died with the server).
    async fn bulk_result<T>(&self, r: Result<T, RedisError>) -> Result<T, StoreError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                if Connection::breaks(&e) {
                    self.conn.forget().await;
                }
                Err(self.error(e))
            }
        }
    }

    fn live(&self) -> Vec<(String, u64, u64)> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn error(&self, e: RedisError) -> StoreError {
        if e.is_timeout() {
            StoreError::Timeout(self.settings.response_timeout)
        } else {
            StoreError::Unavailable(e.to_string())
        }
    }
}

impl StateStore for RedisStore {
    fn sync<'a>(
        &'a self,
        heartbeat: &'a Heartbeat,
        entries: &'a [SyncEntry],
    ) -> BoxFuture<'a, Result<Vec<FleetView>, StoreError>> {
        Box::pin(async move {
            let inner = &*self.inner;
            let live = inner.live();
            let instances = inner.keys.instances();
            let cluster = inner.conn.is_cluster();
            let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
            let groups = groups(cluster, &names, &inner.keys);
            // On one server the first batch is also the heartbeat; on a
            // Cluster (another slot) the heartbeat is its own script, sent
            // when there is nothing else or every third of its staleness.
            let inline_beat = !cluster && !groups.is_empty();
            let beat_alone = !inline_beat && {
                let mut last = inner.last_beat.lock().unwrap_or_else(|e| e.into_inner());
                let due = groups.is_empty()
                    || (heartbeat.required
                        && last.is_none_or(|t| t.elapsed() >= heartbeat.stale_after / 3));
                if due {
                    *last = Some(tokio::time::Instant::now());
                }
                due
            };
            let (stale_us, ttl_ms) = (micros(heartbeat.stale_after), ttl_millis(heartbeat.ttl));
            let mut cmds = Vec::with_capacity(groups.len() + 1);
            if beat_alone {
                let mut hb = redis::cmd("EVALSHA");
                hb.arg(&inner.scripts.heartbeat.hash)
                    .arg(1)
                    .arg(&instances)
                    .arg(&heartbeat.instance)
                    .arg(stale_us)
                    .arg(ttl_ms);
                cmds.push((slot(instances.as_bytes()), hb));
            }
            for (n, g) in groups.iter().enumerate() {
                cmds.push(batch_cmd(
                    inner,
                    &inner.scripts.sync,
                    g.iter().map(|&i| names[i]),
                    (inline_beat && n == 0).then_some(instances.as_str()),
                    &[&inner.channel, &heartbeat.instance, &stale_us, &ttl_ms],
                    &live,
                    &mut |c| {
                        for &i in g {
                            let e = &entries[i];
                            c.arg(&e.name)
                                .arg(e.fleet_epoch)
                                .arg(e.window.calls)
                                .arg(e.window.failures)
                                .arg(e.window.slow)
                                .arg(micros(e.stale_after))
                                .arg(ttl_millis(e.ttl))
                                .arg(u8::from(e.touch));
                        }
                    },
                ));
            }
            let values = inner.bulk.query_many(&cmds).await;
            let values = inner.bulk_result(values).await?;
            if values.len() != cmds.len() {
                return Err(StoreError::Unavailable(format!(
                    "{} replies to {} scripts",
                    values.len(),
                    cmds.len()
                )));
            }
            let mut values = &values[..];
            if beat_alone {
                let items = self.script_reply(&instances, &values[0])?;
                self.heartbeats(&instances, items)?;
                values = &values[1..];
            }
            let mut views: Vec<Option<FleetView>> = vec![None; entries.len()];
            for (n, (g, v)) in groups.iter().zip(values).enumerate() {
                let key = inner.keys.state(names[g[0]]);
                let mut items = self.script_reply(&key, v)?;
                if inline_beat && n == 0 && items.len() >= g.len() * 9 {
                    let (mine, beats) = items.split_at(g.len() * 9);
                    self.heartbeats(&instances, beats)?;
                    items = mine;
                }
                for (&i, one) in g.iter().zip(per_breaker(key, items, g.len())?) {
                    let key = inner.keys.state(names[i]);
                    self.check_corruption(&key, one.get(8));
                    views[i] = Some(self.decode_view(names[i], &key, one)?);
                }
            }
            Ok(views.into_iter().flatten().collect())
        })
    }

    fn reconcile<'a>(
        &'a self,
        entries: &'a [ReconcileEntry],
    ) -> BoxFuture<'a, Result<Vec<Option<FleetView>>, StoreError>> {
        Box::pin(async move {
            let inner = &*self.inner;
            let live = inner.live();
            let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
            let groups = groups(inner.conn.is_cluster(), &names, &inner.keys);
            let cmds: Vec<(u16, Cmd)> = groups
                .iter()
                .map(|g| {
                    batch_cmd(
                        inner,
                        &inner.scripts.reconcile,
                        g.iter().map(|&i| names[i]),
                        None,
                        &[&inner.channel],
                        &live,
                        &mut |c| {
                            for &i in g {
                                let e = &entries[i];
                                c.arg(&e.name)
                                    .arg(e.known_epoch)
                                    .arg(ttl_millis(e.ttl))
                                    .arg(u8::from(e.touch));
                            }
                        },
                    )
                })
                .collect();
            let values = inner.bulk.query_many(&cmds).await;
            let values = inner.bulk_result(values).await?;
            let mut views: Vec<Option<FleetView>> = vec![None; entries.len()];
            for (g, v) in groups.iter().zip(&values) {
                let key = inner.keys.state(names[g[0]]);
                let items = self.script_reply(&key, v)?;
                for (&i, one) in g.iter().zip(per_breaker(key, items, g.len())?) {
                    let key = inner.keys.state(names[i]);
                    self.check_corruption(&key, one.get(8));
                    if reply::text(&one[0]).is_some_and(|t| !t.is_empty()) {
                        views[i] = Some(self.decode_view(names[i], &key, one)?);
                    }
                }
            }
            Ok(views)
        })
    }

    fn resubscriptions(&self) -> u64 {
        self.inner.listener_stats.subscriptions()
    }

    fn transition<'a>(
        &'a self,
        r: &'a TransitionRequest,
    ) -> BoxFuture<'a, Result<TransitionResult, StoreError>> {
        Box::pin(async move {
            let inner = &*self.inner;
            let state = inner.keys.state(&r.name);
            let reports = inner.keys.reports(&r.name);
            let from = r.from_epoch.map(|e| e.to_string()).unwrap_or_default();
            let expires = r
                .expires_in
                .map(|d| micros(d).to_string())
                .unwrap_or_default();
            let cmd = evalsha(
                &inner.scripts.transition,
                &[&state, &reports],
                &[
                    &r.name,
                    &inner.channel,
                    &from,
                    &r.to.as_str(),
                    &micros(r.open_for),
                    &expires,
                    &ttl_millis(r.ttl),
                    &r.actor,
                    &r.reason,
                    &r.from_state.map_or("", |s| s.as_str()),
                    &r.quorum,
                ],
            );
            let mut cmd = cmd;
            push_live(&mut cmd, &inner.live());
            let v = inner
                .conn
                .query(slot(state.as_bytes()), cmd)
                .await
                .map_err(|e| inner.error(e))?;
            let items = self.script_reply(&state, &v)?;
            self.check_corruption(&state, items.get(9));
            let (applied, quorum_refused) = match items.first().and_then(reply::int) {
                Some(1) => (true, false),
                Some(0) => (false, false),
                Some(2) => (false, true),
                _ => {
                    return Err(StoreError::Corrupt {
                        key: state,
                        detail: format!("bad transition reply {items:?}"),
                    })
                }
            };
            let view = self.decode_view(&r.name, &state, &items[1..])?;
            Ok(TransitionResult {
                applied,
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
            let inner = &*self.inner;
            let state = inner.keys.state(name);
            let reports = inner.keys.reports(name);
            let cmd = evalsha(
                &inner.scripts.acquire_probe,
                &[&state, &reports],
                &[&name, &inner.channel, &epoch, &limit, &ttl_millis(ttl)],
            );
            let mut cmd = cmd;
            push_live(&mut cmd, &inner.live());
            let v = inner
                .conn
                .query(slot(state.as_bytes()), cmd)
                .await
                .map_err(|e| inner.error(e))?;
            let items = self.script_reply(&state, &v)?;
            self.check_corruption(&state, items.get(1));
            match items.first().and_then(reply::int) {
                Some(1) => Ok(true),
                Some(0) => Ok(false),
                _ => Err(StoreError::Corrupt {
                    key: state,
                    detail: format!("bad probe reply {items:?}"),
                }),
            }
        })
    }

    fn report_probe<'a>(
        &'a self,
        r: &'a ProbeReport,
    ) -> BoxFuture<'a, Result<FleetView, StoreError>> {
        Box::pin(async move {
            let inner = &*self.inner;
            let state = inner.keys.state(&r.name);
            let reports = inner.keys.reports(&r.name);
            let cmd = evalsha(
                &inner.scripts.report_probe,
                &[&state, &reports],
                &[
                    &r.name,
                    &inner.channel,
                    &r.epoch,
                    &u8::from(r.success),
                    &r.successes_needed,
                    &r.probes,
                    &micros(r.open_for),
                    &ttl_millis(r.ttl),
                    &r.actor,
                ],
            );
            let mut cmd = cmd;
            push_live(&mut cmd, &inner.live());
            let v = inner
                .conn
                .query(slot(state.as_bytes()), cmd)
                .await
                .map_err(|e| inner.error(e))?;
            let items = self.script_reply(&state, &v)?;
            self.check_corruption(&state, items.get(8));
            self.decode_view(&r.name, &state, items)
        })
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<FleetNotice>> {
        let inner = &*self.inner;
        if !inner.pubsub {
            return None;
        }
        let mut task = inner.listener.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_none() {
            *task = Some(inner.runtime.spawn(listener::run(
                inner.pubsub_clients.clone(),
                inner.channel.clone(),
                inner.notices.clone(),
                inner.settings.clone(),
                inner.listener_stats.clone(),
            )));
        }
        Some(inner.notices.subscribe())
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<FleetView>, StoreError>> {
        Box::pin(async move {
            let inner = &*self.inner;
            let beats = inner
                .bulk
                .query(
                    slot(inner.keys.instances().as_bytes()),
                    redis::cmd("HGETALL").arg(inner.keys.instances()).clone(),
                )
                .await
                .map_err(|e| inner.error(e))?;
            let live = reply::heartbeats(&beats);
            let found = inner
                .bulk
                .scan(&inner.keys.state_pattern())
                .await
                .map_err(|e| inner.error(e))?;
            let mut names: Vec<String> = found
                .iter()
                .filter_map(|k| inner.keys.name_of_state_key(k))
                .map(str::to_string)
                .collect();
            names.sort();
            names.dedup();
            let cmds: Vec<(u16, Cmd)> = names
                .iter()
                .map(|n| {
                    let state = inner.keys.state(n);
                    let reports = inner.keys.reports(n);
                    let mut cmd = evalsha(&inner.scripts.view, &[&state, &reports], &[]);
                    push_live(&mut cmd, &live);
                    (slot(state.as_bytes()), cmd)
                })
                .collect();
            let values = inner.bulk.query_many(&cmds).await;
            let values = inner.bulk_result(values).await?;
            let mut views = Vec::with_capacity(names.len());
            for (name, v) in names.iter().zip(&values) {
                let key = inner.keys.state(name);
                let items = self.script_reply(&key, v)?;
                match items.first().and_then(reply::text).as_deref() {
                    // Expired between SCAN and the script.
                    Some("missing") => continue,
                    Some("corrupt") => {
                        let detail = items
                            .get(1)
                            .and_then(reply::text)
                            .unwrap_or_else(|| "corrupt".to_string());
                        self.report_corruption(key, detail);
                        continue;
                    }
                    _ => {}
                }
                self.check_corruption(&key, items.get(8));
                views.push(self.decode_view(name, &key, items)?);
            }
            Ok(views)
        })
    }
}

/// A batched script's reply split into its breakers' replies (nine values
/// each), or `Corrupt` when the count does not match the breakers sent.
fn per_breaker(
    key: String,
    items: &[Value],
    breakers: usize,
) -> Result<std::slice::Chunks<'_, Value>, StoreError> {
    if items.len() != breakers * 9 {
        return Err(StoreError::Corrupt {
            key,
            detail: format!("{} values for {} breakers", items.len(), breakers),
        });
    }
    Ok(items.chunks(9))
}
