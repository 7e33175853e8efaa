//! Scenarios run against one server and against a 3-master Cluster: the
//! simulated-fleet tests of `crates/ripcord/tests/fleet.rs`, on real Redis
//! and real time.

use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use ripcord::store::StateStore;
use ripcord::{EventKind, Outcome, State};

use super::*;

impl Target {
    /// Runs one raw command (routed by key in a Cluster).
    pub(crate) async fn raw(&self, cmd: &redis::Cmd) -> redis::Value {
        match self {
            Target::Single(url) => {
                let mut c = connect(url).await;
                c.req_packed_command(cmd).await.expect("raw command")
            }
            Target::Cluster(urls) => {
                let client = redis::cluster::ClusterClient::new(urls.clone()).expect("cluster");
                let mut last = None;
                for _ in 0..20 {
                    match client.get_async_connection().await {
                        Ok(mut c) => match c.req_packed_command(cmd).await {
                            Ok(v) => return v,
                            Err(e) => last = Some(e),
                        },
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(50 * MS).await;
                }
                panic!("raw cluster command failed: {last:?}");
            }
        }
    }
}

pub(crate) struct Latencies {
    /// Per trial: from the trip to the last instance rejecting.
    pub(crate) all: Vec<Duration>,
    /// Per trial and instance: from the trip to that instance rejecting.
    pub(crate) each: Vec<Duration>,
    /// Per trial and instance: the syncs that instance completed from the
    /// trip until it opened (the sync that brought the trip included; 0 when
    /// pub/sub brought it first).
    pub(crate) each_syncs: Vec<u64>,
}

impl Latencies {
    pub(crate) fn summary(&self) -> String {
        format!(
            "every instance rejecting: p50 {:?}, p99 {:?}, max {:?} over {} trips; \
             per instance: p50 {:?}, p99 {:?}, syncs until open {:?}",
            percentile(&self.all, 50.0),
            percentile(&self.all, 99.0),
            self.all.last().copied().unwrap_or_default(),
            self.all.len(),
            percentile(&self.each, 50.0),
            percentile(&self.each, 99.0),
            self.each_syncs,
        )
    }
}

/// Each of 5 instances sees 1 success and 1 failure: no instance could trip
/// alone, but the fleet-wide window does, and the trip reaches everyone.
pub(crate) async fn failures_spread_across_instances_trip_all(target: &Target) {
    let prefix = unique_prefix("spread");
    let fleet = fleet_of(target, &prefix, 5, &FleetOptions::default()).await;
    for inst in &fleet {
        assert!(record(&inst.breaker, Outcome::Success));
        assert!(record(&inst.breaker, Outcome::Failure));
    }
    assert!(fleet.iter().all(|i| i.state() == State::Closed));
    // Windows reach the store at each instance's next sync; the others'
    // shares come back with the one after.
    tokio::time::sleep(350 * MS).await;
    assert!(fleet.iter().all(|i| i.state() == State::Closed));
    record(&fleet[0].breaker, Outcome::Failure); // 11 calls fleet-wide, 6 failed
    assert_eq!(fleet[0].state(), State::Open, "judged on the fleet window");
    assert!(
        eventually(Duration::from_secs(1), || fleet
            .iter()
            .all(|i| i.state() == State::Open))
        .await,
        "every instance open"
    );
    for inst in &fleet {
        assert!(!record(&inst.breaker, Outcome::Success), "rejects");
    }
    let views = fleet[0].store.list().await.unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!((views[0].state, views[0].epoch), (State::Open, 1));
}

/// Trips instance 0 `trials` times and measures how long until every other
/// instance rejects; resets the fleet by a manual override between trials.
pub(crate) async fn trip_propagation(target: &Target, pubsub: bool, trials: usize) -> Latencies {
    let prefix = unique_prefix("latency");
    let o = FleetOptions {
        pubsub,
        ..FleetOptions::default()
    };
    let fleet = fleet_of(target, &prefix, 5, &o).await;
    if pubsub {
        assert!(
            eventually(Duration::from_secs(5), || fleet
                .iter()
                .all(|i| i.store.is_listening()))
            .await,
            "listeners up"
        );
    }
    let mut all = Vec::new();
    let mut each = Vec::new();
    let mut each_syncs = Vec::new();
    for trial in 0..trials {
        // Start at a random point of the sync cycle.
        tokio::time::sleep(Duration::from_millis(17 * (trial as u64 % 6))).await;
        let before: Vec<usize> = fleet.iter().map(|i| i.transitions().len()).collect();
        let syncs_before: Vec<u64> = fleet.iter().map(|i| i.fleet.syncs()).collect();
        let t0 = Instant::now();
        for _ in 0..10 {
            record(&fleet[0].breaker, Outcome::Failure);
        }
        assert_eq!(fleet[0].state(), State::Open, "trial {trial}: local trip");
        // The state word is published before the transition's event reaches
        // the listener: wait for both.
        let all_open = eventually(Duration::from_secs(2), || {
            fleet.iter().zip(&before).all(|(i, n)| {
                i.state() == State::Open
                    && i.transitions_and_syncs()[*n..]
                        .iter()
                        .any(|(_, _, _, to)| *to == State::Open)
            })
        })
        .await;
        assert!(all_open, "trial {trial}: every instance open");
        let mut worst = Duration::ZERO;
        for ((inst, n), s0) in fleet.iter().zip(&before).zip(&syncs_before).skip(1) {
            let (opened, syncs) = inst.transitions_and_syncs()[*n..]
                .iter()
                .find(|(_, _, _, to)| *to == State::Open)
                .map(|(at, s, _, _)| (at.saturating_duration_since(t0), s - s0))
                .expect("an open transition");
            each.push(opened);
            worst = worst.max(opened);
            each_syncs.push(syncs);
        }
        all.push(worst);
        fleet[1]
            .fleet
            .override_state(&o.name, State::Closed, None, "test")
            .await
            .expect("reset");
        assert!(
            eventually(Duration::from_secs(2), || fleet
                .iter()
                .all(|i| i.state() == State::Closed))
            .await,
            "trial {trial}: reset"
        );
    }
    all.sort();
    each.sort();
    each_syncs.sort();
    Latencies {
        all,
        each,
        each_syncs,
    }
}

/// 5 instances, `half_open_calls = 2`: exactly 2 probes per half-open period.
pub(crate) async fn the_whole_fleet_sends_exactly_half_open_calls_probes(
    target: &Target,
    periods: usize,
) {
    let prefix = unique_prefix("probes");
    let o = FleetOptions {
        open_for: 300 * MS,
        ..FleetOptions::default()
    };
    let fleet = fleet_of(target, &prefix, 5, &o).await;
    for period in 0..periods {
        for _ in 0..20 {
            record(&fleet[0].breaker, Outcome::Failure);
        }
        assert!(
            eventually(Duration::from_secs(1), || fleet
                .iter()
                .all(|i| i.state() == State::Open))
            .await,
            "period {period}: all open"
        );
        tokio::time::sleep(o.open_for + 20 * MS).await;
        // Every instance hammers the dependency while half-open; count probes.
        let mut probes = 0;
        let until = Instant::now() + 500 * MS;
        while Instant::now() < until {
            for inst in &fleet {
                if let Ok(p) = inst.breaker.try_acquire() {
                    probes += 1;
                    // Keep the probe in flight: its verdict would end the period.
                    std::mem::forget(p);
                }
            }
            tokio::time::sleep(2 * MS).await;
        }
        assert_eq!(probes, 2, "period {period}: fleet-wide probe budget");
        fleet[1]
            .fleet
            .override_state(&o.name, State::Closed, None, "test")
            .await
            .expect("reset");
        assert!(
            eventually(Duration::from_secs(2), || fleet
                .iter()
                .all(|i| i.state() == State::Closed))
            .await,
            "period {period}: reset"
        );
    }
}

pub(crate) async fn probe_verdicts_close_the_breaker_everywhere(target: &Target) {
    let prefix = unique_prefix("verdict");
    let o = FleetOptions {
        open_for: 300 * MS,
        ..FleetOptions::default()
    };
    let fleet = fleet_of(target, &prefix, 3, &o).await;
    for _ in 0..20 {
        record(&fleet[0].breaker, Outcome::Failure);
    }
    assert!(
        eventually(Duration::from_secs(1), || fleet
            .iter()
            .all(|i| i.state() == State::Open))
        .await
    );
    tokio::time::sleep(o.open_for + 20 * MS).await;
    let mut successes = 0;
    let closed = eventually(Duration::from_secs(3), || {
        for inst in &fleet {
            if record(&inst.breaker, Outcome::Success) {
                successes += 1;
            }
        }
        fleet.iter().all(|i| i.state() == State::Closed)
    })
    .await;
    assert!(closed, "closed everywhere");
    assert!(successes >= 2);
    let v = &fleet[0].store.list().await.unwrap()[0];
    assert_eq!(
        (v.state, v.epoch),
        (State::Closed, 3),
        "open, half-open, closed once each"
    );
}

pub(crate) async fn a_new_instance_starts_in_the_fleets_state(target: &Target) {
    let prefix = unique_prefix("hydrate");
    let o = FleetOptions::default();
    let first = fleet_of(target, &prefix, 1, &o).await;
    first[0].breaker.force_open();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let views = first[0].store.list().await.unwrap();
        if views.first().map(|v| v.state) == Some(State::ForcedOpen) {
            break;
        }
        assert!(Instant::now() < deadline, "override reached the store");
        tokio::time::sleep(5 * MS).await;
    }
    let late = instance(target, &prefix, "late", &o).await;
    late.fleet.sync_now().await;
    assert_eq!(late.state(), State::ForcedOpen);
}

