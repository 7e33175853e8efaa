//! Property tests: the circuit breaker against a small reference model.
//!
//! Random sequences of steps (time passing, calls with an outcome and a
//! latency, calls left in flight and finished later, permits dropped without a
//! verdict, manual overrides, ticks) drive a real [`CircuitBreaker`] on a
//! [`ManualClock`] and, side by side, an obviously-correct model written from
//! the documented semantics: a list of recent calls for the window, an explicit
//! state, epoch and half-open counters. After every step the two must agree on
//! the state, the epoch, the consecutive-failure count, the window statistics,
//! every accept/reject decision (with its epoch, kind and retry-after) and every
//! event a listener receives.
//!
//! Count windows are at most 32 calls (one bucket per call: exact); time
//! windows are modelled bucket by bucket, as documented: a call finishing at
//! `t` belongs to bucket `t / width`, and at `now` the window holds the buckets
//! `(now / width - buckets, now / width]`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::select;
use ripcord::{
    Backoff, CircuitBreaker, Event, EventKind, ManualClock, Name, Outcome, OwnedPermit, Rejected,
    State, TransitionReason, Window,
};

const MS: u64 = 1_000_000;
const NAME: &str = "model";

// ---------------------------------------------------------------------------
// Configurations and steps
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum WindowCfg {
    /// The last `n` calls (n ≤ 32: one bucket per call).
    Count(u32),
    /// The last `span_ms`, in `buckets` buckets.
    Time { span_ms: u64, buckets: u32 },
}

#[derive(Debug, Clone, Copy)]
enum BackoffCfg {
    Fixed(u64),
    /// Doubling from `base`, capped at `max` (both in ms; exact in binary
    /// floating point, so the breaker's `f64` arithmetic is exact too).
    Exponential {
        base: u64,
        max: u64,
    },
}

#[derive(Debug, Clone)]
struct Cfg {
    window: WindowCfg,
    failure_rate: Option<f64>,
    /// `(threshold in ms, rate)`.
    slow: Option<(u64, f64)>,
    consecutive: Option<u32>,
    minimum_calls: u32,
    backoff: BackoffCfg,
    half_open_calls: u32,
    half_open_successes: Option<u32>,
    max_half_open_wait_ms: u64,
    latency_histogram: bool,
    /// Whether a listener is attached (its events are then compared too).
    listen: bool,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Time passes (ms).
    Advance(u64),
    /// A call: acquire, `latency` ms pass, record `outcome`.
    Call(Outcome, u64),
    /// A call whose permit is dropped without a verdict after `latency` ms.
    Abandon(u64),
    /// A call that stays in flight (finished by a later `Finish`).
    Hold,
    /// Finishes the in-flight call at this index (modulo their number) with
    /// this outcome, or drops its permit (`None`).
    Finish(usize, Option<Outcome>),
    ForceOpen,
    Reset,
    Disable,
    MetricsOnly,
    Tick,
}

fn rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        (1u32..=20).prop_map(|k| f64::from(k) / 20.0),
        select(vec![1.0 / 3.0, 2.0 / 3.0, 0.1, 0.3]),
    ]
}

fn backoff() -> impl Strategy<Value = BackoffCfg> {
    prop_oneof![
        select(vec![250u64, 500, 1_000, 2_000]).prop_map(BackoffCfg::Fixed),
        (
            select(vec![250u64, 500, 1_000]),
            select(vec![1_000u64, 1_500, 3_000, 8_000])
        )
            .prop_map(|(base, max)| BackoffCfg::Exponential { base, max }),
    ]
}

fn count_window() -> impl Strategy<Value = (WindowCfg, u32)> {
    (1u32..=32).prop_flat_map(|n| (Just(WindowCfg::Count(n)), 1..=n))
}

fn time_window() -> impl Strategy<Value = (WindowCfg, u32)> {
    (
        select(vec![500u64, 1_000, 2_000, 3_000, 5_000, 1_300]),
        1u32..=10,
        1u32..=12,
    )
        .prop_map(|(span_ms, buckets, min)| (WindowCfg::Time { span_ms, buckets }, min))
}

