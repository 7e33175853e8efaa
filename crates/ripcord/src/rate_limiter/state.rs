//! GCRA, the generic cell rate algorithm: the decision as a pure function,
//! and the lock-free cell that applies it.

use crate::sync::{AtomicU64, CachePadded, Ordering};

/// The parameters of a GCRA rate limit, in nanoseconds.
///
/// The limiter's whole state is one number, the **theoretical arrival time**
/// (TAT): when the bucket would be empty again at the sustained rate. A call
/// at `now` conforms when `max(tat, now) + cost − burst·T ≤ now`, and then
/// moves the TAT to `max(tat, now) + cost`, where `T` is the
/// [`emission_interval`](Gcra::emission_interval) and `cost = n·T` for `n`
/// permits.
///
/// [`decide`](Gcra::decide) is a pure function of (state, now, parameters):
/// the in-memory limiter runs it in a compare-and-swap loop, and a shared
/// store can run the same arithmetic in one atomic script.
///
/// ```
/// use ripcord::rate_limiter::{Decision, Gcra};
/// use std::time::Duration;
///
/// // 10 per second, bursts of 2.
/// let gcra = Gcra::new(10, Duration::from_secs(1), 2);
/// let (d, tat) = gcra.decide(0, 0, 1, 0);
/// assert_eq!(d, Decision::Admit { wait: 0 });
/// let (d, tat) = gcra.decide(tat, 0, 1, 0);
/// assert_eq!(d, Decision::Admit { wait: 0 });
/// let (d, same) = gcra.decide(tat, 0, 1, 0);
/// assert_eq!(d, Decision::Reject { retry_after: 100_000_000 }); // 100 ms
/// assert_eq!(same, tat); // a refusal changes nothing
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gcra {
    /// `T`: nanoseconds between permits at the sustained rate.
    pub emission_interval: u64,
    /// Permits that may be taken at once after a quiet period (≥ 1).
    pub burst: u32,
}

/// The outcome of [`Gcra::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Admitted. The permits are the caller's after `wait` nanoseconds (zero:
    /// now); a non-zero wait is a reservation made within `max_wait`.
    Admit {
        /// Nanoseconds to wait before using the permits.
        wait: u64,
    },
    /// Refused; the permits would be available in `retry_after` nanoseconds
    /// (`u64::MAX` when more permits were asked for than the burst holds).
    Reject {
        /// Nanoseconds until the permits would be available.
        retry_after: u64,
    },
}

impl Gcra {
    /// `permits` per `period`, with bursts of `burst`. The emission interval
    /// is `period / permits` rounded to the nearest nanosecond (at least 1).
    pub fn new(permits: u32, period: std::time::Duration, burst: u32) -> Self {
        let period = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        let permits = u64::from(permits.max(1));
        let t = period / permits + u64::from(period % permits >= permits.div_ceil(2));
        Gcra {
            emission_interval: t.max(1),
            burst: burst.max(1),
        }
    }

    /// Decides a request for `n` permits at time `now`, given the theoretical
    /// arrival time `tat` (0 for a fresh limiter). Returns the decision and the
    /// new TAT (unchanged on a refusal).
    ///
    /// With `max_wait` > 0, a request that would conform within `max_wait` is
    /// admitted with that wait (the permits are reserved: the TAT moves now).
    pub fn decide(&self, tat: u64, now: u64, n: u32, max_wait: u64) -> (Decision, u64) {
        let t = self.emission_interval;
        let burst = t.saturating_mul(u64::from(self.burst));
        let cost = t.saturating_mul(u64::from(n));
        if cost > burst {
            return (
                Decision::Reject {
                    retry_after: u64::MAX,
                },
                tat,
            );
        }
        let new_tat = tat.max(now).saturating_add(cost);
        let allow_at = new_tat.saturating_sub(burst);
        if allow_at <= now {
            return (Decision::Admit { wait: 0 }, new_tat);
        }
        let wait = allow_at - now;
        if wait <= max_wait {
            (Decision::Admit { wait }, new_tat)
        } else {
            (Decision::Reject { retry_after: wait }, tat)
        }
    }
}

/// The limiter's state: the TAT, in nanoseconds on the limiter's clock.
pub(super) struct Cell {
    tat: CachePadded<AtomicU64>,
}

impl Cell {
    pub(super) fn new() -> Self {
        Cell {
            tat: CachePadded(AtomicU64::new(0)),
        }
    }

    /// Runs [`Gcra::decide`] atomically. Returns the decision, the TAT before
    /// and the TAT after.
    #[inline]
    pub(super) fn decide(&self, gcra: &Gcra, now: u64, max_wait: u64) -> (Decision, u64, u64) {
        let mut cur = self.tat.load(Ordering::Acquire);
        loop {
            let (decision, next) = gcra.decide(cur, now, 1, max_wait);
            if next == cur {
                return (decision, cur, cur);
            }
            match self
                .tat
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return (decision, cur, next),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives back a reservation that moved the TAT from `before` to `after`,
    /// if no later one was made since (else it stays spent).
    #[cfg(feature = "tokio")]
    pub(super) fn refund(&self, before: u64, after: u64) -> bool {
        self.tat
            .compare_exchange(after, before, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    pub(super) fn tat(&self) -> u64 {
        self.tat.load(Ordering::Acquire)
    }
}
