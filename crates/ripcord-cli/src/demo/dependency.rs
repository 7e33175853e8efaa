//! The dependency: a flaky HTTP upstream ([`ripcord_proxy::upstream`]) whose behaviour
//! follows a script of phases (healthy → failing → restarted → slow →
//! recovering), with seeded randomness.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ripcord_proxy::upstream::{Behavior, Upstream};

/// Typical latency of the dependency when it is not slow.
pub(crate) const FAST_LATENCY: Duration = Duration::from_millis(5);

/// One act of the dependency's script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Answers in about [`FAST_LATENCY`]; about 2 % of calls fail.
    Healthy,
    /// Answers fast, but about 80 % of calls fail.
    Failing,
    /// Restarted: healthy for a while, so the breaker closes before the next act.
    Restarted,
    /// Answers successfully, but far slower than the breaker's slow-call threshold.
    Slow,
    /// Healthy again; the breaker should notice and close.
    Recovering,
}

impl Phase {
    /// Every phase, in script order.
    pub(crate) const ALL: [Phase; Phase::COUNT] = [
        Phase::Healthy,
        Phase::Failing,
        Phase::Restarted,
        Phase::Slow,
        Phase::Recovering,
    ];

    /// Number of phases.
    pub(crate) const COUNT: usize = 5;

    /// The phase's position in [`Phase::ALL`], to index per-phase counters.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Its share of the demo's duration.
    fn share(self) -> f64 {
        match self {
            Phase::Healthy => 0.15,
            Phase::Failing => 0.20,
            Phase::Restarted => 0.15,
            Phase::Slow => 0.20,
            Phase::Recovering => 0.30,
        }
    }

    /// The probability that a call made during this phase fails.
    pub(crate) fn failure_probability(self) -> f64 {
        match self {
            Phase::Healthy | Phase::Restarted | Phase::Recovering => 0.02,
            Phase::Failing => 0.80,
            Phase::Slow => 0.0,
        }
    }

    /// A lower-case name for display.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Healthy => "healthy",
            Phase::Failing => "failing",
            Phase::Restarted => "restarted",
            Phase::Slow => "slow",
            Phase::Recovering => "recovering",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so that width and alignment flags (`{:<10}`) apply.
        f.pad(self.name())
    }
}

/// When each phase starts, for a demo of a given duration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Start of each phase (indexed by [`Phase::index`]), relative to the demo's start.
    starts: [Duration; Phase::COUNT],
    /// The end of the last phase: the demo's duration.
    end: Duration,
}

impl Schedule {
    /// Splits `total` into the four phases, in proportion to their shares.
    pub(crate) fn new(total: Duration) -> Self {
        let mut starts = [Duration::ZERO; Phase::COUNT];
        let mut at = 0.0;
        for phase in Phase::ALL {
            starts[phase.index()] = total.mul_f64(at);
            at += phase.share();
        }
        Schedule { starts, end: total }
    }

    /// The phase the dependency is in at `elapsed` since the demo's start (the
    /// last phase lasts forever).
    pub(crate) fn phase_at(&self, elapsed: Duration) -> Phase {
        Phase::ALL
            .into_iter()
            .rev()
            .find(|phase| elapsed >= self.starts[phase.index()])
            .unwrap_or(Phase::Healthy)
    }

    /// When `phase` starts, relative to the demo's start.
    pub(crate) fn start(&self, phase: Phase) -> Duration {
        self.starts[phase.index()]
    }

    /// When `phase` ends, relative to the demo's start.
    pub(crate) fn end(&self, phase: Phase) -> Duration {
        Phase::ALL
            .get(phase.index() + 1)
            .map_or(self.end, |next| self.starts[next.index()])
    }
}

/// The behaviour of the upstream during `phase`.
pub(crate) fn behavior(phase: Phase, slow_latency: Duration) -> Behavior {
    match phase {
        Phase::Slow => Behavior::healthy().latency(slow_latency).jitter(0.2),
        _ => Behavior::failing(503, phase.failure_probability())
            .latency(FAST_LATENCY)
            .jitter(0.2),
    }
}

