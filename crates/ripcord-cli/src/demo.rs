//! `ripcord demo`: one circuit breaker between a crowd of callers and a simulated
//! dependency that fails, slows down and recovers, shown live in the terminal.
//!
//! Everything runs in this process: the dependency is a function that sleeps and
//! fails on a seeded script ([`dependency`]), the callers are tokio tasks, and the
//! breaker is a plain [`ripcord::CircuitBreaker`]. While it runs, a status row is
//! redrawn about ten times a second ([`view`]); at the end the demo prints the
//! breaker's transitions and a summary ([`report`]).
//!
//! All the demo's timings — phases, window, open durations, latencies — scale
//! with `--duration` (20 s is the reference), so a short run tells the same story
//! faster.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ripcord::{Backoff, CircuitBreaker, Clock, SystemClock, Window};
use tokio::task::JoinHandle;

mod dependency;
mod events;
mod report;
mod view;

use dependency::{Phase, Schedule, SimulatedDependency};
use events::Timeline;

/// Options of `ripcord demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How long the demo runs; its phases and the breaker's timings scale with it
    /// (e.g. `20s`, `1m`; at least 2s).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,

    /// Seed of the simulated dependency's randomness (failures and latency jitter).
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// How many concurrent callers share the breaker.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    callers: u16,
}

/// The shortest `--duration` the demo accepts: below it the scaled timings get
/// too close to the dependency's 5 ms latency and the timer's resolution.
const MIN_DURATION: Duration = Duration::from_secs(2);

/// Parses `--duration`: a humantime duration of at least [`MIN_DURATION`].
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < MIN_DURATION {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(MIN_DURATION)
        ));
    }
    Ok(d)
}

/// The duration every other timing of the demo is quoted for.
const REFERENCE_DURATION: Duration = Duration::from_secs(20);

/// The demo's numbers, worked out once from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Total wall time of the demo.
    pub(crate) duration: Duration,
    /// Seed of the dependency's randomness.
    pub(crate) seed: u64,
    /// Number of concurrent callers.
    pub(crate) callers: usize,
    /// Each caller starts a call at most this often.
    pub(crate) pace: Duration,
    /// When the dependency is in which phase.
    pub(crate) schedule: Schedule,
    /// Latency of the dependency during the slow phase.
    pub(crate) slow_latency: Duration,
    /// Breaker: failure rate that trips it.
    pub(crate) failure_rate: f64,
    /// Breaker: calls slower than this count as slow.
    pub(crate) slow_threshold: Duration,
    /// Breaker: slow-call rate that trips it.
    pub(crate) slow_rate: f64,
    /// Breaker: calls needed in the window before it may trip.
    pub(crate) minimum_calls: u32,
    /// Breaker: length of the time window.
    pub(crate) window: Duration,
    /// Breaker: first open duration.
    pub(crate) open_base: Duration,
    /// Breaker: longest open duration.
    pub(crate) open_max: Duration,
    /// Breaker: probes admitted while half-open.
    pub(crate) half_open_calls: u32,
}

impl Plan {
    /// Scales the reference timings to `args.duration`.
    fn new(args: &DemoArgs) -> Self {
        let scale = args.duration.as_secs_f64() / REFERENCE_DURATION.as_secs_f64();
        let scaled = |d: Duration| d.mul_f64(scale);
        Plan {
            duration: args.duration,
            seed: args.seed,
            callers: usize::from(args.callers),
            pace: Duration::from_millis(6),
            schedule: Schedule::new(args.duration),
            slow_latency: scaled(Duration::from_millis(1500)),
            failure_rate: 0.5,
            slow_threshold: scaled(Duration::from_millis(800)),
            slow_rate: 0.5,
            minimum_calls: 20,
            window: scaled(Duration::from_secs(2)),
            open_base: scaled(Duration::from_millis(500)),
            open_max: scaled(Duration::from_secs(2)),
            half_open_calls: 3,
        }
    }

    /// The breaker this plan describes, reading `clock` and reporting its
    /// transitions to `timeline`.
    fn breaker(&self, clock: SystemClock, timeline: &Timeline) -> anyhow::Result<CircuitBreaker> {
        CircuitBreaker::builder("dependency")
            .failure_rate(self.failure_rate)
            .slow_calls(self.slow_threshold, self.slow_rate)
            .minimum_calls(self.minimum_calls)
            .window(Window::time(self.window))
            .open_for(Backoff::exponential(self.open_base, self.open_max))
            .half_open_calls(self.half_open_calls)
            .clock(clock)
            .seed(self.seed)
            .on_event(timeline.listener())
            .build()
            .context("building the demo's circuit breaker")
    }
}

