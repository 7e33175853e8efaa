//! The replay engine: every call of a trace through one real
//! [`CircuitBreaker`] per configuration, on a [`ManualClock`].
//!
//! Calls overlap, so the clock cannot simply follow one call after another.
//! Each call is decided at its start (`try_acquire` with the clock at the start
//! time); an admitted call's permit waits in a min-heap keyed by its finish time
//! (start + latency), and before the clock moves to any later time, every call
//! that finished by then records its outcome, in finish-time order, with the
//! clock at its finish time. The breaker measures each call's latency itself
//! (finish − start), exactly as in production. Rejected calls never reach the
//! dependency. Nothing allocates per call once the heap has grown to the
//! largest number of calls in flight.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ripcord::event::{EventKind, TransitionReason};
use ripcord::{CircuitBreaker, CircuitBreakerConfig, ManualClock, Outcome, OwnedPermit, State};

use super::trace::{Call, TraceError};

/// A configuration to replay, with the name it is reported under.
#[derive(Debug, Clone)]
pub struct NamedConfig {
    /// Its name (e.g. the file's stem).
    pub name: String,
    /// The breaker's configuration.
    pub config: CircuitBreakerConfig,
}

/// How outages are found in the trace.
#[derive(Debug, Clone)]
pub enum OutageRule {
    /// The trace is in an outage while the share of bad calls (failures, and
    /// calls at least `slow` long when given) among the calls that started in
    /// the trailing `window` exceeds 50 %, with at least `min_calls` of them.
    /// Starts and ends are dated back to the first bad (or good) call of the
    /// run of bad (or good) tenths of the window that decided them.
    Trailing {
        /// The trailing window.
        window: Duration,
        /// Fewest calls in the window to call an outage.
        min_calls: u32,
        /// Calls this slow count as bad too.
        slow: Option<Duration>,
    },
    /// Known outages, as (start, end) nanosecond offsets, sorted (e.g. a
    /// scenario's failing and slow phases).
    Known(Vec<(u64, u64)>),
}

/// Options of a replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// How outages are found.
    pub outages: OutageRule,
    /// Seed of the breakers' jitter (open durations).
    pub seed: u64,
}

/// Something went wrong during a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace could not be read.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A configuration is invalid.
    #[error("configuration `{name}` is invalid")]
    Config {
        /// The configuration's name.
        name: String,
        /// Why.
        #[source]
        source: ripcord::ConfigError,
    },
}

/// One state change of a breaker during the replay.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Transition {
    /// When, in seconds from the start of the trace.
    pub at: f64,
    /// The state left.
    pub from: &'static str,
    /// The state entered.
    pub to: &'static str,
    /// Why.
    pub reason: String,
}

/// How one configuration fared in one outage.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutageOutcome {
    /// Seconds from the outage's start to the breaker's first opening in it
    /// (none if it never opened before the next outage).
    pub time_to_trip: Option<f64>,
    /// Seconds from the outage's end until the breaker was closed again (0 if
    /// it already was; none if it never opened in the outage, or did not close
    /// before the trace ended or the next outage began).
    pub time_to_recover: Option<f64>,
}

/// The results of one configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConfigReport {
    /// The configuration's name.
    pub name: String,
    /// Calls admitted (reached the dependency).
    pub admitted: u64,
    /// Calls rejected by the breaker.
    pub rejected: u64,
    /// Failed calls that reached the dependency.
    pub failed_calls_reached: u64,
    /// Calls rejected while the trace was healthy (false trips' cost).
    pub healthy_rejected: u64,
    /// Half-open probes admitted.
    pub probes: u64,
    /// Times the breaker opened from closed.
    pub trips: u64,
    /// Seconds from the first outage's start to the first trip in it.
    pub time_to_trip: Option<f64>,
    /// Seconds from the first outage's end until the breaker closed again.
    pub time_to_recover: Option<f64>,
    /// Per outage, in the order of [`Report::outages`].
    pub outages: Vec<OutageOutcome>,
    /// Every state change.
    pub transitions: Vec<Transition>,
}

/// An outage of the trace.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Outage {
    /// Its start, in seconds from the start of the trace.
    pub start: f64,
    /// Its end (none if the trace ended in it).
    pub end: Option<f64>,
}

/// What the trace held.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TraceSummary {
    /// Calls in the trace.
    pub calls: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Calls whose outcome is ignored.
    pub ignored: u64,
    /// Seconds from the first call's start to the last call's finish.
    pub duration: f64,
}

/// One time bucket of the trace, for the chart.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    /// Calls that started in it.
    pub calls: u32,
    /// Of which failed.
    pub failures: u32,
    /// Sum of their latencies, in milliseconds.
    pub latency_ms: f64,
}