fn half_open() -> impl Strategy<Value = (u32, Option<u32>)> {
    (1u32..=4).prop_flat_map(|calls| (Just(calls), prop::option::of(1..=calls)))
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Success),
        3 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignored),
    ]
}

/// Durations in multiples of 50 ms, so boundaries (bucket edges, the end of an
/// open period, the slow threshold) are hit exactly and often.
fn millis(max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        4 => (0..=max / 50).prop_map(|u| u * 50),
    ]
}

/// Steps; `hold` weighs calls kept in flight (interleavings of concurrent calls).
fn steps(hold: u32, len: usize) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => millis(3_000).prop_map(Step::Advance),
        10 => (outcome(), millis(2_000)).prop_map(|(o, l)| Step::Call(o, l)),
        1 => millis(2_000).prop_map(Step::Abandon),
        hold => Just(Step::Hold),
        hold => (any::<usize>(), prop::option::weighted(0.8, outcome()))
            .prop_map(|(i, o)| Step::Finish(i, o)),
        1 => Just(Step::Tick),
        1 => prop_oneof![
            3 => Just(Step::ForceOpen),
            6 => Just(Step::Reset),
            1 => Just(Step::Disable),
            1 => Just(Step::MetricsOnly),
        ],
    ];
    prop::collection::vec(step, 1..len)
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counted,
    Probe,
    Untracked,
}

/// A permit as the model sees it.
#[derive(Debug, Clone, Copy)]
struct MPermit {
    epoch: u64,
    kind: Kind,
    /// Clock at admission (0 when the breaker does not time calls).
    start: u64,
}

/// A rejection as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MReject {
    state: State,
    retry_after: Duration,
    epoch: u64,
}

/// One counted call in the window.
#[derive(Debug, Clone, Copy)]
struct Call {
    at: u64,
    failure: bool,
    slow: bool,
}

struct Model {
    cfg: Cfg,
    // Resolved configuration.
    failure_rate: Option<f64>,
    slow_rate: Option<f64>,
    slow_nanos: u64,
    timed: bool,
    half_open_successes: u32,

    now: u64,
    state: State,
    epoch: u64,
    consecutive: u32,
    openings: u32,
    open_until: u64,
    half_open_deadline: u64,
    admitted: u32,
    successes: u32,
    failures: u32,
    /// Counted calls of the current epoch, oldest first (count windows keep the
    /// last `n`; time windows keep all and filter by bucket).
    window: VecDeque<Call>,
    /// Events a listener should have received and not yet compared.
    events: Vec<Event>,
}

impl Model {
    fn new(cfg: &Cfg) -> Self {
        let mut failure_rate = cfg.failure_rate;
        if cfg.failure_rate.is_none() && cfg.slow.is_none() && cfg.consecutive.is_none() {
            failure_rate = Some(0.5); // the documented default rule
        }
        Model {
            cfg: cfg.clone(),
            failure_rate,
            slow_rate: cfg.slow.map(|s| s.1),
            slow_nanos: cfg.slow.map_or(u64::MAX, |s| s.0 * MS),
            timed: cfg.slow.is_some()
                || cfg.latency_histogram
                || matches!(cfg.window, WindowCfg::Time { .. }),
            half_open_successes: cfg.half_open_successes.unwrap_or(cfg.half_open_calls),
            now: 0,
            state: State::Closed,
            epoch: 0,
            consecutive: 0,
            openings: 0,
            open_until: 0,
            half_open_deadline: 0,
            admitted: 0,
            successes: 0,
            failures: 0,
            window: VecDeque::new(),
            events: Vec::new(),
        }
    }

    fn event(&mut self, epoch: u64, kind: EventKind) {
        if self.cfg.listen {
            self.events.push(Event {
                name: Name::new(NAME),
                at: Duration::from_nanos(self.now),
                epoch,
                kind,
            });
        }
    }

    fn open_duration(&self, openings: u32) -> u64 {
        match self.cfg.backoff {
            BackoffCfg::Fixed(d) => d * MS,
            BackoffCfg::Exponential { base, max } => {
                let mut d = base;
                for _ in 1..openings {
                    d = d.saturating_mul(2).min(max);
                }
                d.min(max) * MS
            }
        }
    }

