//! The simulated dependency: a fake downstream service whose behaviour follows a
//! script of phases (healthy → failing → restarted → slow → recovering), with seeded randomness.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fast, seedable PRNG.
///
/// Its state is a counter advanced by a constant, so concurrent callers can share
/// one generator through a single atomic `fetch_add`, without a lock.
#[derive(Debug)]
pub(crate) struct SplitMix64 {
    /// The counter; each draw adds [`SplitMix64::GAMMA`].
    state: AtomicU64,
}

impl SplitMix64 {
    /// The golden-ratio increment of SplitMix64.
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 {
            state: AtomicU64::new(seed),
        }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(Self::GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw from `[0, 1)`.
    pub(crate) fn next_f64(&self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The error the simulated dependency answers with when a call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DependencyError {
    /// The phase the dependency was in when it failed.
    pub(crate) phase: Phase,
}

impl fmt::Display for DependencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "simulated dependency failed (phase: {})", self.phase)
    }
}

impl std::error::Error for DependencyError {}

/// A fake downstream service. It counts the calls that reach it, per phase.
#[derive(Debug)]
pub(crate) struct SimulatedDependency {
    /// When the demo started: phases are relative to it.
    started: Instant,
    /// Which phase is when.
    schedule: Schedule,
    /// Typical latency of a call while healthy or failing.
    fast_latency: Duration,
    /// Typical latency of a call during the slow phase.
    slow_latency: Duration,
    /// Seeded randomness for failures and latency jitter.
    rng: SplitMix64,
    /// Calls that reached the dependency, per phase.
    reached: [AtomicU64; Phase::COUNT],
    /// Calls that the dependency failed, per phase.
    failed: [AtomicU64; Phase::COUNT],
}

impl SimulatedDependency {
    /// A dependency that follows `schedule` from `started` on.
    pub(crate) fn new(
        started: Instant,
        schedule: Schedule,
        slow_latency: Duration,
        seed: u64,
    ) -> Self {
        SimulatedDependency {
            started,
            schedule,
            fast_latency: FAST_LATENCY,
            slow_latency,
            rng: SplitMix64::new(seed),
            reached: Default::default(),
            failed: Default::default(),
        }
    }

    /// The phase the dependency is in now.
    pub(crate) fn phase(&self) -> Phase {
        self.schedule.phase_at(self.started.elapsed())
    }

    /// Serves one call made during `phase` (read with [`phase`](Self::phase) just
    /// before): waits for the phase's latency (±20 % jitter), then succeeds or
    /// fails.
    pub(crate) async fn call(&self, phase: Phase) -> Result<(), DependencyError> {
        self.reached[phase.index()].fetch_add(1, Ordering::Relaxed);
        let typical = match phase {
            Phase::Slow => self.slow_latency,
            _ => self.fast_latency,
        };
        let latency = typical.mul_f64(0.8 + 0.4 * self.rng.next_f64());
        let fails = self.rng.next_f64() < phase.failure_probability();
        tokio::time::sleep(latency).await;
        if fails {
            self.failed[phase.index()].fetch_add(1, Ordering::Relaxed);
            Err(DependencyError { phase })
        } else {
            Ok(())
        }
    }

    /// How many calls reached the dependency during `phase`.
    pub(crate) fn reached(&self, phase: Phase) -> u64 {
        self.reached[phase.index()].load(Ordering::Relaxed)
    }

    /// How many calls the dependency failed during `phase`.
    pub(crate) fn failed(&self, phase: Phase) -> u64 {
        self.failed[phase.index()].load(Ordering::Relaxed)
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

    #[test]
    fn splitmix_is_seeded_and_uniform_enough() {
        let a = SplitMix64::new(7);
        let b = SplitMix64::new(7);
        let draws: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(draws, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(
            draws,
            (0..8)
                .map(|_| SplitMix64::new(8).next_u64())
                .collect::<Vec<_>>()
        );

        let rng = SplitMix64::new(3);
        let n = 10_000;
        let below = (0..n).filter(|_| rng.next_f64() < 0.8).count();
        assert!(
            (7_600..8_400).contains(&below),
            "{below} of {n} draws below 0.8"
        );
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs of the reference implementation seeded with 0.
        let rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