/// The trace's calls over time, in at most [`Series::MAX_BUCKETS`] buckets
/// (their width doubles as the trace grows).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Bucket width in nanoseconds.
    pub width: u64,
    /// The buckets, from time zero.
    pub buckets: Vec<Bucket>,
}

impl Series {
    /// Most buckets kept.
    pub const MAX_BUCKETS: usize = 512;

    fn new() -> Self {
        Series {
            width: 100_000_000,
            buckets: Vec::with_capacity(Self::MAX_BUCKETS),
        }
    }

    fn add(&mut self, call: &Call) {
        let mut idx = (call.start / self.width) as usize;
        while idx >= Self::MAX_BUCKETS {
            let merged: Vec<Bucket> = self
                .buckets
                .chunks(2)
                .map(|c| {
                    c.iter().fold(Bucket::default(), |a, b| Bucket {
                        calls: a.calls + b.calls,
                        failures: a.failures + b.failures,
                        latency_ms: a.latency_ms + b.latency_ms,
                    })
                })
                .collect();
            self.buckets.clear();
            self.buckets.extend(merged);
            self.width *= 2;
            idx = (call.start / self.width) as usize;
        }
        if idx >= self.buckets.len() {
            self.buckets.resize(idx + 1, Bucket::default());
        }
        let b = &mut self.buckets[idx];
        if call.outcome != Outcome::Ignored {
            b.calls += 1;
            b.failures += u32::from(call.outcome == Outcome::Failure);
            b.latency_ms += call.latency as f64 / 1e6;
        }
    }
}

/// The result of a replay.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// What the trace held.
    pub trace: TraceSummary,
    /// The trace's outages.
    pub outages: Vec<Outage>,
    /// One entry per configuration, in the order given.
    pub configs: Vec<ConfigReport>,
    /// The trace over time (for the chart; not in the JSON).
    #[serde(skip)]
    pub series: Series,
}

fn secs(nanos: u64) -> f64 {
    // Rounded to the microsecond, so JSON stays short and stable.
    (nanos / 1_000) as f64 / 1e6
}

/// An admitted call waiting for its finish time.
struct InFlight {
    finish: u64,
    seq: u64,
    outcome: Outcome,
    permit: OwnedPermit,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.finish, self.seq) == (other.finish, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    /// Reversed: `BinaryHeap` is a max-heap, we want the earliest finish.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.finish, other.seq).cmp(&(self.finish, self.seq))
    }
}

/// Tenths of the outage window kept for dating back.
const RING: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    idx: u64,
    calls: u32,
    bad: u32,
    first_bad: Option<u64>,
    first_good: Option<u64>,
}

/// Finds outages in a trace as it streams by.
struct Detector {
    rule: OutageRule,
    width: u64,
    ring: [Slot; RING],
    in_outage: bool,
    /// The tenth-window index from which the last change counts.
    changed_at_idx: u64,
    known_next: usize,
    outages: Vec<(u64, Option<u64>)>,
}

/// A change of the trace's health.
struct Change {
    /// For a change found by the trailing window, the tenth-window index it
    /// was dated back to: rejections counted since then change category.
    from_idx: Option<u64>,
}

impl Detector {
    fn new(rule: OutageRule) -> Self {
        let width = match &rule {
            OutageRule::Trailing { window, .. } => (window.as_nanos() as u64 / RING as u64).max(1),
            OutageRule::Known(_) => u64::MAX,
        };
        Detector {
            rule,
            width,
            ring: [Slot::default(); RING],
            in_outage: false,
            changed_at_idx: 0,
            known_next: 0,
            outages: Vec::new(),
        }
    }

    fn idx(&self, t: u64) -> u64 {
        t / self.width
    }