pub(crate) async fn overrides_apply_fleet_wide_lapse_and_are_audited(target: &Target) {
    let prefix = unique_prefix("override");
    let o = FleetOptions::default();
    let fleet = fleet_of(target, &prefix, 3, &o).await;
    let view = fleet[0]
        .fleet
        .override_state(
            &o.name,
            State::ForcedOpen,
            Some(Duration::from_secs(1)),
            "alice",
        )
        .await
        .unwrap();
    let left = view.override_expires_in.expect("an expiry");
    assert!(
        left <= Duration::from_secs(1) && left > 900 * MS,
        "{left:?}"
    );
    assert!(
        eventually(Duration::from_secs(1), || fleet
            .iter()
            .all(|i| i.state() == State::ForcedOpen))
        .await
    );
    // Every instance reports the audit event exactly once, whether its own
    // sync or the pub/sub notice brought the new epoch first.
    let audits = |inst: &Instance| -> Vec<(State, String)> {
        inst.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, _, e)| match &e.kind {
                EventKind::FleetOverride { to, actor, .. } => Some((*to, actor.clone())),
                _ => None,
            })
            .collect()
    };
    let expected = vec![(State::ForcedOpen, "alice".to_string())];
    assert!(
        eventually(Duration::from_secs(1), || fleet
            .iter()
            .all(|i| audits(i) == expected))
        .await,
        "{:?}",
        fleet.iter().map(audits).collect::<Vec<_>>()
    );
    assert!(
        eventually(Duration::from_secs(3), || fleet
            .iter()
            .all(|i| i.state() == State::Closed))
        .await,
        "override lapsed"
    );
    // The lapse is a notice too (from actor `store`); the instance whose sync
    // lapsed it learns from that sync's reply first, so not every instance
    // reports it, but the others do.
    let audited = fleet
        .iter()
        .filter(|i| {
            i.count(|k| matches!(k, EventKind::FleetOverride { actor, to: State::Closed, .. } if actor == "store"))
                == 1
        })
        .count();
    assert!(audited >= 1, "the lapse is audited");
}

