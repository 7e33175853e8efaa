//! The fleet scenarios against a 3-master Redis Cluster spawned per test
//! (slots split evenly, no replicas), through redis-rs' Cluster client.

mod common;

use std::time::Duration;

use common::scenarios;
use common::*;

const LIMIT: Duration = Duration::from_secs(90);

async fn cluster() -> (RedisCluster, Target) {
    let c = RedisCluster::spawn().await;
    let t = Target::Cluster(c.urls());
    (c, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failures_spread_across_instances_trip_all_of_them() {
    bounded(LIMIT, async {
        let (_c, t) = cluster().await;
        scenarios::failures_spread_across_instances_trip_all(&t).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_trip_propagation_with_and_without_pubsub() {
    bounded(LIMIT, async {
        let (_c, t) = cluster().await;
        let l = scenarios::trip_propagation(&t, true, 30).await;
        println!("cluster trip propagation, pub/sub: {}", l.summary());
        // Semantic, not a speed target: pub/sub, not a sync, told most
        // instances (a sync can only come first when it lands within the
        // message's latency).
        let by_pubsub = l.each_syncs.iter().filter(|&&s| s == 0).count();
        assert!(
            2 * by_pubsub >= l.each_syncs.len(),
            "{by_pubsub} of {} openings before any sync: {}",
            l.each_syncs.len(),
            l.summary()
        );
        let l = scenarios::trip_propagation(&t, false, 15).await;
        println!(
            "cluster trip propagation, no pub/sub (sync 100 ms): {}",
            l.summary()
        );
        // Counted in syncs, not milliseconds: a loaded machine delays the
        // syncs, not the rule.
        let most = *l.each_syncs.last().unwrap();
        assert!(
            most <= 2,
            "an instance needed {most} of its syncs (bound 2): {}",
            l.summary()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_the_whole_fleet_sends_exactly_half_open_calls_probes_per_period() {
    bounded(LIMIT, async {
        let (_c, t) = cluster().await;
        scenarios::the_whole_fleet_sends_exactly_half_open_calls_probes(&t, 5).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_verdicts_hydration_and_overrides() {
    bounded(LIMIT, async {
        let (_c, t) = cluster().await;
        scenarios::probe_verdicts_close_the_breaker_everywhere(&t).await;
        scenarios::a_new_instance_starts_in_the_fleets_state(&t).await;
        scenarios::overrides_apply_fleet_wide_lapse_and_are_audited(&t).await;
        scenarios::quorum_assisted_opening(&t).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_corrupt_values_are_reported_and_overwritten() {
    bounded(LIMIT, async {
        let (_c, t) = cluster().await;
        scenarios::corrupt_values_are_reported_and_overwritten(&t).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_redis_commands_scale_with_time_not_calls() {
    bounded(LIMIT, async {
        let (_c, t) = cluster().await;
        let c = scenarios::commands_scale_with_time_not_calls(&t).await;
        println!(
            "cluster command count: {} calls in {:?}; {} syncs; EVALSHA {}, client commands {} \
             (bound {}), all commands incl. inside scripts {}",
            c.calls, c.elapsed, c.syncs, c.evalsha, c.client_commands, c.bound, c.all_commands
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_many_breakers_on_many_slots_share_one_sync() {
    bounded(LIMIT, async {
        let (_c, t) = cluster().await;
        scenarios::many_breakers_share_one_sync(&t).await;
    })
    .await;
}