    /// Takes one call; returns a change of health if it caused one.
    fn observe(&mut self, call: &Call) -> Option<Change> {
        let t = call.start;
        let (min_calls, slow) = match &self.rule {
            OutageRule::Known(list) => {
                // Exact: in an outage while start ∈ [s, e).
                let mut change = None;
                loop {
                    if self.in_outage {
                        let (_, e) = list[self.known_next];
                        if t >= e {
                            self.in_outage = false;
                            self.known_next += 1;
                            if let Some(last) = self.outages.last_mut() {
                                last.1 = Some(e);
                            }
                            change = Some(Change { from_idx: None });
                            continue;
                        }
                    } else if let Some(&(s, _)) = list.get(self.known_next) {
                        if t >= s {
                            self.in_outage = true;
                            self.outages.push((s, None));
                            change = Some(Change { from_idx: None });
                            continue;
                        }
                    }
                    return change;
                }
            }
            OutageRule::Trailing {
                min_calls, slow, ..
            } => (*min_calls, *slow),
        };
        if call.outcome == Outcome::Ignored {
            return None;
        }
        let bad = call.outcome == Outcome::Failure
            || slow.is_some_and(|s| call.latency >= s.as_nanos() as u64);
        let idx = self.idx(t);
        let slot = &mut self.ring[(idx % RING as u64) as usize];
        if slot.idx != idx || slot.calls == 0 {
            *slot = Slot {
                idx,
                ..Slot::default()
            };
        }
        slot.calls += 1;
        if bad {
            slot.bad += 1;
            slot.first_bad.get_or_insert(t);
        } else {
            slot.first_good.get_or_insert(t);
        }
        let live = |s: &Slot| s.calls > 0 && s.idx + RING as u64 > idx;
        let (calls, bads) = self
            .ring
            .iter()
            .filter(|s| live(s))
            .fold((0u32, 0u32), |(c, b), s| (c + s.calls, b + s.bad));
        let now_bad = calls >= min_calls && bads * 2 > calls;
        if now_bad == self.in_outage {
            return None;
        }
        // Date the change back to the first call of the run of tenths that
        // lean the new way (but not before the previous change).
        let mut from = idx;
        let mut at = t;
        for back in 0..RING as u64 {
            let Some(i) = idx.checked_sub(back) else {
                break;
            };
            if i < self.changed_at_idx {
                break;
            }
            let s = self.ring[(i % RING as u64) as usize];
            if s.idx != i || s.calls == 0 {
                continue;
            }
            let leans_bad = s.bad * 2 > s.calls;
            if leans_bad != now_bad {
                if back == 0 {
                    // The current tenth has only begun: judge by the others.
                    continue;
                }
                break;
            }
            from = i;
            at = if now_bad { s.first_bad } else { s.first_good }.unwrap_or(at);
        }
        self.in_outage = now_bad;
        self.changed_at_idx = from;
        if now_bad {
            self.outages.push((at, None));
        } else if let Some(last) = self.outages.last_mut() {
            last.1 = Some(at.max(last.0));
        }
        Some(Change {
            from_idx: Some(from),
        })
    }
}

type Log = Arc<Mutex<Vec<(u64, State, State, TransitionReason)>>>;

/// One configuration being replayed.
struct Runner {
    name: String,
    clock: ManualClock,
    breaker: CircuitBreaker,
    in_flight: BinaryHeap<InFlight>,
    seq: u64,
    log: Log,
    admitted: u64,
    rejected: u64,
    failed_reached: u64,
    healthy_rejected: u64,
    probes: u64,
    /// Rejections per tenth-window, for dating outage changes back.
    recent: [(u64, u64); RING],
}

impl Runner {
    fn new(index: usize, cfg: &NamedConfig, seed: u64) -> Result<Self, ReplayError> {
        let clock = ManualClock::new();
        let log: Log = Arc::default();
        let sink = log.clone();
        // A short internal name: names up to 22 bytes are stored inline, so
        // events (one per call) never allocate, however long the file name.
        let breaker = CircuitBreaker::builder(&format!("config-{index}"))
            .config(cfg.config.clone())
            .clock(clock.clone())
            .seed(seed)
            .on_event(move |e| {
                if let EventKind::Transition { from, to, reason } = &e.kind {
                    let at = e.at.as_nanos() as u64;
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((at, *from, *to, *reason));
                }
            })
            .build()
            .map_err(|source| ReplayError::Config {
                name: cfg.name.clone(),
                source,
            })?;
        Ok(Runner {
            name: cfg.name.clone(),
            clock,
            breaker,
            in_flight: BinaryHeap::new(),
            seq: 0,
            log,
            admitted: 0,
            rejected: 0,
            failed_reached: 0,
            healthy_rejected: 0,
            probes: 0,
            recent: [(u64::MAX, 0); RING],
        })
    }

    /// Records every call that finished by `until`, in finish order.
    fn settle(&mut self, until: u64) {
        while self.in_flight.peek().is_some_and(|c| c.finish <= until) {
            if let Some(done) = self.in_flight.pop() {
                self.clock.set(Duration::from_nanos(done.finish));
                done.permit.record(done.outcome);
            }
        }
    }

    fn offer(&mut self, call: &Call, healthy: bool, idx: u64) {
        self.settle(call.start);
        self.clock.set(Duration::from_nanos(call.start));
        match self.breaker.try_acquire_owned() {
            Ok(permit) => {
                self.admitted += 1;
                self.probes += u64::from(permit.is_probe());
                self.failed_reached += u64::from(call.outcome == Outcome::Failure);
                self.seq += 1;
                self.in_flight.push(InFlight {
                    finish: call.start.saturating_add(call.latency),
                    seq: self.seq,
                    outcome: call.outcome,
                    permit,
                });
            }
            Err(_) => {
                self.rejected += 1;
                self.healthy_rejected += u64::from(healthy);
                let slot = &mut self.recent[(idx % RING as u64) as usize];
                if slot.0 != idx {
                    *slot = (idx, 0);
                }
                slot.1 += 1;
            }
        }
    }