/// The dependency: the flaky HTTP upstream, switched from phase to phase on
/// the schedule. It counts the requests that reach it, per phase.
#[derive(Debug)]
pub(crate) struct Dependency {
    /// The upstream server.
    upstream: Upstream,
    /// When the demo started: phases are relative to it.
    started: Instant,
    /// Which phase is when.
    schedule: Schedule,
    /// Typical latency of a request during the slow phase.
    slow_latency: Duration,
    /// The upstream's (requests, failures) counters when each phase began.
    marks: Mutex<[Option<(u64, u64)>; Phase::COUNT]>,
}

impl Dependency {
    /// Starts the upstream on a free loopback port, healthy, following
    /// `schedule` from `started` on once [`follow`](Self::follow) runs.
    pub(crate) async fn start(
        started: Instant,
        schedule: Schedule,
        slow_latency: Duration,
        seed: u64,
    ) -> std::io::Result<Self> {
        let upstream = Upstream::bind(seed).await?;
        upstream.set(behavior(Phase::Healthy, slow_latency));
        let mut marks = [None; Phase::COUNT];
        marks[Phase::Healthy.index()] = Some((0, 0));
        Ok(Dependency {
            upstream,
            started,
            schedule,
            slow_latency,
            marks: Mutex::new(marks),
        })
    }

    /// The upstream's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.upstream.addr()
    }

    /// The phase the dependency is in now.
    pub(crate) fn phase(&self) -> Phase {
        self.schedule.phase_at(self.started.elapsed())
    }

    /// Switches the upstream's behaviour at the start of every phase; returns
    /// after the last switch.
    pub(crate) async fn follow(&self) {
        for phase in Phase::ALL.into_iter().skip(1) {
            let at = tokio::time::Instant::from_std(self.started + self.schedule.start(phase));
            tokio::time::sleep_until(at).await;
            let counts = (self.upstream.requests(), self.upstream.failures());
            self.marks.lock().unwrap_or_else(|e| e.into_inner())[phase.index()] = Some(counts);
            self.upstream.set(behavior(phase, self.slow_latency));
        }
    }

    /// The (requests, failures) the upstream saw during `phase` (so far).
    fn counts(&self, phase: Phase) -> (u64, u64) {
        let marks = *self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let Some(start) = marks[phase.index()] else {
            return (0, 0);
        };
        let end = Phase::ALL
            .get(phase.index() + 1)
            .and_then(|next| marks[next.index()])
            .unwrap_or((self.upstream.requests(), self.upstream.failures()));
        (end.0.saturating_sub(start.0), end.1.saturating_sub(start.1))
    }

    /// How many requests reached the dependency during `phase`.
    pub(crate) fn reached(&self, phase: Phase) -> u64 {
        self.counts(phase).0
    }

    /// How many requests the dependency failed during `phase`.
    pub(crate) fn failed(&self, phase: Phase) -> u64 {
        self.counts(phase).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_splits_the_duration_in_order() {
        let schedule = Schedule::new(Duration::from_secs(20));
        assert_eq!(schedule.phase_at(Duration::ZERO), Phase::Healthy);
        assert_eq!(schedule.start(Phase::Failing), Duration::from_secs(3));
        assert_eq!(schedule.phase_at(Duration::from_secs(3)), Phase::Failing);
        assert_eq!(schedule.phase_at(Duration::from_secs(8)), Phase::Restarted);
        assert_eq!(schedule.phase_at(Duration::from_secs(11)), Phase::Slow);
        assert_eq!(schedule.end(Phase::Slow), Duration::from_secs(14));
        assert_eq!(
            schedule.phase_at(Duration::from_secs(19)),
            Phase::Recovering
        );
        assert_eq!(
            schedule.phase_at(Duration::from_secs(99)),
            Phase::Recovering
        );
        assert_eq!(schedule.end(Phase::Recovering), Duration::from_secs(20));
    }
}