/// Figures of the command-count run.
pub(crate) struct CommandCount {
    pub(crate) calls: u64,
    pub(crate) elapsed: Duration,
    pub(crate) syncs: u64,
    pub(crate) evalsha: u64,
    pub(crate) client_commands: u64,
    pub(crate) all_commands: u64,
    pub(crate) bound: u64,
}

/// Commands a script runs inside Redis: counted by `INFO commandstats` too,
/// but never sent by a client.
const IN_SCRIPT: [&str; 10] = [
    "time", "type", "hgetall", "hset", "hdel", "pexpire", "publish", "del", "exists", "hmget",
];

/// ≥ 100 000 calls from 5 instances; the commands Redis served are bounded
/// by instances × (duration / sync_interval) + transitions, not by calls.
pub(crate) async fn commands_scale_with_time_not_calls(target: &Target) -> CommandCount {
    let prefix = unique_prefix("commands");
    let o = FleetOptions::default();
    let fleet = fleet_of(target, &prefix, 5, &o).await;
    tokio::time::sleep(50 * MS).await;
    let syncs_before: u64 = fleet.iter().map(|i| i.fleet.syncs()).sum();
    let before = target.command_stats().await;
    let started = Instant::now();
    let mut calls = 0u64;
    for _ in 0..20 {
        for inst in &fleet {
            for _ in 0..1_000 {
                if record(&inst.breaker, Outcome::Success) {
                    calls += 1;
                }
            }
        }
        tokio::time::sleep(o.sync_interval).await;
    }
    let elapsed = started.elapsed();
    let after = target.command_stats().await;
    let syncs = fleet.iter().map(|i| i.fleet.syncs()).sum::<u64>() - syncs_before;
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let all_commands: u64 = after.keys().map(|k| delta(k)).sum::<u64>();
    let in_script: u64 = IN_SCRIPT.iter().map(|k| delta(k)).sum();
    // The two INFO calls of this measurement are not the fleet's.
    let measurement = match target {
        Target::Single(_) => 1,
        Target::Cluster(urls) => urls.len() as u64,
    };
    let client_commands = all_commands - in_script - measurement;
    let intervals = elapsed.as_millis() as u64 / o.sync_interval.as_millis() as u64;
    let transitions = 0;
    // Each instance's interval timer can fire once more than the quotient,
    // plus a listener PING every 3 s.
    let bound = 5 * (intervals + 1) + transitions + 5 * (elapsed.as_secs() / 3 + 1);
    assert!(calls >= 100_000, "{calls} calls");
    assert!(
        client_commands <= bound,
        "{client_commands} client commands (EVALSHA {}) for {calls} calls in {elapsed:?}, bound {bound}",
        delta("evalsha")
    );
    assert!(syncs >= 5 * 10, "syncs must actually run: {syncs}");
    CommandCount {
        calls,
        elapsed,
        syncs,
        evalsha: delta("evalsha"),
        client_commands,
        all_commands,
        bound,
    }
}

