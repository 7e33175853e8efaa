//! The Lua scripts behave like `MemoryStore`, the reference semantics: random
//! sequences of store operations from several instances, applied to both, give
//! the same answers (applied or not, state, epoch, fleet window, live
//! instances, probe grants, override presence).
//!
//! Time is kept out of the comparison: `MemoryStore` runs on a clock that
//! stands still while Redis uses its own, so durations are either zero (an
//! open period that is already over, an override that lapses at the next
//! operation) or an hour (never reached during a case).

mod common;

use std::time::Duration;

use proptest::prelude::*;
use ripcord::store::{
    FleetView, MemoryStore, ProbeReport, StateStore, SyncEntry, TransitionRequest, WindowTotals,
};
use ripcord::{ManualClock, State};

use common::*;

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
enum Epoch {
    Known,
    Stale,
}

#[derive(Debug, Clone)]
enum Op {
    Sync {
        instance: usize,
        window: (u64, u64, u64),
    },
    Transition {
        instance: usize,
        to: State,
        cas: Option<Epoch>,
        open_for_long: bool,
        expires: Option<bool>,
        from_state: Option<State>,
        quorum: u32,
    },
    AcquireProbe {
        instance: usize,
        epoch: Epoch,
        limit: u32,
    },
    ReportProbe {
        instance: usize,
        epoch: Epoch,
        success: bool,
        needed: u32,
        probes: u32,
        open_for_long: bool,
    },
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        3 => Just(State::Open),
        3 => Just(State::HalfOpen),
        2 => Just(State::Closed),
        1 => Just(State::ForcedOpen),
        1 => Just(State::Disabled),
        1 => Just(State::MetricsOnly),
    ]
}

fn epoch() -> impl Strategy<Value = Epoch> {
    prop_oneof![4 => Just(Epoch::Known), 1 => Just(Epoch::Stale)]
}

fn op() -> impl Strategy<Value = Op> {
    let instance = 0usize..3;
    prop_oneof![
        3 => (instance.clone(), (0u64..20, 0u64..20, 0u64..20))
            .prop_map(|(instance, window)| Op::Sync { instance, window }),
        3 => (
            instance.clone(),
            state(),
            prop_oneof![4 => epoch().prop_map(Some), 1 => Just(None)],
            any::<bool>(),
            prop_oneof![3 => Just(None), 1 => any::<bool>().prop_map(Some)],
            prop_oneof![1 => Just(None), 1 => state().prop_map(Some)],
            0u32..4,
        )
            .prop_map(
                |(instance, to, cas, open_for_long, expires, from_state, quorum)| Op::Transition {
                    instance,
                    to,
                    cas,
                    open_for_long,
                    expires,
                    from_state,
                    quorum,
                },
            ),
        2 => (instance.clone(), epoch(), 1u32..4)
            .prop_map(|(instance, epoch, limit)| Op::AcquireProbe { instance, epoch, limit }),
        2 => (instance, epoch(), any::<bool>(), 1u32..3, 2u32..4, any::<bool>()).prop_map(
            |(instance, epoch, success, needed, probes, open_for_long)| Op::ReportProbe {
                instance,
                epoch,
                success,
                needed,
                probes,
                open_for_long,
            }
        ),
    ]
}

/// What is compared: a view without its clock-dependent durations (only
/// whether they are zero, and whether an override is in force).
fn essence(v: &FleetView) -> (State, u64, WindowTotals, u32, bool, Option<bool>) {
    (
        v.state,
        v.epoch,
        v.window,
        v.instances,
        v.open_remaining > Duration::from_secs(60),
        v.override_expires_in.map(|d| d > Duration::from_secs(60)),
    )
}

fn pick(known: u64, e: &Epoch) -> u64 {
    match e {
        Epoch::Known => known,
        Epoch::Stale => known.saturating_sub(1),
    }
}

#[test]
fn lua_scripts_match_memory_store() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let target = Target::Single(redis_url());
    let mut config = ProptestConfig::with_cases(64);
    config.failure_persistence = None;
    proptest!(config, |(ops in prop::collection::vec(op(), 1..40))| {
        rt.block_on(async {
            let redis = target.store(&unique_prefix("diff"), false).await;
            let memory = MemoryStore::with_clock(ManualClock::new());
            let name = "dep";
            // The fleet epoch each instance knows (from the answers it got).
            let mut known = [0u64; 3];
            for (step, op) in ops.iter().enumerate() {
                let ctx = format!("step {step}: {op:?}");
                match op {
                    Op::Sync { instance, window } => {
                        let entry = SyncEntry {
                            name: name.to_string(),
                            fleet_epoch: known[*instance],
                            window: WindowTotals { calls: window.0, failures: window.1, slow: window.2 },
                            stale_after: HOUR,
                            ttl: HOUR,
                        };
                        let id = format!("i{instance}");
                        let m = memory.sync(&id, std::slice::from_ref(&entry)).await.unwrap();
                        let r = redis.sync(&id, std::slice::from_ref(&entry)).await.unwrap();
                        prop_assert_eq!(essence(&m[0]), essence(&r[0]), "{}", ctx);
                        known[*instance] = known[*instance].max(m[0].epoch);
                    }
                    Op::Transition { instance, to, cas, open_for_long, expires, from_state, quorum } => {
                        let req = TransitionRequest {
                            name: name.to_string(),
                            from_epoch: cas.as_ref().map(|e| pick(known[*instance], e)),
                            from_state: *from_state,
                            quorum: *quorum,
                            to: *to,
                            open_for: if *open_for_long { HOUR } else { Duration::ZERO },
                            expires_in: expires.map(|long| if long { HOUR } else { Duration::ZERO }),
                            actor: format!("i{instance}"),
                            reason: "test".to_string(),
                            ttl: HOUR,
                        };
                        let m = memory.transition(&req).await.unwrap();
                        let r = redis.transition(&req).await.unwrap();
                        prop_assert_eq!(m.applied, r.applied, "{}", ctx);
                        prop_assert_eq!(m.quorum_refused, r.quorum_refused, "{}", ctx);
                        prop_assert_eq!(essence(&m.view), essence(&r.view), "{}", ctx);
                        known[*instance] = known[*instance].max(m.view.epoch);
                    }
                    Op::AcquireProbe { instance, epoch, limit } => {
                        let e = pick(known[*instance], epoch);
                        let m = memory.acquire_probe(name, e, *limit, HOUR).await.unwrap();
                        let r = redis.acquire_probe(name, e, *limit, HOUR).await.unwrap();
                        prop_assert_eq!(m, r, "{}", ctx);
                    }
                    Op::ReportProbe { instance, epoch, success, needed, probes, open_for_long } => {
                        let report = ProbeReport {
                            name: name.to_string(),
                            epoch: pick(known[*instance], epoch),
                            success: *success,
                            successes_needed: *needed,
                            probes: *probes,
                            open_for: if *open_for_long { HOUR } else { Duration::ZERO },
                            actor: format!("i{instance}"),
                            ttl: HOUR,
                        };
                        let m = memory.report_probe(&report).await.unwrap();
                        let r = redis.report_probe(&report).await.unwrap();
                        prop_assert_eq!(essence(&m), essence(&r), "{}", ctx);
                        known[*instance] = known[*instance].max(m.epoch);
                    }
                }
            }
            let m = memory.list().await.unwrap();
            let r = redis.list().await.unwrap();
            prop_assert_eq!(m.len(), r.len());
            for (m, r) in m.iter().zip(&r) {
                prop_assert_eq!(essence(m), essence(r));
            }
            prop_assert_eq!(redis.corruptions(), 0);
            Ok(())
        })?;
    });
}