/// What the callers saw, per phase of the dependency (the phase when the call
/// started).
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// Calls the callers attempted.
    attempted: [AtomicU64; Phase::COUNT],
    /// Calls the breaker refused without running them.
    rejected: [AtomicU64; Phase::COUNT],
}

impl Load {
    /// Counts a call attempted during `phase`.
    fn attempt(&self, phase: Phase) {
        self.attempted[phase.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call attempted during `phase` that the breaker refused.
    fn reject(&self, phase: Phase) {
        self.rejected[phase.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls attempted during `phase`.
    pub(crate) fn attempted(&self, phase: Phase) -> u64 {
        self.attempted[phase.index()].load(Ordering::Relaxed)
    }

    /// Calls rejected during `phase`.
    pub(crate) fn rejected(&self, phase: Phase) -> u64 {
        self.rejected[phase.index()].load(Ordering::Relaxed)
    }

    /// Calls attempted in all.
    pub(crate) fn total_attempted(&self) -> u64 {
        Phase::ALL.iter().map(|&p| self.attempted(p)).sum()
    }

    /// Calls rejected in all.
    pub(crate) fn total_rejected(&self) -> u64 {
        Phase::ALL.iter().map(|&p| self.rejected(p)).sum()
    }
}

/// Runs the demo to the end (or until Ctrl-C) and prints its report. Returns
/// the process's exit code: success, or 130 when interrupted.
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::new(&args);
    let style = view::Style::detect(std::io::stdout().is_terminal());

    let clock = SystemClock::new();
    let started = Instant::now();
    let timeline = Timeline::new(&plan, clock.now());
    let breaker = plan.breaker(clock, &timeline)?;
    let dependency = Arc::new(SimulatedDependency::new(
        started,
        plan.schedule,
        plan.slow_latency,
        plan.seed,
    ));
    let load = Arc::new(Load::default());

    let mut out = std::io::stdout().lock();
    view::print_intro(&mut out, &plan, &style)?;

    let callers: Vec<JoinHandle<()>> = (0..plan.callers)
        .map(|i| {
            tokio::spawn(caller(
                i,
                plan.clone(),
                breaker.clone(),
                Arc::clone(&dependency),
                Arc::clone(&load),
            ))
        })
        .collect();

    let mut live = view::Live::new(style);
    let mut ticker = tokio::time::interval(style.refresh());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut ctrl_c => interrupted = Some(started.elapsed()),
        }
        let elapsed = started.elapsed().min(plan.duration);
        live.draw(&mut out, &status(elapsed, &dependency, &breaker, &load))?;
        if elapsed >= plan.duration || interrupted.is_some() {
            break;
        }
    }
    live.finish(&mut out)?;

    // Calls still in flight (a slow call takes a while) are cancelled: their
    // permits are dropped, which the breaker does not count.
    for handle in &callers {
        handle.abort();
    }
    for handle in callers {
        // A cancelled task reports `JoinError::Cancelled`; a panicked one is a bug.
        if let Err(e) = handle.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let transitions = timeline.transitions();

    report::print(
        &mut out,
        &report::Report {
            plan: &plan,
            transitions: &transitions,
            final_state: breaker.state(),
            load: &load,
            dependency: &dependency,
            interrupted,
        },
        &style,
    )?;
    out.flush()?;
    Ok(match interrupted {
        None => ExitCode::SUCCESS,
        // The shell's convention for "ended by SIGINT".
        Some(_) => ExitCode::from(130),
    })
}

/// One caller: calls the dependency through the breaker, one call every
/// `plan.pace` at most, until the demo ends (or the task is aborted).
async fn caller(
    index: usize,
    plan: Plan,
    breaker: CircuitBreaker,
    dependency: Arc<SimulatedDependency>,
    load: Arc<Load>,
) {
    // Spread the callers over one pace period so they do not call in lockstep.
    let offset = plan.pace.mul_f64(index as f64 / plan.callers as f64);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, plan.pace);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let phase = dependency.phase();
        load.attempt(phase);
        let result = breaker.call(|| dependency.call(phase)).await;
        if matches!(&result, Err(e) if e.is_rejected()) {
            load.reject(phase);
        }
    }
}

/// A snapshot for the live view.
fn status(
    elapsed: Duration,
    dependency: &SimulatedDependency,
    breaker: &CircuitBreaker,
    load: &Load,
) -> view::Status {
    let stats = breaker.stats();
    view::Status {
        elapsed,
        phase: dependency.phase(),
        state: breaker.state(),
        calls: load.total_attempted(),
        rejected: load.total_rejected(),
        window_calls: stats.calls(),
        failure_rate: stats.failure_rate(),
        slow_rate: stats.slow_rate(),
    }
}