/// Foreign or corrupt values in the breaker's keys are reported and
/// overwritten; the fleet keeps working.
pub(crate) async fn corrupt_values_are_reported_and_overwritten(target: &Target) {
    let prefix = unique_prefix("corrupt");
    let o = FleetOptions::default();
    let fleet = fleet_of(target, &prefix, 3, &o).await;
    let state_key = fleet[0].store.state_key(&o.name);
    let reports_key = fleet[0].store.reports_key(&o.name);
    let mut corruptions = fleet[0].store.subscribe_corruptions();
    let total = |fleet: &[Instance]| fleet.iter().map(|i| i.store.corruptions()).sum::<u64>();

    let cases: Vec<(&str, Vec<redis::Cmd>)> = vec![
        (
            "a string where a hash was expected",
            vec![
                redis::cmd("DEL").arg(&state_key).clone(),
                redis::cmd("SET").arg(&state_key).arg("garbage").clone(),
            ],
        ),
        (
            "a garbage field",
            vec![redis::cmd("HSET")
                .arg(&state_key)
                .arg("epoch")
                .arg("12abc")
                .clone()],
        ),
        (
            "an unknown state",
            vec![redis::cmd("HSET")
                .arg(&state_key)
                .arg("state")
                .arg("sideways")
                .clone()],
        ),
        (
            "another schema version",
            vec![redis::cmd("HSET").arg(&state_key).arg("v").arg("2").clone()],
        ),
        (
            "a bad report",
            vec![redis::cmd("HSET")
                .arg(&reports_key)
                .arg("intruder")
                .arg("1 2 x")
                .clone()],
        ),
        (
            "a report of the right size whose numbers are not counts",
            vec![redis::cmd("EVAL")
                .arg(
                    "return redis.call('HSET', KEYS[1], 'intruder', \
                     struct.pack('>dddddd', 1, -2, 0.5, 0, 0/0, 1))",
                )
                .arg(1)
                .arg(&reports_key)
                .clone()],
        ),
        (
            "a list where the reports hash was expected",
            // Atomically: a sync may re-create the hash between two commands.
            vec![redis::cmd("EVAL")
                .arg("redis.call('DEL', KEYS[1]); return redis.call('RPUSH', KEYS[1], 'x')")
                .arg(1)
                .arg(&reports_key)
                .clone()],
        ),
    ];
    for (what, cmds) in cases {
        let before = total(&fleet);
        for c in &cmds {
            target.raw(c).await;
        }
        // `list` is read only: it reports what is corrupt and skips it.
        fleet[0]
            .store
            .list()
            .await
            .expect("list never fails on corruption");
        assert!(
            eventually(Duration::from_secs(2), || total(&fleet) > before).await,
            "{what}: reported"
        );
        // The fleet recovers: a fresh state, nobody degraded, and a trip
        // still reaches everyone.
        tokio::time::sleep(2 * o.sync_interval).await;
        assert!(
            fleet.iter().all(|i| !i.fleet.is_degraded()),
            "{what}: not degraded"
        );
        for _ in 0..20 {
            record(&fleet[0].breaker, Outcome::Failure);
        }
        assert!(
            eventually(Duration::from_secs(2), || fleet
                .iter()
                .all(|i| i.state() == State::Open))
            .await,
            "{what}: a trip still reaches everyone"
        );
        fleet[1]
            .fleet
            .override_state(&o.name, State::Closed, None, "test")
            .await
            .expect("reset");
        assert!(
            eventually(Duration::from_secs(2), || fleet
                .iter()
                .all(|i| i.state() == State::Closed))
            .await,
            "{what}: reset"
        );
    }
    // Reported as StoreError::Corrupt naming the key.
    let first = corruptions.try_recv().ok();
    assert!(
        matches!(&first, Some(ripcord::store::StoreError::Corrupt { key, .. }) if key == &state_key)
            || total(&fleet) > 0,
        "{first:?}"
    );
    // A reset state is announced to the fleet as an audit event (the
    // instance whose call reset it learns from that call's reply instead).
    let audited = fleet
        .iter()
        .filter(|i| {
            i.count(|k| {
                matches!(k, EventKind::FleetOverride { actor, reason, .. }
                if actor == "store" && reason.contains("corrupt"))
            }) >= 1
        })
        .count();
    assert!(audited >= 1, "audit of the reset");
}

