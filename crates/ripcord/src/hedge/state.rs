//! A small lock-free latency histogram of recent successful calls.
//!
//! Latencies are kept in microseconds in log-linear buckets: exact below 8 µs,
//! then 8 buckets per power of two (at most 12.5 % wide), up to about 2 minutes;
//! longer calls land in the last bucket. Two generations of `window` each are
//! kept: the current one and the previous one, so quantiles look at between
//! one and two windows of history. Recording is two relaxed `fetch_add`s; at a
//! generation change the first writer clears the old generation (a few
//! concurrent samples may be lost then — quantiles are estimates anyway).

use std::time::Duration;

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Sub-buckets per power of two (as a shift).
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Highest power of two with its own buckets: 2^27 µs ≈ 134 s.
const MAX_EXP: u32 = 27;
pub(crate) const BUCKETS: usize = (SUB + (MAX_EXP - SUB_BITS + 1) as u64 * SUB) as usize;

/// Bucket of a latency in microseconds.
pub(crate) fn bucket(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let e = 63 - us.leading_zeros(); // ≥ SUB_BITS
    if e > MAX_EXP {
        return BUCKETS - 1;
    }
    let m = (us >> (e - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(e - SUB_BITS) * SUB + m) as usize
}

/// Lowest latency (µs) of a bucket.
pub(crate) fn lower(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let e = (b - SUB) / SUB + u64::from(SUB_BITS);
    let m = (b - SUB) % SUB;
    (SUB + m) << (e - u64::from(SUB_BITS))
}

/// Highest latency (µs, exclusive) of a bucket.
pub(crate) fn upper(b: usize) -> u64 {
    if b + 1 >= BUCKETS {
        // The overflow bucket: report its lower edge doubled.
        return lower(b) * 2;
    }
    lower(b + 1)
}

struct Generation {
    /// `window index + 1` this generation holds (0: never used).
    id: AtomicU64,
    total: AtomicU32,
    counts: Box<[AtomicU32]>,
}

impl Generation {
    fn new() -> Self {
        Generation {
            id: AtomicU64::new(0),
            total: AtomicU32::new(0),
            counts: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

pub(crate) struct LatencyHistogram {
    window: u64,
    gens: [Generation; 2],
    /// Cached quantile: the stamp it was computed at (+1; 0 = none) and its value.
    cache_stamp: AtomicU64,
    cache_value: AtomicU64,
    recorded: AtomicU64,
}

impl LatencyHistogram {
    pub(crate) fn new(window: Duration) -> Self {
        LatencyHistogram {
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX).max(1),
            gens: [Generation::new(), Generation::new()],
            cache_stamp: AtomicU64::new(0),
            cache_value: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
        }
    }

    /// Records the latency of a successful call at time `now` (clock nanos).
    pub(crate) fn record(&self, now: u64, latency: Duration) {
        let w = now / self.window;
        let gen = &self.gens[(w & 1) as usize];
        let id = gen.id.load(Ordering::Acquire);
        if id != w + 1 {
            if id > w + 1 {
                return; // a stale clock reading from before the generation began
            }
            if gen
                .id
                .compare_exchange(id, w + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                for c in gen.counts.iter() {
                    c.store(0, Ordering::Relaxed);
                }
                gen.total.store(0, Ordering::Relaxed);
            }
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        gen.counts[bucket(us)].fetch_add(1, Ordering::Relaxed);
        gen.total.fetch_add(1, Ordering::Relaxed);
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// The generations that are recent at `now`: the current one and the one
    /// before it.
    fn recent(&self, now: u64) -> impl Iterator<Item = &Generation> {
        let w = now / self.window;
        self.gens.iter().filter(move |g| {
            let id = g.id.load(Ordering::Acquire);
            id == w + 1 || (w > 0 && id == w)
        })
    }

    /// Samples in the recent generations.
    pub(crate) fn samples(&self, now: u64) -> u64 {
        self.recent(now)
            .map(|g| u64::from(g.total.load(Ordering::Relaxed)))
            .sum()
    }

    /// The `q`-quantile of recent latencies, if there are at least
    /// `min_samples` of them. Recomputed at most once per 16 new samples or
    /// generation change.
    pub(crate) fn quantile(&self, now: u64, q: f64, min_samples: u64) -> Option<Duration> {
        let total = self.samples(now);
        if total == 0 || total < min_samples {
            return None;
        }
        let stamp = ((now / self.window) << 24 ^ (self.recorded.load(Ordering::Relaxed) >> 4))
            .wrapping_add(1);
        if self.cache_stamp.load(Ordering::Acquire) == stamp {
            return Some(Duration::from_micros(
                self.cache_value.load(Ordering::Relaxed),
            ));
        }
        let mut counts = [0u64; BUCKETS];
        let mut total = 0u64;
        for g in self.recent(now) {
            for (sum, c) in counts.iter_mut().zip(g.counts.iter()) {
                let n = u64::from(c.load(Ordering::Relaxed));
                *sum += n;
                total += n;
            }
        }
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let mut us = upper(BUCKETS - 1);
        for (b, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                us = upper(b);
                break;
            }
        }
        self.cache_value.store(us, Ordering::Relaxed);
        self.cache_stamp.store(stamp, Ordering::Release);
        Some(Duration::from_micros(us))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        for b in 0..BUCKETS - 1 {
            assert_eq!(upper(b), lower(b + 1));
            assert!(lower(b) < upper(b));
            assert_eq!(bucket(lower(b)), b);
            assert_eq!(bucket(upper(b) - 1), b);
        }
        for us in [0, 1, 7, 8, 9, 15, 16, 100, 1_000, 99_999, 100_000, 1 << 27] {
            let b = bucket(us);
            assert!(lower(b) <= us && us < upper(b), "{us} in bucket {b}");
            // At most 12.5 % wide.
            assert!((upper(b) - lower(b)) * 8 <= lower(b).max(8), "{us}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_recent_samples() {
        let h = LatencyHistogram::new(Duration::from_secs(10));
        let ms = Duration::from_millis(1);
        assert_eq!(h.quantile(0, 0.9, 1), None);
        for i in 1..=100u32 {
            h.record(0, ms * i);
        }
        let p90 = h.quantile(0, 0.9, 20).unwrap();
        assert!(p90 >= ms * 90 && p90 <= ms * 90 * 9 / 8, "{p90:?}");
        assert_eq!(h.quantile(0, 0.9, 101), None, "too few samples");
        // One window later the samples still count (previous generation)...
        let t1 = 10_000_000_000;
        assert_eq!(h.samples(t1), 100);
        // ...two windows later they are gone.
        assert_eq!(h.samples(2 * t1), 0);
        h.record(2 * t1, ms);
        assert_eq!(h.samples(2 * t1), 1);
        let q = h.quantile(2 * t1, 0.5, 1).unwrap();
        assert!(q <= ms * 9 / 8, "{q:?}");
    }
}
