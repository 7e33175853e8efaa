//! The hub behind `/api/events` and `/api/history`: a sampler that records
//! every breaker each second and publishes a snapshot, and, while at least
//! one event stream is open, one follower per breaker that publishes each
//! transition as it happens.
//!
//! A follower subscribes to its breaker's events, which makes every call
//! through that breaker send one; with no stream open there are no
//! followers, so calls send nothing (a breaker that was followed once keeps
//! its empty channel: a call then only finds that nobody listens).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ripcord::{CircuitBreaker, EventKind};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::body::AdminBody;
use super::history::{History, Sample, Totals, HISTORY_SECONDS};
use super::view::{finite, BreakerView, FleetView};
use crate::state::{BreakerEntry, ProxyState};

/// How often the sampler runs.
const TICK: Duration = Duration::from_secs(1);

/// How long a breaker's follower waits between two batches of events: the
/// most a transition waits before it is published.
const BATCH: Duration = Duration::from_millis(20);

/// Event streams open at once, at most.
pub const MAX_STREAMS: usize = 64;

/// Messages a slow event-stream client may fall behind before it loses the
/// oldest (it catches up with the next snapshot).
const CHANNEL_CAPACITY: usize = 64;

/// The shared publisher of the admin listener's events.
#[derive(Clone)]
pub(super) struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<ProxyState>,
    /// Encoded server-sent events; taken (dropped) on stop, which ends every
    /// stream.
    tx: Mutex<Option<broadcast::Sender<Bytes>>>,
    history: History,
    sampler: Mutex<Option<JoinHandle<()>>>,
    /// Event streams open now.
    streams: AtomicUsize,
    /// Event streams open now per peer address.
    per_peer: Arc<crate::conn::Admission>,
    /// The breakers' followers: one per breaker while a stream is open,
    /// none otherwise. Changed only under this lock, after `streams`.
    followers: Mutex<Vec<Follower>>,
}

impl Inner {
    fn followers(&self) -> std::sync::MutexGuard<'_, Vec<Follower>> {
        self.followers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every follower if no stream is open.
    fn unfollow_if_unwatched(&self) {
        let mut followers = self.followers();
        if self.streams.load(Ordering::Acquire) == 0 {
            followers.clear();
        }
    }
}

/// Why an event stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamRefused {
    /// The listener is shutting down.
    ShuttingDown,
    /// [`MAX_STREAMS`] streams are open already.
    TooMany,
    /// The peer holds its share of the streams
    /// (`admin.max_streams_per_peer`).
    TooManyFromPeer,
}

/// Counts an open stream until dropped.
struct StreamSlot(Arc<Inner>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
        // The last stream gone: stop following the breakers.
        self.0.unfollow_if_unwatched();
    }
}

/// What every snapshot and the history say about the whole proxy.
#[derive(Serialize)]
struct Overview<'a> {
    /// Unix time in milliseconds.
    time: u64,
    uptime_seconds: u64,
    fleet: Option<FleetView>,
    breakers: &'a [BreakerView],
}

/// A breaker in a snapshot: its view and its newest sample.
#[derive(Serialize)]
struct SnapshotEntry<'a> {
    #[serde(flatten)]
    view: &'a BreakerView,
    sample: Option<Sample>,
}

#[derive(Serialize)]
struct Snapshot<'a> {
    time: u64,
    uptime_seconds: u64,
    fleet: Option<FleetView>,
    breakers: Vec<SnapshotEntry<'a>>,
}

#[derive(Serialize)]
struct HistoryMessage<'a> {
    #[serde(flatten)]
    overview: Overview<'a>,
    /// Samples kept per breaker.
    seconds: usize,
    history: HashMap<String, Vec<Sample>>,
}

#[derive(Serialize)]
struct Transition<'a> {
    time: u64,
    name: &'a str,
    from: &'static str,
    to: &'static str,
    reason: String,
    epoch: u64,
    breaker: BreakerView,
}

impl Hub {
    /// Starts the sampler (on the current tokio runtime).
    pub(super) fn start(state: Arc<ProxyState>) -> Hub {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        let per_peer =
            crate::conn::Admission::new(MAX_STREAMS, state.access().max_streams_per_peer);
        let hub = Hub {
            inner: Arc::new(Inner {
                per_peer,
                state,
                tx: Mutex::new(Some(tx)),
                history: History::default(),
                sampler: Mutex::new(None),
                streams: AtomicUsize::new(0),
                followers: Mutex::new(Vec::new()),
            }),
        };
        let task = tokio::spawn(sample_forever(hub.clone()));
        *hub.inner.sampler.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        hub
    }

