//! The retry budget: retries may not exceed a share of calls.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::ClockHandle;
use crate::sync::{AtomicU64, Ordering};
use crate::{Clock, ConfigError};

/// Buckets the window is divided into.
const BUCKETS: usize = 10;
/// Fixed-point unit: one retry costs `SCALE`; one call earns `ratio × SCALE`.
const SCALE: i64 = 1000;

/// The data part of a retry budget's configuration. Deserializable (feature
/// `serde`):
///
/// ```toml
/// ratio = 0.2           # retries may add 20 % to the calls of the last window…
/// min_per_second = 10   # …plus 10 retries a second, for low traffic
/// window = "10s"
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RetryBudgetConfig {
    /// Retries allowed per call made (0 to 100; default 0.2: retries add at
    /// most 20 % to the load).
    pub ratio: f64,
    /// Retries allowed per second whatever the traffic (default 10), so that
    /// a service with few calls can still retry.
    pub min_per_second: u32,
    /// How long a call's deposit counts (100 ms to 1 h; default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "crate::duration"))]
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

impl RetryBudgetConfig {
    /// Checks every field; `nested` names them as fields of a retry
    /// configuration (`budget.ratio`).
    pub(crate) fn validate_as(&self, nested: bool) -> Result<(), ConfigError> {
        let f = |plain: &'static str, in_retry: &'static str| if nested { in_retry } else { plain };
        if !(self.ratio.is_finite() && (0.0..=100.0).contains(&self.ratio)) {
            return Err(ConfigError::new(
                f("ratio", "budget.ratio"),
                self.ratio,
                "a share of calls in [0, 100]",
            ));
        }
        if self.min_per_second > 1_000_000 {
            return Err(ConfigError::new(
                f("min_per_second", "budget.min_per_second"),
                self.min_per_second,
                "0 to 1000000 retries a second",
            ));
        }
        if self.window < Duration::from_millis(100) || self.window > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                f("window", "budget.window"),
                self.window,
                "a window from 100ms to 1h",
            ));
        }
        if self.ratio == 0.0 && self.min_per_second == 0 {
            return Err(ConfigError::new(
                f("ratio", "budget.ratio"),
                self.ratio,
                "a ratio above 0 when min_per_second is 0 (else no retry is ever allowed)",
            ));
        }
        Ok(())
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_as(false)
    }
}

/// A retry budget, like Finagle's and linkerd's: every call **deposits**
/// `ratio` of a retry, every retry **withdraws** one, and deposits expire after
/// `window`; on top of that, `min_per_second × window` retries are always
/// available. So over any window, retries ≤ `ratio × calls + min_per_second ×
/// window`, and a failing dependency never sees its load multiplied by the
/// number of attempts.
///
/// Cheap to clone; clones share one budget, so several [`Retry`](crate::Retry)
/// policies (say, one per endpoint of the same dependency) can share it.
/// Lock-free: a deposit is one compare-and-swap on the current bucket.
///
/// ```
/// use ripcord::{ManualClock, RetryBudget};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let budget = RetryBudget::builder()
///     .ratio(0.1)
///     .min_per_second(0)
///     .window(Duration::from_secs(10))
///     .clock(clock.clone())
///     .build()?;
///
/// for _ in 0..20 {
///     budget.deposit(); // 20 calls…
/// }
/// assert!(budget.try_withdraw()); // …fund 2 retries
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw());
///
/// clock.advance(Duration::from_secs(10)); // the deposits (and withdrawals) expire
/// assert_eq!(budget.available(), 0);
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
///
/// # Precision
///
/// The window is kept as 10 buckets of `window / 10`; a deposit expires
/// between `0.9 × window` and `window` after it was made. Withdrawals are exact
/// under concurrency: two threads can never both take the last retry.
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    clock: ClockHandle,
    bucket_nanos: u64,
    reserve: i64,
    deposit: i32,
    config: RetryBudgetConfig,
    /// Per bucket: `slot << 32 | net` where `slot` is the bucket's time slot
    /// (truncated to 32 bits) and `net` (an `i32`) the deposits minus the
    /// withdrawals made in it, in `1 / SCALE` retries.
    buckets: [AtomicU64; BUCKETS],
}

fn pack(slot: u32, net: i32) -> u64 {
    (u64::from(slot) << 32) | u64::from(net as u32)
}

fn unpack(word: u64) -> (u32, i32) {
    ((word >> 32) as u32, word as u32 as i32)
}

