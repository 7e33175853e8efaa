//! The pub/sub listener: one dedicated connection subscribed to the events
//! channel, feeding a broadcast channel; re-made with backoff (trying the
//! next seed node of a Cluster) when it breaks. A notice missed while it was
//! down is repaired by the next sync.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ripcord::store::FleetNotice;
use tokio::sync::broadcast;

use crate::connection::Settings;

/// How often an idle subscription is checked with a `PING`.
const PING_EVERY: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub(crate) struct Stats {
    connected: AtomicBool,
    subscriptions: AtomicU64,
    received: AtomicU64,
    garbage: AtomicU64,
}

impl Stats {
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Successful subscriptions so far (each reconnect adds one).
    pub(crate) fn subscriptions(&self) -> u64 {
        self.subscriptions.load(Ordering::Relaxed)
    }

    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

pub(crate) async fn run(
    clients: Vec<redis::Client>,
    channel: String,
    tx: broadcast::Sender<FleetNotice>,
    settings: Settings,
    stats: Arc<Stats>,
) {
    let mut failures: u32 = 0;
    let mut next = 0usize;
    loop {
        let client = &clients[next % clients.len().max(1)];
        if listen_once(client, &channel, &tx, &settings, &stats).await {
            failures = 0;
        }
        stats.connected.store(false, Ordering::Relaxed);
        failures = failures.saturating_add(1);
        next = next.wrapping_add(1);
        let backoff = Duration::from_millis(25)
            .saturating_mul(1 << failures.min(16))
            .min(settings.max_backoff);
        tokio::time::sleep(backoff).await;
    }
}

/// Subscribes and forwards notices until the connection breaks. Returns
/// whether it got as far as subscribing.
async fn listen_once(
    client: &redis::Client,
    channel: &str,
    tx: &broadcast::Sender<FleetNotice>,
    settings: &Settings,
    stats: &Stats,
) -> bool {
    let d = settings.connect_timeout;
    let Ok(Ok(pubsub)) = tokio::time::timeout(d, client.get_async_pubsub()).await else {
        return false;
    };
    let (mut sink, mut stream) = pubsub.split();
    if !matches!(
        tokio::time::timeout(d, sink.subscribe(channel)).await,
        Ok(Ok(()))
    ) {
        return false;
    }
    stats.connected.store(true, Ordering::Relaxed);
    stats.subscriptions.fetch_add(1, Ordering::Relaxed);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return true };
                match super::reply::notice(msg.get_payload_bytes()) {
                    Some(n) => {
                        stats.received.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send(n);
                    }
                    None => {
                        stats.garbage.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = ping.tick() => {
                let alive = tokio::time::timeout(
                    settings.response_timeout.max(Duration::from_secs(1)),
                    sink.ping::<redis::Value>(),
                )
                .await;
                if !matches!(alive, Ok(Ok(_))) {
                    return true;
                }
            }
        }
    }
}
