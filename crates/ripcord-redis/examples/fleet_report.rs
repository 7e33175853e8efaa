//! A fleet simulation report: 5 instances (each its own `RedisStore`
//! connection, `Fleet` task and breaker) under load for ~10 s; prints calls per
//! second across the fleet, Redis commands per second, and trip-propagation
//! latency percentiles with and without pub/sub.
//!
//! ```text
//! cargo run --release -p ripcord-redis --example fleet_report
//! ```
//!
//! It spawns its own `redis-server` (`REDIS_SERVER_BIN` or `redis-server` on
//! the PATH) so `INFO commandstats` counts only this fleet; without one it uses
//! `REDIS_URL` (default `redis://127.0.0.1:6379`), where other clients'
//! commands are counted too.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::scenarios::trip_propagation;
use common::{fleet_of, percentile, unique_prefix, FleetOptions, RedisServer, Target};

fn have_server_bin() -> bool {
    let bin = std::env::var("REDIS_SERVER_BIN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis-server".into());
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = have_server_bin().then(RedisServer::spawn);
    let target = match &server {
        Some(s) => Target::Single(s.url()),
        None => Target::Single(common::redis_url()),
    };
    let where_ = match &server {
        Some(s) => format!("own redis-server at {}", s.url()),
        None => format!(
            "{} (shared: other clients' commands count too)",
            common::redis_url()
        ),
    };
    println!("ripcord-redis fleet report — 5 instances, sync_interval 100 ms, {where_}");

    // 1. Steady load: calls/s and Redis commands/s.
    let o = FleetOptions::default();
    let fleet = fleet_of(&target, &unique_prefix("report"), 5, &o).await;
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = fleet
        .iter()
        .map(|inst| {
            let (b, stop, calls) = (inst.breaker.clone(), stop.clone(), calls.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..500 {
                        let _ = b.call(|| async { Ok::<_, std::io::Error>(()) }).await;
                    }
                    calls.fetch_add(500, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    let before = target.command_stats().await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    let after = target.command_stats().await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let n = calls.load(Ordering::Relaxed);
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let all: u64 = after.keys().map(|k| delta(k)).sum();
    let in_script: u64 = [
        "time", "type", "hgetall", "hset", "hdel", "pexpire", "publish", "del", "exists",
    ]
    .iter()
    .map(|k| delta(k))
    .sum();
    let secs = elapsed.as_secs_f64();
    println!(
        "load: {n} calls in {elapsed:.2?} = {:.0} calls/s across 5 instances",
        n as f64 / secs
    );
    println!(
        "redis: {:.1} client commands/s (EVALSHA {:.1}/s); {:.1} commands/s counting those \
         the scripts run inside Redis; bound 5 × 10 syncs/s = 50/s",
        (all - in_script - 1) as f64 / secs,
        delta("evalsha") as f64 / secs,
        all as f64 / secs
    );
    drop(fleet);

    // 2. Trip propagation: from a trip on one instance to all 5 rejecting.
    for (pubsub, trials) in [(true, 50), (false, 20)] {
        let l = trip_propagation(&target, pubsub, trials).await;
        println!(
            "trip → every instance rejecting, {}: p50 {:.2?}, p90 {:.2?}, p99 {:.2?}, max {:.2?} ({trials} trips)",
            if pubsub { "pub/sub" } else { "no pub/sub, sync 100 ms" },
            percentile(&l.all, 50.0),
            percentile(&l.all, 90.0),
            percentile(&l.all, 99.0),
            l.all.last().copied().unwrap_or_default(),
        );
    }
}