/// Many breakers per instance: one sync carries all of them (in a Cluster,
/// one pipeline per slot), and each reply reaches the right breaker.
pub(crate) async fn many_breakers_share_one_sync(target: &Target) {
    let prefix = unique_prefix("many");
    let names: Vec<String> = (0..12).map(|i| format!("dep-{i}")).collect();
    let mut instances = Vec::new();
    for id in ["a", "b"] {
        let store = target.store(&prefix, true).await;
        let fleet = ripcord::store::Fleet::builder(store.clone())
            .instance(id)
            .sync_interval(50 * MS)
            .build()
            .expect("fleet");
        let breakers: Vec<ripcord::CircuitBreaker> = names
            .iter()
            .map(|n| {
                ripcord::CircuitBreaker::builder(n)
                    .consecutive_failures(3)
                    .open_for(ripcord::Backoff::fixed(Duration::from_secs(30)))
                    .fleet(&fleet)
                    .build()
                    .expect("breaker")
            })
            .collect();
        fleet.sync_now().await;
        instances.push((store, fleet, breakers));
    }
    let syncs_before = instances[1].1.syncs();
    // Trip every third breaker on instance a.
    for (i, b) in instances[0].2.iter().enumerate() {
        if i % 3 == 0 {
            for _ in 0..3 {
                record(b, Outcome::Failure);
            }
        }
    }
    tokio::time::sleep(200 * MS).await;
    instances[1].1.sync_now().await;
    for (i, b) in instances[1].2.iter().enumerate() {
        let want = if i % 3 == 0 {
            State::Open
        } else {
            State::Closed
        };
        assert_eq!(b.state(), want, "breaker {i} on instance b");
    }
    assert!(instances[1].1.syncs() > syncs_before);
    let views = instances[0].0.list().await.expect("list");
    assert_eq!(views.len(), names.len(), "list finds every breaker");
    for v in &views {
        let i: usize = v.name.trim_start_matches("dep-").parse().unwrap();
        assert_eq!(v.state == State::Open, i.is_multiple_of(3), "{}", v.name);
        assert_eq!(
            v.instances, 2,
            "both instances report in the current epoch: {v:?}"
        );
    }
}

