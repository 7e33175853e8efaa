//! A per-breaker record of the last minutes, one sample a second: what the
//! dashboard's sparklines draw as soon as a page opens.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use ripcord_metrics::{Metric, Metrics, Sample as MetricSample};
use serde::Serialize;

/// Samples kept per breaker: five minutes at one a second.
pub const HISTORY_SECONDS: usize = 300;

/// One second of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// When it was taken: Unix time in milliseconds.
    pub t: u64,
    /// The breaker's state then (`closed`, `open`, …).
    pub state: &'static str,
    /// Calls that ran through the breaker per second (successes and
    /// failures) since the previous sample.
    pub calls: f64,
    /// Failed calls per second since the previous sample.
    pub failures: f64,
    /// Calls the breaker rejected per second since the previous sample.
    pub rejected: f64,
    /// The window's failure rate then.
    pub failure_rate: f64,
    /// The window's slow-call rate then.
    pub slow_rate: f64,
}

/// Cumulative call counts of one breaker, as the metrics registry has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub(super) calls: u64,
    pub(super) failures: u64,
    pub(super) rejected: u64,
}

impl Totals {
    /// The counts of every breaker reported to `metrics`, by name.
    pub(super) fn read(metrics: &Metrics) -> HashMap<String, Totals> {
        let mut out: HashMap<String, Totals> = HashMap::new();
        metrics.collect(|metric, labels, sample| {
            let (Metric::Calls, [policy, name, outcome], MetricSample::Counter(n)) =
                (metric, labels, sample)
            else {
                return;
            };
            if *policy != "circuit_breaker" {
                return;
            }
            let t = out.entry((*name).to_string()).or_default();
            match *outcome {
                "success" | "slow" => t.calls += n,
                "failure" => {
                    t.calls += n;
                    t.failures += n;
                }
                "rejected" => t.rejected += n,
                _ => {}
            }
        });
        out
    }

    /// Per-second rates from `earlier` to `self` over `seconds`.
    pub(super) fn rates_since(&self, earlier: &Totals, seconds: f64) -> (f64, f64, f64) {
        let per_second = |now: u64, then: u64| {
            if seconds > 0.0 {
                now.saturating_sub(then) as f64 / seconds
            } else {
                0.0
            }
        };
        (
            per_second(self.calls, earlier.calls),
            per_second(self.failures, earlier.failures),
            per_second(self.rejected, earlier.rejected),
        )
    }
}

/// The samples of every breaker, newest last.
#[derive(Debug, Default)]
pub(super) struct History {
    samples: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl History {
    /// Appends `sample` to `name`'s record, dropping the oldest past
    /// [`HISTORY_SECONDS`].
    pub(super) fn record(&self, name: &str, sample: Sample) {
        let mut map = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let ring = map
            .entry(name.to_string())
            .or_insert_with(|| VecDeque::with_capacity(HISTORY_SECONDS));
        if ring.len() == HISTORY_SECONDS {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    /// Forgets breakers not in `names` (removed by a reload).
    pub(super) fn retain(&self, names: &[&str]) {
        let mut map = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| names.contains(&k.as_str()));
    }

    /// A copy of every record.
    pub(super) fn snapshot(&self) -> HashMap<String, Vec<Sample>> {
        let map = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(k, v)| (k.clone(), v.iter().copied().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: u64) -> Sample {
        Sample {
            t,
            state: "closed",
            calls: 1.0,
            failures: 0.0,
            rejected: 0.0,
            failure_rate: 0.0,
            slow_rate: 0.0,
        }
    }

    #[test]
    fn keeps_the_last_five_minutes() {
        let h = History::default();
        for t in 0..(HISTORY_SECONDS as u64 + 10) {
            h.record("a", sample(t));
        }
        let s = h.snapshot();
        assert_eq!(s["a"].len(), HISTORY_SECONDS);
        assert_eq!(s["a"][0].t, 10);
        assert_eq!(s["a"].last().map(|s| s.t), Some(HISTORY_SECONDS as u64 + 9));
    }

    #[test]
    fn forgets_removed_breakers() {
        let h = History::default();
        h.record("a", sample(1));
        h.record("b", sample(1));
        h.retain(&["b"]);
        let s = h.snapshot();
        assert!(!s.contains_key("a"));
        assert!(s.contains_key("b"));
    }

    #[test]
    fn rates_are_per_second_and_never_negative() {
        let then = Totals {
            calls: 10,
            failures: 2,
            rejected: 0,
        };
        let now = Totals {
            calls: 30,
            failures: 12,
            rejected: 4,
        };
        assert_eq!(now.rates_since(&then, 2.0), (10.0, 5.0, 2.0));
        // A counter that went back (a series replaced) reads as zero.
        assert_eq!(then.rates_since(&now, 1.0), (0.0, 0.0, 0.0));
        assert_eq!(now.rates_since(&then, 0.0), (0.0, 0.0, 0.0));
    }
}