impl RetryBudget {
    /// Starts building a budget (defaults: ratio 0.2, 10 a second, 10 s window).
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder {
            config: RetryBudgetConfig::default(),
            clock: ClockHandle::default(),
        }
    }

    pub(crate) fn from_config(config: RetryBudgetConfig, clock: ClockHandle) -> Self {
        let window = u64::try_from(config.window.as_nanos()).unwrap_or(u64::MAX);
        let reserve =
            (f64::from(config.min_per_second) * config.window.as_secs_f64() * SCALE as f64).round()
                as i64;
        RetryBudget {
            inner: Arc::new(Inner {
                clock,
                bucket_nanos: (window / BUCKETS as u64).max(1),
                reserve,
                deposit: (config.ratio * SCALE as f64).round() as i32,
                config,
                buckets: std::array::from_fn(|_| AtomicU64::new(pack(u32::MAX, 0))),
            }),
        }
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.inner.config
    }

    /// Records a call (not a retry): earns `ratio` of a retry.
    pub fn deposit(&self) {
        let inner = &*self.inner;
        if inner.deposit == 0 {
            return;
        }
        let (slot, bucket) = inner.current();
        let mut cur = bucket.load(Ordering::Relaxed);
        loop {
            let (s, net) = unpack(cur);
            let next = if s == slot {
                pack(slot, net.saturating_add(inner.deposit))
            } else {
                pack(slot, inner.deposit)
            };
            match bucket.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes one retry from the budget, if one is available.
    pub fn try_withdraw(&self) -> bool {
        let inner = &*self.inner;
        let (slot, bucket) = inner.current();
        let mut cur = bucket.load(Ordering::Acquire);
        loop {
            let (s, net) = unpack(cur);
            let own = if s == slot { net } else { 0 };
            // Buckets other than the current one change only when their slot
            // comes round again, i.e. not while `slot` is current: every
            // withdrawal of this slot is serialized by the CAS below.
            let balance = inner.reserve + inner.others(slot) + i64::from(own);
            if balance < SCALE {
                return false;
            }
            let next = pack(slot, own.saturating_sub(SCALE as i32));
            match bucket.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Retries available now.
    pub fn available(&self) -> u64 {
        let inner = &*self.inner;
        let (slot, bucket) = inner.current();
        let (s, net) = unpack(bucket.load(Ordering::Acquire));
        let own = if s == slot { i64::from(net) } else { 0 };
        let balance = inner.reserve + inner.others(slot) + own;
        u64::try_from(balance / SCALE).unwrap_or(0)
    }
}

impl Inner {
    /// The current slot (truncated) and its bucket.
    fn current(&self) -> (u32, &AtomicU64) {
        let slot = self.clock.now_nanos() / self.bucket_nanos;
        (slot as u32, &self.buckets[(slot % BUCKETS as u64) as usize])
    }

    /// The net of the live buckets other than the current slot's.
    fn others(&self, slot: u32) -> i64 {
        let mut sum = 0i64;
        for b in &self.buckets {
            let (s, net) = unpack(b.load(Ordering::Acquire));
            let age = slot.wrapping_sub(s);
            if age != 0 && (age as usize) < BUCKETS {
                sum += i64::from(net);
            }
        }
        sum
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.inner.config)
            .field("available", &self.available())
            .finish()
    }
}

/// Builds a [`RetryBudget`]; every value is checked by [`build`](Self::build).
///
/// ```
/// use ripcord::RetryBudget;
///
/// let err = RetryBudget::builder().ratio(-1.0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid `ratio` = -1.0: expected a share of calls in [0, 100]");
/// ```
#[must_use = "a builder does nothing until build() is called"]
#[derive(Debug, Clone)]
pub struct RetryBudgetBuilder {
    config: RetryBudgetConfig,
    clock: ClockHandle,
}

impl RetryBudgetBuilder {
    /// Replaces the whole data configuration, keeping the clock.
    pub fn config(mut self, config: RetryBudgetConfig) -> Self {
        self.config = config;
        self
    }

    /// Retries allowed per call (default 0.2).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.config.ratio = ratio;
        self
    }

    /// Retries allowed per second whatever the traffic (default 10).
    pub fn min_per_second(mut self, n: u32) -> Self {
        self.config.min_per_second = n;
        self
    }

    /// How long a deposit counts (default 10 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// The clock the window runs on (default [`SystemClock`](crate::SystemClock)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    /// Checks the configuration and builds the budget.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        self.config.validate()?;
        Ok(RetryBudget::from_config(self.config, self.clock))
    }
}