    /// `(calls, failures, slow)` in the window now.
    fn stats(&self) -> (u64, u64, u64) {
        let in_window = |c: &&Call| match self.cfg.window {
            WindowCfg::Count(_) => true,
            WindowCfg::Time { span_ms, buckets } => {
                let width = (span_ms * MS / u64::from(buckets)).max(1);
                c.at / width + u64::from(buckets) > self.now / width
            }
        };
        let calls: Vec<&Call> = self.window.iter().filter(in_window).collect();
        (
            calls.len() as u64,
            calls.iter().filter(|c| c.failure).count() as u64,
            calls.iter().filter(|c| c.slow).count() as u64,
        )
    }

    fn transition(&mut self, to: State, reason: TransitionReason) {
        let from = self.state;
        self.epoch += 1;
        match to {
            State::Open => {
                self.openings += 1;
                self.open_until = self.now + self.open_duration(self.openings);
            }
            State::HalfOpen => {
                self.admitted = 0;
                self.successes = 0;
                self.failures = 0;
                self.half_open_deadline = self.now + self.cfg.max_half_open_wait_ms * MS;
            }
            State::Closed => {
                self.openings = 0;
                self.consecutive = 0;
            }
            State::MetricsOnly => self.consecutive = 0,
            State::ForcedOpen | State::Disabled => {}
        }
        // Every epoch starts with an empty window.
        self.window.clear();
        self.state = to;
        self.event(self.epoch, EventKind::Transition { from, to, reason });
    }

    fn reject(&mut self, state: State, retry_after: Duration) -> Result<MPermit, MReject> {
        self.event(self.epoch, EventKind::Rejected { state, retry_after });
        Err(MReject {
            state,
            retry_after,
            epoch: self.epoch,
        })
    }

    fn acquire(&mut self) -> Result<MPermit, MReject> {
        let start = if self.timed { self.now } else { 0 };
        loop {
            let epoch = self.epoch;
            match self.state {
                State::Closed | State::MetricsOnly => {
                    return Ok(MPermit {
                        epoch,
                        kind: Kind::Counted,
                        start,
                    })
                }
                State::Disabled => {
                    return Ok(MPermit {
                        epoch,
                        kind: Kind::Untracked,
                        start: 0,
                    })
                }
                State::ForcedOpen => return self.reject(State::ForcedOpen, Duration::ZERO),
                State::Open => {
                    if self.now < self.open_until {
                        let left = Duration::from_nanos(self.open_until - self.now);
                        return self.reject(State::Open, left);
                    }
                    self.transition(State::HalfOpen, TransitionReason::OpenElapsed);
                }
                State::HalfOpen => {
                    // Past the deadline, no new probe is admitted: the
                    // breaker re-opens, whether or not a slot is free.
                    if self.now >= self.half_open_deadline {
                        self.transition(State::Open, TransitionReason::HalfOpenTimeout);
                        continue;
                    }
                    if self.admitted < self.cfg.half_open_calls {
                        self.admitted += 1;
                        return Ok(MPermit {
                            epoch,
                            kind: Kind::Probe,
                            start,
                        });
                    }
                    return self.reject(State::HalfOpen, Duration::ZERO);
                }
            }
        }
    }

