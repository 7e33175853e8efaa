//! The simulated-fleet scenarios of `crates/ripcord/tests/fleet.rs` on a real
//! Redis (`REDIS_URL`, each test under its own key prefix), in real time.
//! The command count runs on a server of its own so other tests' commands do
//! not pollute `INFO commandstats`.

mod common;

use std::time::Duration;

use common::scenarios;
use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn shared() -> Target {
    Target::Single(redis_url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_spread_across_instances_trip_all_of_them() {
    bounded(
        LIMIT,
        scenarios::failures_spread_across_instances_trip_all(&shared()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trip_reaches_every_instance_within_milliseconds_by_pubsub() {
    bounded(LIMIT, async {
        let l = scenarios::trip_propagation(&shared(), true, 30).await;
        println!("trip propagation, pub/sub: {}", l.summary());
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pubsub_a_trip_reaches_every_instance_within_two_sync_intervals() {
    bounded(LIMIT, async {
        let l = scenarios::trip_propagation(&shared(), false, 20).await;
        println!(
            "trip propagation, no pub/sub (sync 100 ms): {}",
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
async fn the_whole_fleet_sends_exactly_half_open_calls_probes_per_period() {
    bounded(
        LIMIT,
        scenarios::the_whole_fleet_sends_exactly_half_open_calls_probes(&shared(), 6),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_verdicts_close_the_breaker_everywhere() {
    bounded(
        LIMIT,
        scenarios::probe_verdicts_close_the_breaker_everywhere(&shared()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_starts_in_the_fleets_state() {
    bounded(
        LIMIT,
        scenarios::a_new_instance_starts_in_the_fleets_state(&shared()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_apply_fleet_wide_lapse_and_are_audited() {
    bounded(
        LIMIT,
        scenarios::overrides_apply_fleet_wide_lapse_and_are_audited(&shared()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_values_are_reported_and_overwritten() {
    bounded(
        LIMIT,
        scenarios::corrupt_values_are_reported_and_overwritten(&shared()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commands_scale_with_time_not_calls() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let c = scenarios::commands_scale_with_time_not_calls(&Target::Single(server.url())).await;
        println!(
            "command count: {} calls in {:?}; {} syncs; EVALSHA {}, client commands {} (bound {}), \
             all commands incl. inside scripts {}",
            c.calls, c.elapsed, c.syncs, c.evalsha, c.client_commands, c.bound, c.all_commands
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_breakers_share_one_sync() {
    bounded(LIMIT, scenarios::many_breakers_share_one_sync(&shared())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_assisted_opening() {
    bounded(LIMIT, scenarios::quorum_assisted_opening(&shared())).await;
}
