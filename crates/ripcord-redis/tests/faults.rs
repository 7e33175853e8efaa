//! Fault tests on servers this test owns: Redis killed mid-load and
//! restarted empty, Redis paused (SIGSTOP) longer than the fleet timeout —
//! on one server and on the master of a 3-master Cluster that owns the
//! breaker's slot.
//!
//! The bound on a call: calls never wait on Redis. A call that waited on a
//! paused or sleeping server would take at least the store's response
//! timeout (300 ms here, as is the fleet timeout), so the slowest call must
//! stay below it — a semantic bound, not a speed target
//! (a healthy run's slowest call is a few milliseconds). The tests print the
//! measured maximum.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ripcord::store::StateStore;
use ripcord::{EventKind, Outcome, State};

const LIMIT: Duration = Duration::from_secs(90);
/// The stores' response and connect timeout (`Target::store`).
const CALL_BOUND: Duration = Duration::from_millis(300);

/// Calls from every instance, in a loop, until stopped; tracks how many and
/// the slowest.
struct Load {
    stop: Arc<AtomicBool>,
    calls: Vec<Arc<AtomicU64>>,
    max_nanos: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(fleet: &[Instance]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let max_nanos = Arc::new(AtomicU64::new(0));
        let mut calls = Vec::new();
        let mut tasks = Vec::new();
        for inst in fleet {
            let b = inst.breaker.clone();
            let n = Arc::new(AtomicU64::new(0));
            calls.push(n.clone());
            let (stop, max) = (stop.clone(), max_nanos.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..50 {
                        let t = Instant::now();
                        // Successes only: the trip tests add failures themselves.
                        let _ = b.call(|| async { Ok::<_, std::io::Error>(()) }).await;
                        max.fetch_max(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
        Load {
            stop,
            calls,
            max_nanos,
            tasks,
        }
    }

    fn counts(&self) -> Vec<u64> {
        self.calls
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    async fn stop(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        Duration::from_nanos(self.max_nanos.load(Ordering::Relaxed))
    }
}

/// Failures until the breaker trips (the load fills windows with successes).
fn trip(inst: &Instance) {
    for _ in 0..1_000_000 {
        if inst.state() == State::Open {
            return;
        }
        record(&inst.breaker, Outcome::Failure);
    }
    panic!("the breaker did not trip");
}

fn degraded_events(i: &Instance, on: bool) -> usize {
    i.count(|k| matches!(k, EventKind::StoreDegraded { degraded, .. } if *degraded == on))
}

/// Trips the fleet from instance 0 and resets it, so the store has data and
/// the fleet epoch is 2.
async fn trip_and_reset(fleet: &[Instance], name: &str) {
    trip(&fleet[0]);
    assert!(
        eventually(Duration::from_secs(2), || fleet
            .iter()
            .all(|i| i.state() == State::Open))
        .await,
        "trip reaches everyone"
    );
    fleet[1]
        .fleet
        .override_state(name, State::Closed, None, "test")
        .await
        .expect("reset");
    assert!(
        eventually(Duration::from_secs(2), || fleet
            .iter()
            .all(|i| i.state() == State::Closed))
        .await,
        "reset reaches everyone"
    );
}

/// What a fault test does to Redis.
trait Faults {
    fn kill(&mut self);
    fn restart(&mut self);
    fn pause(&self);
    fn resume(&self);
}

impl Faults for RedisServer {
    fn kill(&mut self) {
        RedisServer::kill(self);
    }
    fn restart(&mut self) {
        RedisServer::restart(self);
    }
    fn pause(&self) {
        RedisServer::pause(self);
    }
    fn resume(&self) {
        RedisServer::resume(self);
    }
}

/// The master of a Cluster that owns the breaker's slot.
struct OwnerOf<'a>(&'a mut RedisServer);

impl Faults for OwnerOf<'_> {
    fn kill(&mut self) {
        self.0.kill();
    }
    fn restart(&mut self) {
        // nodes.conf survives in its directory: it rejoins with its slots.
        self.0.restart();
    }
    fn pause(&self) {
        self.0.pause();
    }
    fn resume(&self) {
        self.0.resume();
    }
}

/// Killed mid-load: calls keep flowing, every instance reports
/// `StoreDegraded`, one trips alone on its own failures; restarted empty: the
/// fleet re-converges on the store's state at the epoch it knew, with one
/// transition back (no burst), and trips reach everyone again.
async fn killed_mid_load_then_restarted(target: &Target, faults: &mut dyn Faults) {
    let prefix = unique_prefix("kill");
    let o = FleetOptions::default();
    let fleet = fleet_of(target, &prefix, 5, &o).await;
    trip_and_reset(&fleet, &o.name).await;
    let epoch_before = fleet[0].store.list().await.unwrap()[0].epoch;
    let load = Load::start(&fleet);
    tokio::time::sleep(300 * MS).await;

    let killed = Instant::now();
    faults.kill();
    assert!(
        eventually(Duration::from_secs(2), || fleet
            .iter()
            .all(|i| i.fleet.is_degraded()))
        .await,
        "every instance degraded"
    );
    let detected = killed.elapsed();
    for inst in &fleet {
        assert_eq!(degraded_events(inst, true), 1, "one StoreDegraded event");
    }
    let before = load.counts();
    tokio::time::sleep(500 * MS).await;
    let during = load.counts();
    for (b, d) in before.iter().zip(&during) {
        assert!(
            d - b > 100,
            "calls keep flowing while Redis is down: {b} → {d}"
        );
    }
    // Decides alone: instance 0 trips on its own window, nobody else does.
    trip(&fleet[0]);
    tokio::time::sleep(300 * MS).await;
    assert!(fleet[1..].iter().all(|i| i.state() == State::Closed));
    let transitions_before: Vec<usize> = fleet.iter().map(|i| i.transitions().len()).collect();

    faults.restart();
    let restarted = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || fleet
            .iter()
            .all(|i| !i.fleet.is_degraded()))
        .await,
        "every instance re-joins"
    );
    let rejoined = restarted.elapsed();
    assert!(
        eventually(Duration::from_secs(2), || fleet
            .iter()
            .all(|i| i.state() == State::Closed))
        .await,
        "re-converged on the fleet's state"
    );
    tokio::time::sleep(300 * MS).await;
    let extra: Vec<usize> = fleet
        .iter()
        .zip(&transitions_before)
        .map(|(i, n)| i.transitions().len() - n)
        .collect();
    assert_eq!(
        extra[0], 1,
        "instance 0: one transition back to the fleet's state"
    );
    assert!(
        extra[1..].iter().all(|&n| n == 0),
        "no transitions elsewhere: {extra:?}"
    );
    for inst in &fleet {
        assert_eq!(degraded_events(inst, false), 1, "one recovery event");
    }
    let view = &fleet[0].store.list().await.unwrap()[0];
    assert_eq!(view.state, State::Closed);
    assert_eq!(
        view.epoch, epoch_before,
        "the store resumed at the fleet's epoch"
    );
    // And the fleet works as one again.
    let calls: u64 = load.counts().iter().sum();
    let max = load.stop().await;
    trip_and_reset(&fleet, &o.name).await;
    println!(
        "kill/restart: degraded detected in {detected:?}, re-joined {rejoined:?} after restart, \
         slowest call {max:?} over {calls} calls"
    );
    assert!(max < CALL_BOUND, "slowest call {max:?}");
}

/// Paused (SIGSTOP) longer than the fleet timeout: calls keep flowing,
/// degraded is reported; resumed: the fleet re-joins and works.
async fn paused_longer_than_the_timeout(target: &Target, faults: &dyn Faults) {
    let prefix = unique_prefix("pause");
    let o = FleetOptions::default();
    let fleet = fleet_of(target, &prefix, 5, &o).await;
    let load = Load::start(&fleet);
    tokio::time::sleep(300 * MS).await;
    faults.pause();
    let paused = Instant::now();
    let all_degraded = eventually(Duration::from_secs(2), || {
        fleet.iter().all(|i| i.fleet.is_degraded())
    })
    .await;
    let detected = paused.elapsed();
    let before = load.counts();
    tokio::time::sleep(1200 * MS).await;
    let during = load.counts();
    faults.resume();
    assert!(all_degraded, "every instance degraded while paused");
    for (b, d) in before.iter().zip(&during) {
        assert!(
            d - b > 100,
            "calls keep flowing while Redis is paused: {b} → {d}"
        );
    }
    assert!(
        eventually(Duration::from_secs(3), || fleet
            .iter()
            .all(|i| !i.fleet.is_degraded()))
        .await,
        "every instance re-joins"
    );
    let max = load.stop().await;
    trip_and_reset(&fleet, &o.name).await;
    println!(
        "pause: degraded detected in {detected:?} (timeout {:?}), slowest call {max:?}",
        o.timeout
    );
    assert!(max < CALL_BOUND, "slowest call {max:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_then_restarted() {
    bounded(LIMIT, async {
        let mut server = RedisServer::spawn();
        let target = Target::Single(server.url());
        killed_mid_load_then_restarted(&target, &mut server).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_longer_than_the_timeout() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let target = Target::Single(server.url());
        paused_longer_than_the_timeout(&target, &server).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_busy_in_debug_sleep_longer_than_the_timeout() {
    bounded(LIMIT, async {
        // Redis 7 refuses DEBUG unless enabled (older versions allow it).
        let server = if server_major_version() >= 7 {
            RedisServer::spawn_args(&["--enable-debug-command", "local"])
        } else {
            RedisServer::spawn()
        };
        let target = Target::Single(server.url());
        let prefix = unique_prefix("sleep");
        let o = FleetOptions::default();
        let fleet = fleet_of(&target, &prefix, 3, &o).await;
        let load = Load::start(&fleet);
        let url = server.url();
        let sleeper = tokio::spawn(async move {
            let mut c = connect(&url).await;
            let r: redis::RedisResult<()> = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg("1.2")
                .query_async(&mut c)
                .await;
            r.expect("DEBUG SLEEP");
        });
        assert!(
            eventually(Duration::from_secs(2), || fleet
                .iter()
                .all(|i| i.fleet.is_degraded()))
            .await,
            "degraded while Redis sleeps"
        );
        let _ = sleeper.await;
        assert!(
            eventually(Duration::from_secs(3), || fleet
                .iter()
                .all(|i| !i.fleet.is_degraded()))
            .await,
            "re-joins"
        );
        let max = load.stop().await;
        trip_and_reset(&fleet, &o.name).await;
        println!("DEBUG SLEEP: slowest call {max:?}");
        assert!(max < CALL_BOUND, "slowest call {max:?}");
    })
    .await;
}

/// The index of the master owning the slot of `name`'s keys.
fn owner(name: &str) -> usize {
    let slot = {
        // CRC16/XMODEM of the hash tag, as Redis Cluster.
        let mut crc: u16 = 0;
        for &b in name.as_bytes() {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    };
    match slot {
        0..=5460 => 0,
        5461..=10922 => 1,
        _ => 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_mid_load_then_restarted() {
    bounded(LIMIT, async {
        let mut cluster = RedisCluster::spawn().await;
        let target = Target::Cluster(cluster.urls());
        let i = owner(&FleetOptions::default().name);
        killed_mid_load_then_restarted(&target, &mut OwnerOf(&mut cluster.nodes[i])).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_paused_longer_than_the_timeout() {
    bounded(LIMIT, async {
        let mut cluster = RedisCluster::spawn().await;
        let target = Target::Cluster(cluster.urls());
        let i = owner(&FleetOptions::default().name);
        paused_longer_than_the_timeout(&target, &OwnerOf(&mut cluster.nodes[i])).await;
    })
    .await;
}
