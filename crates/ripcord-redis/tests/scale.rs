//! A fleet with many breakers, on a `redis-server` of its own: a trip among
//! 2,000 breakers reaches the other instance at once, and idle breakers cost
//! Redis nothing (counted with `INFO commandstats`).

mod common;

use std::time::{Duration, Instant};

use ripcord::store::Fleet;
use ripcord::{CircuitBreaker, Outcome, State};

use common::*;

const LIMIT: Duration = Duration::from_secs(90);
const BREAKERS: usize = 2_000;

struct Instance {
    fleet: Fleet,
    breakers: Vec<CircuitBreaker>,
}

async fn instances(target: &Target, prefix: &str, n: usize) -> Vec<Instance> {
    let mut out = Vec::new();
    for i in 0..n {
        let store = target.store(prefix, true).await;
        let fleet = Fleet::builder(store)
            .instance(&format!("i{i}"))
            .sync_interval(100 * MS)
            // No reconciliation pass during the measurement.
            .reconcile_interval(Duration::from_secs(60))
            .build()
            .expect("fleet");
        let breakers = (0..BREAKERS)
            .map(|k| {
                CircuitBreaker::builder(&format!("endpoint-{k}"))
                    .consecutive_failures(5)
                    .fleet(&fleet)
                    .build()
                    .expect("breaker")
            })
            .collect();
        fleet.sync_now().await;
        out.push(Instance { fleet, breakers });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_among_2000_breakers_reaches_the_other_instance_within_200_ms() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let target = Target::Single(server.url());
        let fleet = instances(&target, &unique_prefix("scale-trip"), 2).await;
        tokio::time::sleep(300 * MS).await;
        for k in [7, 1_234, 1_999] {
            let started = Instant::now();
            for _ in 0..5 {
                record(&fleet[0].breakers[k], Outcome::Failure);
            }
            assert_eq!(fleet[0].breakers[k].state(), State::Open);
            assert!(
                eventually(200 * MS, || fleet[1].breakers[k].try_acquire().is_err()).await,
                "breaker {k}: not rejected by the other instance within 200 ms"
            );
            println!(
                "breaker {k}: rejected elsewhere after {:?}",
                started.elapsed()
            );
            // Its neighbours are untouched.
            assert_eq!(fleet[1].breakers[k - 1].state(), State::Closed);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_breakers_cost_redis_no_commands_of_their_own() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let target = Target::Single(server.url());
        let fleet = instances(&target, &unique_prefix("scale-idle"), 2).await;
        // Every breaker saw a call once: their reports are in Redis.
        for inst in &fleet {
            for b in &inst.breakers {
                record(b, Outcome::Success);
            }
        }
        // Reported once (and once more, for the others' reports made just
        // after); from then on nothing is new.
        assert!(
            eventually(Duration::from_secs(10), || fleet
                .iter()
                .all(|i| i.fleet.last_sync_reported() > 0))
            .await,
            "the new outcomes are reported"
        );
        assert!(
            eventually(Duration::from_secs(10), || fleet
                .iter()
                .all(|i| i.fleet.last_sync_reported() == 0))
            .await,
            "the reports are done"
        );
        tokio::time::sleep(200 * MS).await;
        let syncs_before: u64 = fleet.iter().map(|i| i.fleet.syncs()).sum();
        let before = target.command_stats().await;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = target.command_stats().await;
        let elapsed = started.elapsed();
        let syncs = fleet.iter().map(|i| i.fleet.syncs()).sum::<u64>() - syncs_before;
        let delta =
            |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        let all: u64 = after.keys().map(|k| delta(k)).sum();
        println!(
            "{} instances × {BREAKERS} idle breakers, {elapsed:?}: {syncs} syncs, {all} commands \
             (EVALSHA {}, HSET {}, HGETALL {}, HMGET {})",
            fleet.len(),
            delta("evalsha"),
            delta("hset"),
            delta("hgetall"),
            delta("hmget"),
        );
        assert!(syncs >= 10, "the syncs (heartbeats) must run: {syncs}");
        // A heartbeat is one script of a few commands; nothing scales with
        // the 4,000 breakers (which cost 9 commands each per sync before).
        assert!(
            all <= syncs * 8 + 10,
            "{all} commands for {syncs} heartbeats of idle instances"
        );
        assert_eq!(delta("hmget"), 0, "no reconciliation pass ran");
        for inst in &fleet {
            assert!(!inst.fleet.is_degraded());
            assert_eq!(inst.fleet.last_sync_reported(), 0);
        }
        // The idle reports still count fleet-wide (the instances are alive).
        let views = fleet[0].fleet.store().list().await.expect("list");
        assert_eq!(views.len(), BREAKERS);
        assert!(views
            .iter()
            .all(|v| v.window.calls == 2 && v.instances == 2));
    })
    .await;
}