    fn finish(&mut self, p: MPermit, outcome: Outcome) {
        if p.kind == Kind::Untracked {
            return;
        }
        let end = if self.timed { self.now } else { 0 };
        let took = end.saturating_sub(p.start);
        let slow = took >= self.slow_nanos;
        if p.epoch != self.epoch {
            // Stale: reported, otherwise ignored entirely.
            self.event(
                self.epoch,
                EventKind::StaleOutcome {
                    outcome,
                    admitted_in: p.epoch,
                },
            );
            return;
        }
        let outcome_event = EventKind::Outcome {
            outcome,
            duration: Duration::from_nanos(took),
            slow,
            probe: p.kind == Kind::Probe,
        };
        if p.kind == Kind::Probe {
            assert_eq!(
                self.state,
                State::HalfOpen,
                "model: probe of the current epoch"
            );
            match outcome {
                Outcome::Ignored => self.admitted -= 1,
                Outcome::Success if !slow => self.successes += 1,
                _ => self.failures += 1,
            }
            self.event(p.epoch, outcome_event);
            if self.successes >= self.half_open_successes {
                self.transition(State::Closed, TransitionReason::ProbesSucceeded);
            } else if self.failures > self.cfg.half_open_calls - self.half_open_successes {
                self.transition(State::Open, TransitionReason::ProbeFailed);
            }
            return;
        }
        // A counted call of the current (closed or metrics-only) epoch.
        self.event(p.epoch, outcome_event);
        let failure = match outcome {
            Outcome::Ignored => return, // not counted, consecutive count untouched
            Outcome::Success => false,
            Outcome::Failure => true,
        };
        self.window.push_back(Call {
            at: self.now,
            failure,
            slow,
        });
        if let WindowCfg::Count(n) = self.cfg.window {
            while self.window.len() > n as usize {
                self.window.pop_front();
            }
        }
        self.consecutive = if failure { self.consecutive + 1 } else { 0 };
        if (failure || slow) && self.state == State::Closed {
            if let Some(reason) = self.trip_reason() {
                self.transition(State::Open, reason);
            }
        }
    }

    fn trip_reason(&self) -> Option<TransitionReason> {
        if self.cfg.consecutive.is_some_and(|n| self.consecutive >= n) {
            return Some(TransitionReason::ConsecutiveFailures);
        }
        let (calls, failures, slow) = self.stats();
        if calls < u64::from(self.cfg.minimum_calls) {
            return None;
        }
        let share = |k: u64| {
            if calls == 0 {
                0.0
            } else {
                k as f64 / calls as f64
            }
        };
        if self.failure_rate.is_some_and(|r| share(failures) >= r) {
            return Some(TransitionReason::FailureRate);
        }
        if self.slow_rate.is_some_and(|r| share(slow) >= r) {
            return Some(TransitionReason::SlowCallRate);
        }
        None
    }