/// Quorum-assisted opening (quorum 3 of 5): one instance that alone sees
/// failures opens only itself, probes on its own and rejoins; when three see
/// them, a trip opens the whole fleet.
pub(crate) async fn quorum_assisted_opening(target: &Target) {
    let prefix = unique_prefix("quorum");
    let o = FleetOptions {
        quorum: 3,
        open_for: 500 * MS,
        ..FleetOptions::default()
    };
    let fleet = fleet_of(target, &prefix, 5, &o).await;
    for _ in 0..20 {
        record(&fleet[0].breaker, Outcome::Failure);
    }
    assert_eq!(fleet[0].state(), State::Open);
    tokio::time::sleep(350 * MS).await;
    assert_eq!(fleet[0].state(), State::Open, "open locally");
    for inst in &fleet[1..] {
        assert_eq!(inst.state(), State::Closed, "the fleet is not cut off");
    }
    let v = fleet[0].store.list().await.unwrap();
    assert_eq!(
        (v[0].state, v[0].epoch),
        (State::Closed, 0),
        "the store never opened"
    );
    // The path heals: local probes close it; the fleet never saw any of it.
    tokio::time::sleep(300 * MS).await;
    assert!(record(&fleet[0].breaker, Outcome::Success));
    assert!(record(&fleet[0].breaker, Outcome::Success));
    assert_eq!(fleet[0].state(), State::Closed);
    tokio::time::sleep(250 * MS).await;
    let v = fleet[0].store.list().await.unwrap();
    assert_eq!((v[0].state, v[0].epoch), (State::Closed, 0));

    // Three instances see failures: the next trip opens everyone.
    for inst in &fleet[1..3] {
        for _ in 0..3 {
            record(&inst.breaker, Outcome::Failure);
        }
    }
    tokio::time::sleep(350 * MS).await;
    for _ in 0..20 {
        record(&fleet[0].breaker, Outcome::Failure);
    }
    assert!(
        eventually(Duration::from_secs(1), || fleet
            .iter()
            .all(|i| i.state() == State::Open))
        .await,
        "every instance open"
    );
    let v = fleet[0].store.list().await.unwrap();
    assert_eq!((v[0].state, v[0].epoch), (State::Open, 1));
}