    /// Stops the sampler and the followers, and ends every event stream.
    pub(super) fn stop(&self) {
        if let Some(task) = self
            .inner
            .sampler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        // Dropping the followers aborts them.
        self.inner.followers().clear();
        self.inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    fn publish(&self, message: Bytes) {
        if let Some(tx) = &*self.inner.tx.lock().unwrap_or_else(|e| e.into_inner()) {
            // Nobody listening is fine.
            let _ = tx.send(message);
        }
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Bytes>> {
        self.inner
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }

    /// The `/api/history` document: every breaker now, and its samples.
    pub(super) fn history_json(&self) -> Vec<u8> {
        let state = &self.inner.state;
        let entries = state.breakers();
        let views = BreakerView::all(&entries, state.fleet());
        let message = HistoryMessage {
            overview: Overview {
                time: unix_millis(),
                uptime_seconds: state.started().elapsed().as_secs(),
                fleet: FleetView::of(state.fleet()).0,
                breakers: &views,
            },
            seconds: HISTORY_SECONDS,
            history: self.inner.history.snapshot(),
        };
        to_json(&message)
    }

    /// An event stream: the history first, then every snapshot and
    /// transition.
    pub(super) fn stream(&self, peer: std::net::IpAddr) -> Result<AdminBody, StreamRefused> {
        let mut rx = self.subscribe().ok_or(StreamRefused::ShuttingDown)?;
        if self.inner.streams.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
            self.inner.streams.fetch_sub(1, Ordering::AcqRel);
            return Err(StreamRefused::TooMany);
        }
        let slot = StreamSlot(Arc::clone(&self.inner));
        let Some(place) = self.inner.per_peer.admit(peer) else {
            return Err(StreamRefused::TooManyFromPeer);
        };
        // Follow the breakers before the history is taken, so that no
        // transition after it is missed.
        self.follow_breakers();
        let first = sse("history", &self.history_json(), Some(2000));
        let (tx, body) = mpsc::channel::<Bytes>(8);
        tokio::spawn(async move {
            let _slot = (slot, place);
            if tx.send(first).await.is_err() {
                return;
            }
            loop {
                let message = match rx.recv().await {
                    Ok(m) => m,
                    // Missed messages are superseded by the next snapshot.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(message).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(AdminBody::stream(body))
    }

    /// Follows every current breaker while a stream is open (keeps the
    /// followers of those still listed, drops the others, adds the new
    /// ones); follows none otherwise.
    fn follow_breakers(&self) {
        let mut followers = self.inner.followers();
        if self.inner.streams.load(Ordering::Acquire) == 0 {
            followers.clear();
            return;
        }
        let entries = self.inner.state.breakers();
        followers.retain(|f| entries.iter().any(|e| e.breaker.same_as(&f.breaker)));
        for e in entries.iter() {
            if !followers.iter().any(|f| f.breaker.same_as(&e.breaker)) {
                followers.push(follow(self.clone(), e.clone()));
            }
        }
    }

    /// Publishes a `transition` event of `entry`'s breaker into `epoch`, from
    /// `from` to `to` (default: its state now), with its view as it is now.
    fn publish_transition(
        &self,
        entry: &BreakerEntry,
        epoch: u64,
        from: &'static str,
        to: Option<&'static str>,
        reason: String,
    ) {
        let state = &self.inner.state;
        let (fleet, linked) = FleetView::of(state.fleet());
        let view = BreakerView::of(entry, fleet.as_ref(), &linked);
        let message = Transition {
            time: unix_millis(),
            name: entry.breaker.name(),
            from,
            to: to.unwrap_or(view.state),
            reason,
            epoch,
            breaker: view.clone(),
        };
        self.publish(sse("transition", &to_json(&message), None));
    }
}

/// Stops the hub when dropped.
pub(super) struct StopOnDrop(pub(super) Hub);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A follower of one breaker's events, aborted when dropped.
struct Follower {
    breaker: CircuitBreaker,
    task: JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn follow(hub: Hub, entry: BreakerEntry) -> Follower {
    // The epoch last published: a transition is reported once. Read before
    // subscribing, so a transition in between is not taken as old.
    let mut published = entry.breaker.epoch();
    let mut rx = entry.breaker.subscribe();
    let breaker = entry.breaker.clone();
    let task = tokio::spawn(async move {
        loop {
            // Wait for anything (most events are call outcomes), then take
            // everything pending, so a busy breaker wakes this task at most
            // once per `BATCH` rather than once per call.
            let first = rx.recv().await;
            let mut lagged = false;
            let mut transitions = Vec::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Ok(event) => {
                        if let EventKind::Transition { from, to, reason } = event.kind {
                            transitions.push((event.epoch, from, to, reason.to_string()));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                next = match rx.try_recv() {
                    Ok(event) => Some(Ok(event)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        Some(Err(broadcast::error::RecvError::Lagged(n)))
                    }
                    Err(broadcast::error::TryRecvError::Closed) => {
                        Some(Err(broadcast::error::RecvError::Closed))
                    }
                    Err(broadcast::error::TryRecvError::Empty) => None,
                };
            }
            for (epoch, from, to, reason) in transitions {
                if epoch > published {
                    published = epoch;
                    hub.publish_transition(&entry, epoch, from.as_str(), Some(to.as_str()), reason);
                }
            }
            // Lost events may have hidden a transition: report the state as
            // it is now if the epoch moved.
            let now = entry.breaker.epoch();
            if lagged && now > published {
                published = now;
                hub.publish_transition(&entry, now, "unknown", None, "events missed".to_string());
            }
            tokio::time::sleep(BATCH).await;
        }
    });
    Follower { breaker, task }
}

async fn sample_forever(hub: Hub) {
    let state = Arc::clone(&hub.inner.state);
    let mut last: HashMap<String, Totals> = Totals::read(state.metrics());
    let mut last_at = Instant::now();
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate: skip it, so every sample covers a second.
    interval.tick().await;
    loop {
        interval.tick().await;
        hub.follow_breakers();
        let entries = state.breakers();

        let now = Instant::now();
        let seconds = now.duration_since(last_at).as_secs_f64();
        last_at = now;
        let totals = Totals::read(state.metrics());
        let views = BreakerView::all(&entries, state.fleet());
        let t = unix_millis();
        let mut samples = Vec::with_capacity(views.len());
        for view in &views {
            let sample = totals.get(&view.name).map(|now| {
                let (calls, failures, rejected) = match last.get(&view.name) {
                    Some(then) => now.rates_since(then, seconds),
                    // First sighting: no rate yet.
                    None => (0.0, 0.0, 0.0),
                };
                Sample {
                    t,
                    state: view.state,
                    calls: finite(calls),
                    failures: finite(failures),
                    rejected: finite(rejected),
                    failure_rate: view.window.failure_rate,
                    slow_rate: view.window.slow_rate,
                }
            });
            // A breaker not reported to the metrics registry has no counts;
            // its state and window rates are still worth drawing.
            let sample = sample.unwrap_or(Sample {
                t,
                state: view.state,
                calls: 0.0,
                failures: 0.0,
                rejected: 0.0,
                failure_rate: view.window.failure_rate,
                slow_rate: view.window.slow_rate,
            });
            hub.inner.history.record(&view.name, sample);
            samples.push(sample);
        }
        last = totals;
        let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
        hub.inner.history.retain(&names);

        let snapshot = Snapshot {
            time: t,
            uptime_seconds: state.started().elapsed().as_secs(),
            fleet: FleetView::of(state.fleet()).0,
            breakers: views
                .iter()
                .zip(samples)
                .map(|(view, sample)| SnapshotEntry {
                    view,
                    sample: Some(sample),
                })
                .collect(),
        };
        hub.publish(sse("snapshot", &to_json(&snapshot), None));
    }
}

/// One server-sent event.
fn sse(event: &str, data: &[u8], retry_ms: Option<u32>) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + event.len() + 32);
    if let Some(ms) = retry_ms {
        out.extend_from_slice(format!("retry: {ms}\n").as_bytes());
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // serde_json never writes a raw newline, so the data is one line.
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"encoding failed: {e}\"}}").into_bytes())
}

pub(super) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