    fn tick(&mut self) {
        match self.state {
            State::Open if self.now >= self.open_until => {
                self.transition(State::HalfOpen, TransitionReason::OpenElapsed);
            }
            State::HalfOpen if self.now >= self.half_open_deadline => {
                self.transition(State::Open, TransitionReason::HalfOpenTimeout);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Running a sequence against both
// ---------------------------------------------------------------------------

fn build(cfg: &Cfg, clock: &ManualClock, log: &Arc<Mutex<Vec<Event>>>) -> CircuitBreaker {
    let window = match cfg.window {
        WindowCfg::Count(n) => Window::count(n),
        WindowCfg::Time { span_ms, buckets } => {
            Window::time(Duration::from_millis(span_ms)).buckets(buckets)
        }
    };
    let backoff = match cfg.backoff {
        BackoffCfg::Fixed(d) => Backoff::fixed(Duration::from_millis(d)),
        BackoffCfg::Exponential { base, max } => {
            Backoff::exponential(Duration::from_millis(base), Duration::from_millis(max))
        }
    };
    let mut b = CircuitBreaker::builder(NAME)
        .clock(clock.clone())
        .window(window)
        .minimum_calls(cfg.minimum_calls)
        .open_for(backoff)
        .half_open_calls(cfg.half_open_calls)
        .max_half_open_wait(Duration::from_millis(cfg.max_half_open_wait_ms))
        .latency_histogram(cfg.latency_histogram);
    if let Some(r) = cfg.failure_rate {
        b = b.failure_rate(r);
    }
    if let Some((ms, r)) = cfg.slow {
        b = b.slow_calls(Duration::from_millis(ms), r);
    }
    if let Some(n) = cfg.consecutive {
        b = b.consecutive_failures(n);
    }
    if let Some(k) = cfg.half_open_successes {
        b = b.half_open_successes(k);
    }
    if cfg.listen {
        let log = log.clone();
        b = b.on_event(move |e| log.lock().unwrap().push(e.clone()));
    }
    b.build().expect("generated configurations are valid")
}

fn check_decision(
    what: &str,
    got: Result<(u64, bool), &Rejected>,
    want: &Result<MPermit, MReject>,
) -> Result<(), TestCaseError> {
    match (got, want) {
        (Ok((epoch, probe)), Ok(w)) => {
            prop_assert_eq!(epoch, w.epoch, "{}: permit epoch", what);
            prop_assert_eq!(probe, w.kind == Kind::Probe, "{}: probe or not", what);
        }
        (Err(r), Err(w)) => {
            let got = MReject {
                state: r.state(),
                retry_after: r.retry_after(),
                epoch: r.epoch(),
            };
            prop_assert_eq!(&got, w, "{}: rejection", what);
            prop_assert_eq!(r.name(), NAME);
        }
        (got, want) => {
            return Err(TestCaseError::fail(format!(
                "{what}: breaker decided {got:?}, model {want:?}"
            )))
        }
    }
    Ok(())
}

fn permit_view<'a>(
    r: &'a Result<ripcord::Permit<'_>, Rejected>,
) -> Result<(u64, bool), &'a Rejected> {
    match r {
        Ok(p) => Ok((p.epoch(), p.is_probe())),
        Err(e) => Err(e),
    }
}

fn run(cfg: &Cfg, steps: &[Step]) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let breaker = build(cfg, &clock, &log);
    let mut model = Model::new(cfg);
    let mut held: Vec<(OwnedPermit, MPermit)> = Vec::new();

    let advance = |model: &mut Model, ms: u64| {
        clock.advance(Duration::from_millis(ms));
        model.now += ms * MS;
    };

    for (i, step) in steps.iter().enumerate() {
        let what = format!("step {i} {step:?}");
        match *step {
            Step::Advance(ms) => advance(&mut model, ms),
            Step::Call(_, latency) | Step::Abandon(latency) => {
                let outcome = match *step {
                    Step::Call(o, _) => Some(o),
                    _ => None,
                };
                let got = breaker.try_acquire();
                let want = model.acquire();
                check_decision(&what, permit_view(&got), &want)?;
                if let (Ok(p), Ok(w)) = (got, want) {
                    advance(&mut model, latency);
                    match outcome {
                        Some(o) => p.record(o),
                        None => drop(p),
                    }
                    model.finish(w, outcome.unwrap_or(Outcome::Ignored));
                }
            }
            Step::Hold => {
                let got = breaker.try_acquire_owned();
                let want = model.acquire();
                let view = got.as_ref().map(|p| (p.epoch(), p.is_probe()));
                check_decision(&what, view, &want)?;
                if let (Ok(p), Ok(w)) = (got, want) {
                    held.push((p, w));
                }
            }
            Step::Finish(idx, outcome) => {
                if !held.is_empty() {
                    let (p, w) = held.swap_remove(idx % held.len());
                    match outcome {
                        Some(o) => p.record(o),
                        None => drop(p),
                    }
                    model.finish(w, outcome.unwrap_or(Outcome::Ignored));
                }
            }
            Step::ForceOpen => {
                breaker.force_open();
                model.transition(State::ForcedOpen, TransitionReason::Manual);
            }
            Step::Reset => {
                breaker.reset();
                model.transition(State::Closed, TransitionReason::Manual);
            }
            Step::Disable => {
                breaker.disable();
                model.transition(State::Disabled, TransitionReason::Manual);
            }
            Step::MetricsOnly => {
                breaker.metrics_only();
                model.transition(State::MetricsOnly, TransitionReason::Manual);
            }
            Step::Tick => {
                let after = breaker.tick();
                model.tick();
                prop_assert_eq!(after, model.state, "{}: tick result", what);
            }
        }

        prop_assert_eq!(breaker.state(), model.state, "{}: state", what);
        prop_assert_eq!(breaker.epoch(), model.epoch, "{}: epoch", what);
        prop_assert_eq!(
            breaker.consecutive_failures(),
            model.consecutive,
            "{}: consecutive failures",
            what
        );
        let s = breaker.stats();
        prop_assert_eq!(
            (s.calls(), s.failures(), s.slow()),
            model.stats(),
            "{}: window (calls, failures, slow)",
            what
        );
        let got: Vec<Event> = std::mem::take(&mut *log.lock().unwrap());
        let want: Vec<Event> = std::mem::take(&mut model.events);
        prop_assert_eq!(got, want, "{}: events", what);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// 512 cases per property (about 3 s in debug), or `PROPTEST_CASES` to
/// search longer.
fn config() -> ProptestConfig {
    let base = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            base.cases
        } else {
            512
        },
        // Persisting failures would write files next to the test sources.
        failure_persistence: None,
        ..base
    }
}

/// A count window with the consecutive-failures rule and/or a failure rate;
/// no slow-call rule (so calls are not timed unless a histogram is kept).
fn count_cfg() -> impl Strategy<Value = Cfg> {
    (
        count_window(),
        prop::option::of(rate()),
        prop::option::of(1u32..=6),
        backoff(),
        half_open(),
        select(vec![500u64, 1_000, 4_000]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                (window, minimum_calls),
                failure_rate,
                consecutive,
                backoff,
                ho,
                wait,
                hist,
                listen,
            )| {
                Cfg {
                    window,
                    failure_rate,
                    slow: None,
                    consecutive,
                    minimum_calls,
                    backoff,
                    half_open_calls: ho.0,
                    half_open_successes: ho.1,
                    max_half_open_wait_ms: wait,
                    latency_histogram: hist,
                    listen,
                }
            },
        )
}

/// A time window with the slow-call rule, and maybe a failure rate and the
/// consecutive rule.
fn time_slow_cfg() -> impl Strategy<Value = Cfg> {
    (
        time_window(),
        prop::option::of(rate()),
        (select(vec![250u64, 500, 800, 1_000, 1_500]), rate()),
        prop::option::of(1u32..=6),
        backoff(),
        half_open(),
        select(vec![500u64, 1_000, 4_000]),
        any::<bool>(),
    )
        .prop_map(
            |(
                (window, minimum_calls),
                failure_rate,
                slow,
                consecutive,
                backoff,
                ho,
                wait,
                listen,
            )| {
                Cfg {
                    window,
                    failure_rate,
                    slow: Some(slow),
                    consecutive,
                    minimum_calls,
                    backoff,
                    half_open_calls: ho.0,
                    half_open_successes: ho.1,
                    max_half_open_wait_ms: wait,
                    latency_histogram: false,
                    listen,
                }
            },
        )
}

/// Half-open probing where fewer successes than probes are needed to close,
/// with short open periods so the breaker spends its time half-open.
fn half_open_cfg() -> impl Strategy<Value = Cfg> {
    (
        prop_oneof![count_window(), time_window()],
        prop::option::of(rate()),
        prop::option::of((select(vec![250u64, 500, 1_000]), rate())),
        (2u32..=5).prop_flat_map(|calls| (Just(calls), 1..calls)),
        select(vec![250u64, 500]),
        select(vec![300u64, 1_000, 2_500]),
        any::<bool>(),
    )
        .prop_map(
            |((window, minimum_calls), failure_rate, slow, (calls, succ), open, wait, listen)| {
                Cfg {
                    window,
                    failure_rate,
                    slow,
                    consecutive: Some(1),
                    minimum_calls,
                    backoff: BackoffCfg::Fixed(open),
                    half_open_calls: calls,
                    half_open_successes: Some(succ),
                    max_half_open_wait_ms: wait,
                    latency_histogram: false,
                    listen,
                }
            },
        )
}

/// Anything the generators can make, including no rule at all (the default
/// 50 % failure-rate rule).
fn any_cfg() -> impl Strategy<Value = Cfg> {
    (
        prop_oneof![count_window(), time_window()],
        prop::option::of(rate()),
        prop::option::of((select(vec![250u64, 500, 1_000]), rate())),
        prop::option::of(1u32..=4),
        backoff(),
        half_open(),
        select(vec![300u64, 1_000, 4_000]),
        any::<bool>(),
    )
        .prop_map(
            |(
                (window, minimum_calls),
                failure_rate,
                slow,
                consecutive,
                backoff,
                ho,
                wait,
                hist,
            )| {
                Cfg {
                    window,
                    failure_rate,
                    slow,
                    consecutive,
                    minimum_calls,
                    backoff,
                    half_open_calls: ho.0,
                    half_open_successes: ho.1,
                    max_half_open_wait_ms: wait,
                    latency_histogram: hist,
                    listen: true,
                }
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn count_window_and_consecutive_failures(cfg in count_cfg(), steps in steps(2, 80)) {
        run(&cfg, &steps)?;
    }

    #[test]
    fn time_window_and_slow_calls(cfg in time_slow_cfg(), steps in steps(2, 80)) {
        run(&cfg, &steps)?;
    }

    #[test]
    fn half_open_with_fewer_successes_than_probes(cfg in half_open_cfg(), steps in steps(6, 80)) {
        run(&cfg, &steps)?;
    }

    #[test]
    fn any_configuration(cfg in any_cfg(), steps in steps(3, 120)) {
        run(&cfg, &steps)?;
    }
}

// ---------------------------------------------------------------------------
// Fixed sequences (documented behaviour the random search may hit rarely)
// ---------------------------------------------------------------------------

fn fixed_cfg(window: WindowCfg) -> Cfg {
    Cfg {
        window,
        failure_rate: Some(0.5),
        slow: None,
        consecutive: Some(3),
        minimum_calls: 2,
        backoff: BackoffCfg::Exponential {
            base: 500,
            max: 1_500,
        },
        half_open_calls: 2,
        half_open_successes: Some(1),
        max_half_open_wait_ms: 1_000,
        latency_histogram: false,
        listen: true,
    }
}

#[test]
fn ignored_outcomes_do_not_break_a_run_of_failures() {
    use Outcome::{Failure, Ignored};
    let mut cfg = fixed_cfg(WindowCfg::Count(10));
    cfg.failure_rate = None;
    let steps = [
        Step::Call(Failure, 0),
        Step::Call(Ignored, 0),
        Step::Call(Failure, 0),
        Step::Abandon(0),
        Step::Call(Failure, 0), // third failure in a row: trips
        Step::Call(Failure, 0), // rejected
    ];
    run(&cfg, &steps).unwrap();
}

#[test]
fn open_durations_grow_and_reset_on_close() {
    use Outcome::{Failure, Success};
    let mut cfg = fixed_cfg(WindowCfg::Count(4));
    cfg.half_open_successes = None; // both probes must succeed
    let steps = [
        Step::Call(Failure, 0),
        Step::Call(Failure, 0), // 2 of 2 failed: trips, open for 500 ms
        Step::Advance(500),
        Step::Call(Failure, 0), // the probe fails: open for 1 s
        Step::Advance(999),
        Step::Call(Success, 0), // rejected, 1 ms left
        Step::Advance(1),
        Step::Hold,                     // probe 1
        Step::Hold,                     // probe 2
        Step::Call(Success, 0),         // no slot left: rejected
        Step::Advance(1_000),           // the half-open deadline passes
        Step::Call(Success, 0),         // rejected: re-opens for 1.5 s (capped)
        Step::Finish(0, Some(Success)), // stale
        Step::Advance(1_500),
        Step::Tick, // half-open
        Step::Call(Success, 0),
        Step::Call(Success, 0),         // closes
        Step::Finish(0, Some(Failure)), // stale
        Step::Call(Failure, 0),
        Step::Call(Failure, 0), // trips again: back to 500 ms
        Step::Advance(499),
        Step::Call(Success, 0), // rejected, 1 ms left
    ];
    run(&cfg, &steps).unwrap();
}

#[test]
fn time_window_buckets_expire_whole() {
    use Outcome::{Failure, Success};
    let mut cfg = fixed_cfg(WindowCfg::Time {
        span_ms: 1_000,
        buckets: 4,
    });
    cfg.consecutive = None;
    cfg.minimum_calls = 3;
    let steps = [
        Step::Call(Success, 0),
        Step::Advance(250),
        Step::Call(Success, 0),
        Step::Advance(750),     // the first bucket (0-250 ms) has just left
        Step::Call(Failure, 0), // 1 of 2: 50 % but below minimum_calls
        Step::Call(Failure, 0), // 2 of 3 failed: trips
    ];
    run(&cfg, &steps).unwrap();
}