    /// The trace's health changed from `from_idx` on: rejections counted
    /// since then move to the new category.
    fn redate(&mut self, now_healthy: bool, from_idx: u64, idx: u64) {
        for slot in &mut self.recent {
            if slot.0 != u64::MAX
                && slot.0 >= from_idx
                && slot.0 <= idx
                && slot.0 + RING as u64 > idx
            {
                if now_healthy {
                    self.healthy_rejected += slot.1;
                } else {
                    self.healthy_rejected -= slot.1;
                }
                slot.1 = 0;
            }
        }
    }

    fn finish(mut self, outages: &[(u64, Option<u64>)]) -> ConfigReport {
        self.settle(u64::MAX);
        let log = std::mem::take(&mut *self.log.lock().unwrap_or_else(|p| p.into_inner()));
        let trips = log
            .iter()
            .filter(|(_, from, to, _)| *from == State::Closed && *to == State::Open)
            .count() as u64;
        let per_outage: Vec<OutageOutcome> = outages
            .iter()
            .enumerate()
            .map(|(i, &(s, e))| {
                let limit = outages.get(i + 1).map_or(u64::MAX, |n| n.0);
                let trip = log
                    .iter()
                    .find(|(at, _, to, _)| *at >= s && *at < limit && *to == State::Open)
                    .map(|(at, ..)| *at);
                let recover = match (trip, e) {
                    (Some(trip), Some(e)) => {
                        let state_at_end = log
                            .iter()
                            .take_while(|(at, ..)| *at <= e)
                            .last()
                            .map_or(State::Closed, |(_, _, to, _)| *to);
                        let closed_in_between = log
                            .iter()
                            .any(|(at, _, to, _)| *at >= trip && *at <= e && *to == State::Closed);
                        if state_at_end == State::Closed && closed_in_between {
                            Some(0)
                        } else {
                            log.iter()
                                .find(|(at, _, to, _)| {
                                    *at > e && *at < limit && *to == State::Closed
                                })
                                .map(|(at, ..)| at - e)
                        }
                    }
                    _ => None,
                };
                OutageOutcome {
                    time_to_trip: trip.map(|t| secs(t - s)),
                    time_to_recover: recover.map(secs),
                }
            })
            .collect();
        ConfigReport {
            name: self.name,
            admitted: self.admitted,
            rejected: self.rejected,
            failed_calls_reached: self.failed_reached,
            healthy_rejected: self.healthy_rejected,
            probes: self.probes,
            trips,
            time_to_trip: per_outage.first().and_then(|o| o.time_to_trip),
            time_to_recover: per_outage.first().and_then(|o| o.time_to_recover),
            outages: per_outage,
            transitions: log
                .iter()
                .map(|(at, from, to, reason)| Transition {
                    at: secs(*at),
                    from: from.as_str(),
                    to: to.as_str(),
                    reason: reason.to_string(),
                })
                .collect(),
        }
    }
}

/// Replays `calls` through one breaker per configuration.
pub fn replay<I>(
    calls: I,
    configs: &[NamedConfig],
    options: &ReplayOptions,
) -> Result<Report, ReplayError>
where
    I: IntoIterator<Item = Result<Call, TraceError>>,
{
    let mut runners = configs
        .iter()
        .enumerate()
        .map(|(i, c)| Runner::new(i, c, options.seed))
        .collect::<Result<Vec<_>, _>>()?;
    let mut detector = Detector::new(options.outages.clone());
    let mut series = Series::new();
    let mut summary = TraceSummary {
        calls: 0,
        failures: 0,
        ignored: 0,
        duration: 0.0,
    };
    let mut end = 0u64;
    let mut first: Option<u64> = None;
    for call in calls {
        let call = call?;
        first.get_or_insert(call.start);
        summary.calls += 1;
        summary.failures += u64::from(call.outcome == Outcome::Failure);
        summary.ignored += u64::from(call.outcome == Outcome::Ignored);
        end = end.max(call.start.saturating_add(call.latency));
        series.add(&call);
        let idx = detector.idx(call.start);
        if let Some(Change {
            from_idx: Some(from),
        }) = detector.observe(&call)
        {
            for r in &mut runners {
                r.redate(!detector.in_outage, from, idx);
            }
        }
        let healthy = !detector.in_outage;
        for r in &mut runners {
            r.offer(&call, healthy, idx);
        }
    }
    summary.duration = secs(end.saturating_sub(first.unwrap_or(0)));
    let outages = detector.outages;
    Ok(Report {
        trace: summary,
        outages: outages
            .iter()
            .map(|&(s, e)| Outage {
                start: secs(s),
                end: e.map(secs),
            })
            .collect(),
        configs: runners.into_iter().map(|r| r.finish(&outages)).collect(),
        series,
    })
}
