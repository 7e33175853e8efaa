//! The Lua scripts behave like `MemoryStore`, the reference semantics: random
//! sequences of store operations from several instances on several breakers,
//! applied to both, give the same answers (applied or not, state, epoch, fleet
//! window, live instances, probe grants, override presence, which breakers a
//! reconciliation reports). Syncs and reconciliation passes carry several
//! breakers at once, as the batched scripts run them.
//!
//! Time is kept out of the comparison: `MemoryStore` runs on a clock that
//! stands still while Redis uses its own, so durations are either zero (an
//! open period that is already over, an override that lapses at the next
//! operation) or an hour (never reached during a case).

mod common;

use std::time::Duration;

use proptest::prelude::*;
use ripcord::store::{
    FleetView, Heartbeat, MemoryStore, ProbeReport, ReconcileEntry, StateStore, SyncEntry,
    TransitionRequest, WindowTotals,
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
        /// Breakers and their windows, in one batch.
        windows: Vec<(usize, (u64, u64, u64))>,
    },
    Reconcile {
        instance: usize,
        breakers: Vec<usize>,
        touch: bool,
    },
    Transition {
        instance: usize,
        breaker: usize,
        to: State,
        cas: Option<Epoch>,
        open_for_long: bool,
        expires: Option<bool>,
        from_state: Option<State>,
        quorum: u32,
    },
    AcquireProbe {
        instance: usize,
        breaker: usize,
        epoch: Epoch,
        limit: u32,
    },
    ReportProbe {
        instance: usize,
        breaker: usize,
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

const BREAKERS: usize = 3;

fn breakers() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::btree_set(0..BREAKERS, 0..=BREAKERS).prop_map(|s| s.into_iter().collect())
}

fn op() -> impl Strategy<Value = Op> {
    let instance = 0usize..3;
    let breaker = 0usize..BREAKERS;
    prop_oneof![
        3 => (
            instance.clone(),
            prop::collection::btree_map(breaker.clone(), (0u64..20, 0u64..20, 0u64..20), 0..=BREAKERS),
        )
            .prop_map(|(instance, w)| Op::Sync { instance, windows: w.into_iter().collect() }),
        2 => (instance.clone(), breakers(), any::<bool>())
            .prop_map(|(instance, breakers, touch)| Op::Reconcile { instance, breakers, touch }),
        3 => (
            (instance.clone(), breaker.clone()),
            state(),
            prop_oneof![4 => epoch().prop_map(Some), 1 => Just(None)],
            any::<bool>(),
            prop_oneof![3 => Just(None), 1 => any::<bool>().prop_map(Some)],
            prop_oneof![1 => Just(None), 1 => state().prop_map(Some)],
            0u32..4,
        )
            .prop_map(
                |((instance, breaker), to, cas, open_for_long, expires, from_state, quorum)| {
                    Op::Transition {
                        instance,
                        breaker,
                        to,
                        cas,
                        open_for_long,
                        expires,
                        from_state,
                        quorum,
                    }
                },
            ),
        2 => (instance.clone(), breaker.clone(), epoch(), 1u32..4).prop_map(
            |(instance, breaker, epoch, limit)| Op::AcquireProbe { instance, breaker, epoch, limit }
        ),
        2 => (instance, breaker, epoch(), any::<bool>(), 1u32..3, 2u32..4, any::<bool>()).prop_map(
            |(instance, breaker, epoch, success, needed, probes, open_for_long)| Op::ReportProbe {
                instance,
                breaker,
                epoch,
                success,
                needed,
                probes,
                open_for_long,
            }
        ),
    ]
}

fn name(b: usize) -> String {
    format!("dep{b}")
}

fn heartbeat(instance: usize) -> Heartbeat {
    Heartbeat {
        instance: format!("i{instance}"),
        stale_after: HOUR,
        ttl: HOUR,
        required: true,
    }
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
            // The fleet epoch each instance knows of each breaker (from the
            // answers it got).
            let mut known = [[0u64; BREAKERS]; 3];
            for (step, op) in ops.iter().enumerate() {
                let ctx = format!("step {step}: {op:?}");
                match op {
                    Op::Sync { instance, windows } => {
                        let entries: Vec<SyncEntry> = windows
                            .iter()
                            .map(|(b, w)| SyncEntry {
                                name: name(*b),
                                fleet_epoch: known[*instance][*b],
                                window: WindowTotals { calls: w.0, failures: w.1, slow: w.2 },
                                stale_after: HOUR,
                                touch: w.0 % 2 == 0,
                                ttl: HOUR,
                            })
                            .collect();
                        let hb = heartbeat(*instance);
                        let m = memory.sync(&hb, &entries).await.unwrap();
                        let r = redis.sync(&hb, &entries).await.unwrap();
                        prop_assert_eq!(m.len(), entries.len(), "{}", ctx);
                        prop_assert_eq!(r.len(), entries.len(), "{}", ctx);
                        for (((b, _), m), r) in windows.iter().zip(&m).zip(&r) {
                            prop_assert_eq!(essence(m), essence(r), "{}", ctx);
                            known[*instance][*b] = known[*instance][*b].max(m.epoch);
                        }
                    }
                    Op::Reconcile { instance, breakers, touch } => {
                        let entries: Vec<ReconcileEntry> = breakers
                            .iter()
                            .map(|b| ReconcileEntry {
                                name: name(*b),
                                known_epoch: known[*instance][*b],
                                touch: *touch,
                                ttl: HOUR,
                            })
                            .collect();
                        let m = memory.reconcile(&entries).await.unwrap();
                        let r = redis.reconcile(&entries).await.unwrap();
                        prop_assert_eq!(m.len(), r.len(), "{}", ctx);
                        for ((b, m), r) in breakers.iter().zip(&m).zip(&r) {
                            prop_assert_eq!(m.as_ref().map(essence), r.as_ref().map(essence), "{}", ctx);
                            if let Some(m) = m {
                                known[*instance][*b] = known[*instance][*b].max(m.epoch);
                            }
                        }
                    }
                    Op::Transition { instance, breaker, to, cas, open_for_long, expires, from_state, quorum } => {
                        let req = TransitionRequest {
                            name: name(*breaker),
                            from_epoch: cas.as_ref().map(|e| pick(known[*instance][*breaker], e)),
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
                        known[*instance][*breaker] = known[*instance][*breaker].max(m.view.epoch);
                    }
                    Op::AcquireProbe { instance, breaker, epoch, limit } => {
                        let e = pick(known[*instance][*breaker], epoch);
                        let n = name(*breaker);
                        let m = memory.acquire_probe(&n, e, *limit, HOUR).await.unwrap();
                        let r = redis.acquire_probe(&n, e, *limit, HOUR).await.unwrap();
                        prop_assert_eq!(m, r, "{}", ctx);
                    }
                    Op::ReportProbe { instance, breaker, epoch, success, needed, probes, open_for_long } => {
                        let report = ProbeReport {
                            name: name(*breaker),
                            epoch: pick(known[*instance][*breaker], epoch),
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
                        known[*instance][*breaker] = known[*instance][*breaker].max(m.epoch);
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
