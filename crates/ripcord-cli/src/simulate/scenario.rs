//! Synthetic traces: phases of healthy, failing and slow traffic, seeded.
//!
//! A scenario is a comma-separated list of phases, each `KIND DURATION [@ PARAM]`:
//!
//! - `ok 60s`: healthy; latencies of 20 to 80 ms, every call succeeds.
//! - `fail 30s @ 80%`: each call fails with that probability (default 100 %),
//!   failures answer in 5 to 20 ms.
//! - `slow 20s @ 1.5s`: calls succeed but take about that long (±20 %).
//!
//! Calls arrive as a Poisson process of `rps` calls per second. The same
//! scenario, rate and seed give the same calls. `fail` and `slow` phases are
//! the scenario's outages.

use std::time::Duration;

use ripcord::Outcome;

use super::trace::Call;

/// What the dependency does during a phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PhaseKind {
    /// Healthy.
    Ok,
    /// Failing calls with this probability.
    Fail(f64),
    /// Slow calls of about this latency.
    Slow(Duration),
}

/// One phase of a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// What happens.
    pub kind: PhaseKind,
    /// For how long.
    pub duration: Duration,
}

/// A scenario that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("scenario phase {phase} (`{text}`): expected {expected}")]
pub struct ScenarioError {
    /// 1-based index of the bad phase.
    pub phase: usize,
    /// Its text.
    pub text: String,
    /// What was expected.
    pub expected: &'static str,
}

/// A parsed scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its phases, in order.
    pub phases: Vec<Phase>,
}

impl std::str::FromStr for Scenario {
    type Err = ScenarioError;

    fn from_str(s: &str) -> Result<Self, ScenarioError> {
        let mut phases = Vec::new();
        for (i, part) in s.split(',').enumerate() {
            let text = part.trim();
            let err = |expected| ScenarioError {
                phase: i + 1,
                text: text.to_owned(),
                expected,
            };
            let (head, param) = match text.split_once('@') {
                Some((h, p)) => (h.trim(), Some(p.trim())),
                None => (text, None),
            };
            let mut words = head.split_whitespace();
            let kind = words.next().ok_or_else(|| {
                err("a phase such as `ok 60s`, `fail 30s @ 80%` or `slow 20s @ 1.5s`")
            })?;
            let duration = words
                .next()
                .and_then(|d| humantime::parse_duration(d).ok())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| err("a duration after the kind, such as `60s`"))?;
            if words.next().is_some() {
                return Err(err("`KIND DURATION [@ PARAM]`"));
            }
            let kind = match (kind.to_ascii_lowercase().as_str(), param) {
                ("ok" | "healthy", None) => PhaseKind::Ok,
                ("fail" | "down", None) => PhaseKind::Fail(1.0),
                ("fail" | "down", Some(p)) => {
                    let rate = p
                        .strip_suffix('%')
                        .and_then(|n| n.trim().parse::<f64>().ok())
                        .map(|n| n / 100.0)
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| err("a failure rate such as `@ 80%`"))?;
                    PhaseKind::Fail(rate)
                }
                ("slow", Some(p)) => PhaseKind::Slow(
                    humantime::parse_duration(p)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| err("a latency such as `@ 1.5s`"))?,
                ),
                ("slow", None) => return Err(err("a latency for a slow phase, such as `@ 1.5s`")),
                ("ok" | "healthy", Some(_)) => return Err(err("no `@` parameter for an ok phase")),
                _ => return Err(err("a phase kind: ok, fail or slow")),
            };
            phases.push(Phase { kind, duration });
        }
        Ok(Scenario { phases })
    }
}

impl Scenario {
    /// The outages of the scenario: its `fail` and `slow` phases (adjacent
    /// ones merged), as (start, end) in nanoseconds.
    pub fn outages(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut t = 0u64;
        for p in &self.phases {
            let end = t + p.duration.as_nanos() as u64;
            if p.kind != PhaseKind::Ok {
                match out.last_mut() {
                    Some(last) if last.1 == t => last.1 = end,
                    _ => out.push((t, end)),
                }
            }
            t = end;
        }
        out
    }

    /// The calls of the scenario at `rps` calls per second, seeded.
    pub fn calls(&self, rps: f64, seed: u64) -> ScenarioCalls {
        ScenarioCalls {
            phases: self.phases.clone(),
            phase: 0,
            phase_end: self
                .phases
                .first()
                .map_or(0, |p| p.duration.as_nanos() as u64),
            now: 0.0,
            mean_gap: 1e9 / rps,
            rng: SplitMix64(seed ^ 0x5eed_5eed_5eed_5eed),
        }
    }
}

/// The calls of a [`Scenario`], generated lazily.
#[derive(Debug, Clone)]
pub struct ScenarioCalls {
    phases: Vec<Phase>,
    phase: usize,
    phase_end: u64,
    now: f64,
    mean_gap: f64,
    rng: SplitMix64,
}

impl Iterator for ScenarioCalls {
    type Item = Call;

    fn next(&mut self) -> Option<Call> {
        // Exponential inter-arrival times: a Poisson process.
        let u = self.rng.unit();
        self.now += -(1.0 - u).ln() * self.mean_gap;
        let start = self.now as u64;
        while start >= self.phase_end {
            self.phase += 1;
            let phase = self.phases.get(self.phase)?;
            self.phase_end += phase.duration.as_nanos() as u64;
        }
        let (latency_ms, outcome) = match self.phases[self.phase].kind {
            PhaseKind::Ok => (20.0 + 60.0 * self.rng.unit(), Outcome::Success),
            PhaseKind::Fail(rate) => {
                if self.rng.unit() < rate {
                    (5.0 + 15.0 * self.rng.unit(), Outcome::Failure)
                } else {
                    (20.0 + 60.0 * self.rng.unit(), Outcome::Success)
                }
            }
            PhaseKind::Slow(d) => (
                d.as_secs_f64() * 1e3 * (0.8 + 0.4 * self.rng.unit()),
                Outcome::Success,
            ),
        };
        Some(Call {
            start,
            latency: (latency_ms * 1e6) as u64,
            outcome,
        })
    }
}

/// A tiny, fast, seedable generator (SplitMix64); plenty for traffic shapes.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_example() {
        let s: Scenario = "ok 60s, fail 30s @ 80%, slow 20s @ 1.5s, ok 60s"
            .parse()
            .unwrap();
        assert_eq!(s.phases.len(), 4);
        assert_eq!(s.phases[1].kind, PhaseKind::Fail(0.8));
        assert_eq!(
            s.phases[2].kind,
            PhaseKind::Slow(Duration::from_millis(1500))
        );
        assert_eq!(s.outages(), vec![(60_000_000_000, 110_000_000_000)]);
        let calls: Vec<_> = s.calls(10.0, 7).collect();
        assert!((1500..1700).contains(&calls.len()), "{}", calls.len());
        assert!(calls.windows(2).all(|w| w[0].start <= w[1].start));
    }

    #[test]
    fn rejects_bad_phases() {
        let e = "ok 60s, explode 3s".parse::<Scenario>().unwrap_err();
        assert_eq!(e.phase, 2);
        assert!("fail 3s @ 180%".parse::<Scenario>().is_err());
        assert!("slow 3s".parse::<Scenario>().is_err());
    }
}
