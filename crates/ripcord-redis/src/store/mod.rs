//! [`RedisStore`]: ripcord's [`StateStore`] on Redis.

mod config;
mod listener;
pub(crate) mod reply;
pub(crate) mod scripts;

pub use config::RedisStoreBuilder;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Cmd, RedisError, Value};
use ripcord::store::{
    BoxFuture, FleetNotice, FleetView, ProbeReport, StateStore, StoreError, SyncEntry,
    TransitionRequest, TransitionResult,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::connection::{Connection, Settings};
use crate::keys::{slot, Keys};
use scripts::{evalsha, Scripts};

/// A [`StateStore`] on Redis (one server, or a Redis Cluster): the shared
/// state of a fleet of [`CircuitBreaker`](ripcord::CircuitBreaker)s, and the
/// home of [`RedisRateLimiter`](crate::RedisRateLimiter)s.
///
/// Cheap to clone: clones share one connection. Every method is one Lua
/// script per breaker, run by `EVALSHA`; [`sync`](StateStore::sync) of many
/// breakers is one pipelined round trip. See the [crate docs](crate) for the
/// key layout and the semantics.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) conn: Connection,
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

impl Inner {
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
        instance: &'a str,
        entries: &'a [SyncEntry],
    ) -> BoxFuture<'a, Result<Vec<FleetView>, StoreError>> {
        Box::pin(async move {
            let inner = &*self.inner;
            let mut keys = Vec::with_capacity(entries.len());
            let cmds: Vec<(u16, Cmd)> = entries
                .iter()
                .map(|e| {
                    let state = inner.keys.state(&e.name);
                    let reports = inner.keys.reports(&e.name);
                    let cmd = evalsha(
                        &inner.scripts.sync,
                        &[&state, &reports],
                        &[
                            &e.name,
                            &inner.channel,
                            &instance,
                            &e.fleet_epoch,
                            &e.window.calls,
                            &e.window.failures,
                            &e.window.slow,
                            &micros(e.stale_after),
                            &ttl_millis(e.ttl),
                        ],
                    );
                    let s = slot(state.as_bytes());
                    keys.push(state);
                    (s, cmd)
                })
                .collect();
            let values = inner
                .conn
                .query_many(&cmds)
                .await
                .map_err(|e| inner.error(e))?;
            if values.len() != entries.len() {
                return Err(StoreError::Unavailable(format!(
                    "{} replies to {} scripts",
                    values.len(),
                    entries.len()
                )));
            }
            let mut views = Vec::with_capacity(entries.len());
            for ((e, key), v) in entries.iter().zip(&keys).zip(&values) {
                let items = self.script_reply(key, v)?;
                self.check_corruption(key, items.get(8));
                views.push(self.decode_view(&e.name, key, items)?);
            }
            Ok(views)
        })
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
            let found = inner
                .conn
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
                    (
                        slot(state.as_bytes()),
                        evalsha(&inner.scripts.view, &[&state, &reports], &[]),
                    )
                })
                .collect();
            let values = inner
                .conn
                .query_many(&cmds)
                .await
                .map_err(|e| inner.error(e))?;
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
