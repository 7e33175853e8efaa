//! Sliding windows of call outcomes, striped per core.
//!
//! A window is a ring of `buckets`. Each thread writes to its own *stripe* (a
//! cache-line-aligned copy of the ring), so concurrent callers on different
//! cores never write to the same cache line; the first `2 × cores` threads own
//! their stripe and update it with plain stores. Reading a time window sums
//! the stripes' buckets of the last span; reading a count window merges the
//! stripes' buckets from the most recently written back until it has the
//! window's calls. Recording is O(1) and allocation-free; evaluating is
//! O(stripes × buckets), independent of the number of calls.
//!
//! Every bucket is tagged with the breaker epoch it belongs to, so a transition
//! starts a fresh window without touching the counters: buckets of an older
//! epoch simply stop counting and are reset lazily when next written.

use std::fmt;
use std::time::Duration;

use crate::clock::ClockHandle;
use crate::sync::{
    exclusive_stripes, stripe_index, AtomicU32, AtomicU64, CachePadded, Ordering, EXCLUSIVE,
    SHARED_STRIPES,
};
use crate::ConfigError;

/// Which calls a breaker's trip rules look at.
///
/// ```
/// use ripcord::Window;
/// use std::time::Duration;
///
/// let last_100_calls = Window::count(100);
/// let last_10_seconds = Window::time(Duration::from_secs(10)).buckets(20);
/// # let _ = (last_100_calls, last_10_seconds);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    kind: WindowKind,
    buckets: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowKind {
    Count(u32),
    Time(Duration),
}

/// Largest count window, in calls.
pub const MAX_COUNT_WINDOW: u32 = 1_000_000;
/// Largest number of buckets in a window.
pub const MAX_BUCKETS: u32 = 1_000;

impl Window {
    /// The last `calls` calls, kept in buckets of `calls / buckets` calls
    /// (rounded up; `N` below is the bucket size times the bucket count).
    ///
    /// **The window is exact only with one call per bucket.** By default a
    /// window of up to 32 calls has one bucket per call, so it holds exactly
    /// the last `calls` calls; a larger one has 10 buckets, and the oldest
    /// bucket is dropped whole when a new one starts. With one thread calling,
    /// such a window holds between `N − N/buckets + 1` and `N` of the last
    /// calls (e.g. 91 to 100 for `Window::count(100)`): the full buckets
    /// before the current one, plus the calls made so far in the current one.
    /// Ask for `.buckets(calls)` (up to 1000) to make a larger window exact;
    /// evaluating it then costs more.
    ///
    /// Each thread fills buckets of its own (no write is shared between
    /// threads); reading the window merges every thread's buckets from the
    /// most recently written back, a whole bucket at a time, until it holds
    /// at least `N` calls. So with several threads the window holds at most
    /// `N + N/buckets − 1` calls, and at least `N − N/buckets + 1` (or every
    /// call still in the threads' buckets, if fewer); a thread that stops
    /// calling has its old outcomes pushed out by the others' newer ones.
    pub const fn count(calls: u32) -> Window {
        Window {
            kind: WindowKind::Count(calls),
            buckets: None,
        }
    }

    /// The calls that finished during the last `span`, in buckets of
    /// `span / buckets` (10 buckets by default). A bucket drops out of the
    /// window whole once it is older than `span`.
    pub const fn time(span: Duration) -> Window {
        Window {
            kind: WindowKind::Time(span),
            buckets: None,
        }
    }

    /// Sets the number of buckets (1 to 1000): more buckets slide more
    /// smoothly, fewer make evaluation cheaper.
    pub const fn buckets(mut self, buckets: u32) -> Window {
        self.buckets = Some(buckets);
        self
    }

    pub(crate) fn bucket_count(&self) -> u32 {
        match (self.kind, self.buckets) {
            (_, Some(b)) => b,
            (WindowKind::Count(n), None) if n <= 32 => n.max(1),
            _ => 10,
        }
    }

    /// The most calls the window holds from a single stripe (count windows).
    pub(crate) fn capacity(&self) -> Option<u64> {
        match self.kind {
            WindowKind::Count(n) => {
                let b = self.bucket_count().max(1);
                Some(u64::from(n.div_ceil(b)) * u64::from(b))
            }
            WindowKind::Time(_) => None,
        }
    }

    pub(crate) fn is_time(&self) -> bool {
        matches!(self.kind, WindowKind::Time(_))
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let b = self.bucket_count();
        if !(1..=MAX_BUCKETS).contains(&b) {
            return Err(ConfigError::new("window.buckets", b, "1 to 1000 buckets"));
        }
        match self.kind {
            WindowKind::Count(n) => {
                if !(1..=MAX_COUNT_WINDOW).contains(&n) {
                    return Err(ConfigError::new(
                        "window.count",
                        n,
                        "a count window of 1 to 1000000 calls",
                    ));
                }
                if b > n {
                    return Err(ConfigError::new(
                        "window.buckets",
                        b,
                        "at most as many buckets as calls in the count window",
                    ));
                }
            }
            WindowKind::Time(span) => {
                if span < Duration::from_millis(1) || span > Duration::from_secs(86_400) {
                    return Err(ConfigError::new(
                        "window.time",
                        span,
                        "a time window from 1ms to 24h",
                    ));
                }
                if span / b < Duration::from_micros(100) {
                    return Err(ConfigError::new(
                        "window.buckets",
                        b,
                        "buckets of at least 100µs (span / buckets)",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Default for Window {
    /// The last 100 calls.
    fn default() -> Self {
        Window::count(100)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Window {
    /// `{ count = 100 }` or `{ time = "10s", buckets = 20 }`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Repr {
            count: Option<u32>,
            #[serde(default, with = "crate::duration::option")]
            time: Option<Duration>,
            buckets: Option<u32>,
        }
        let r = Repr::deserialize(d)?;
        let w = match (r.count, r.time) {
            (Some(n), None) => Window::count(n),
            (None, Some(t)) => Window::time(t),
            _ => {
                return Err(serde::de::Error::custom(
                    "a window needs exactly one of `count` (calls) or `time` (a duration)",
                ))
            }
        };
        Ok(match r.buckets {
            Some(b) => w.buckets(b),
            None => w,
        })
    }
}

/// Number of latency histogram buckets: log-linear, 4 per power of two of
/// microseconds, from 1µs to about 18 minutes.
pub(crate) const LATENCY_BUCKETS: usize = 116;

fn latency_index(nanos: u64) -> usize {
    let us = (nanos / 1_000).min(1 << 30);
    if us < 4 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize; // e ≥ 2
    let sub = ((us >> (e - 2)) & 3) as usize;
    (4 + (e - 2) * 4 + sub).min(LATENCY_BUCKETS - 1)
}

/// Upper bound, in microseconds, of a histogram bucket.
fn latency_upper_us(idx: usize) -> u64 {
    if idx < 4 {
        return idx as u64 + 1;
    }
    let e = (idx - 4) / 4 + 2;
    let sub = ((idx - 4) % 4) as u64;
    (5 + sub) << (e - 2)
}

/// Statistics of a breaker's window at one moment: what trip rules, including
/// a custom predicate, decide on.
#[derive(Clone, PartialEq, Eq)]
pub struct WindowStats {
    calls: u64,
    failures: u64,
    slow: u64,
    latency: Option<[u32; LATENCY_BUCKETS]>,
}

impl WindowStats {
    pub(crate) fn empty(with_latency: bool) -> Self {
        WindowStats {
            calls: 0,
            failures: 0,
            slow: 0,
            latency: with_latency.then_some([0; LATENCY_BUCKETS]),
        }
    }

    /// Builds statistics from counts, e.g. to unit-test a custom trip predicate.
    /// `latencies` (if given) are recorded into the latency histogram.
    pub fn from_counts(
        calls: u64,
        failures: u64,
        slow: u64,
        latencies: Option<&[Duration]>,
    ) -> Self {
        let mut s = WindowStats {
            calls,
            failures: failures.min(calls),
            slow: slow.min(calls),
            latency: None,
        };
        if let Some(ls) = latencies {
            let mut h = [0u32; LATENCY_BUCKETS];
            for l in ls {
                let i = latency_index(u64::try_from(l.as_nanos()).unwrap_or(u64::MAX));
                h[i] = h[i].saturating_add(1);
            }
            s.latency = Some(h);
        }
        s
    }

    /// Adds another window's counts (e.g. the rest of the fleet's).
    #[cfg(feature = "tokio")]
    pub(crate) fn add_counts(&mut self, calls: u64, failures: u64, slow: u64) {
        self.calls += calls;
        self.failures = (self.failures + failures).min(self.calls);
        self.slow = (self.slow + slow).min(self.calls);
    }

    /// Calls counted (successes and failures; ignored calls are not counted).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Failed calls.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Successful calls.
    pub fn successes(&self) -> u64 {
        self.calls - self.failures
    }

    /// Calls slower than the slow-call threshold (successes and failures).
    pub fn slow(&self) -> u64 {
        self.slow
    }

    /// `failures / calls`, 0 when there were no calls.
    pub fn failure_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 / self.calls as f64
        }
    }

    /// `slow / calls`, 0 when there were no calls.
    pub fn slow_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.slow as f64 / self.calls as f64
        }
    }

    /// The `q`-quantile (0 ≤ q ≤ 1, e.g. 0.9 for p90) of call latencies, as the
    /// upper bound of its histogram bucket (within 25 % of the true value).
    ///
    /// `None` when there were no calls or the breaker keeps no latency
    /// histogram (it keeps one when a custom trip rule is set, or when asked
    /// with `latency_histogram(true)`).
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let h = self.latency.as_ref()?;
        let total: u64 = h.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in h.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(Duration::from_micros(latency_upper_us(i)));
            }
        }
        Some(Duration::from_micros(latency_upper_us(LATENCY_BUCKETS - 1)))
    }
}

impl fmt::Debug for WindowStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowStats")
            .field("calls", &self.calls)
            .field("failures", &self.failures)
            .field("slow", &self.slow)
            .field("failure_rate", &self.failure_rate())
            .field("slow_rate", &self.slow_rate())
            .field("p50", &self.latency_quantile(0.5))
            .field("p90", &self.latency_quantile(0.9))
            .field("p99", &self.latency_quantile(0.99))
            .finish()
    }
}

/// One bucket of one stripe.
#[derive(Default)]
#[repr(align(32))]
struct Slot {
    /// `epoch(16) << 48 | bucket number(48)`.
    tag: AtomicU64,
    /// `failures << 32 | calls`.
    counts: AtomicU64,
    slow: AtomicU64,
    /// Count windows: when the bucket was last written (clock nanos), to
    /// order the stripes' buckets from newest to oldest.
    last: AtomicU64,
}

/// Padding slots between stripes (4 × 32 bytes = 128 bytes), so no cache
/// line (or adjacent-line prefetch pair) holds slots of two stripes.
const STRIPE_GAP: usize = 4;

const TAG_BUCKET_BITS: u32 = 48;
const TAG_BUCKET_MASK: u64 = (1 << TAG_BUCKET_BITS) - 1;

fn tag(epoch: u64, bucket: u64) -> u64 {
    ((epoch << TAG_BUCKET_BITS) | (bucket & TAG_BUCKET_MASK)) & !CLAIMING_BIT
}

/// Marks a slot being cleared. Tags never have this bit: it would take 2^15
/// epochs for one to reach it, and [`tag`] masks it off.
const CLAIMING_BIT: u64 = 1 << 63;
const CLAIMING: u64 = u64::MAX;

/// Whether tag `a` is for a later epoch, or a later bucket of the same epoch,
/// than tag `b` (epochs compared with wrap-around).
fn newer(a: u64, b: u64) -> bool {
    let (ea, eb) = ((a >> TAG_BUCKET_BITS) as u16, (b >> TAG_BUCKET_BITS) as u16);
    if ea != eb {
        // 15-bit wrap-around comparison (the top bit is the claiming bit).
        let d = ea.wrapping_sub(eb) & 0x7FFF;
        return d != 0 && d < 0x4000;
    }
    (a & TAG_BUCKET_MASK) > (b & TAG_BUCKET_MASK)
}

/// The live counters of a window.
pub(crate) struct WindowState {
    /// Time windows: `ceil(2^64 / bucket width)`, so a bucket number is a
    /// multiply and a shift rather than a division (0 for count windows).
    time_recip: u64,
    count_bucket_size: u32,
    /// Buckets in the window.
    buckets: usize,
    /// The ring holding them: a power of two, so a slot index is a mask.
    ring_mask: usize,
    /// Slots from one stripe's ring to the next (ring + gap).
    stride: usize,
    stripes: usize,
    slots: Box<[Slot]>,
    latency: Option<Box<[AtomicU32]>>,
    /// Count windows: each stripe's current bucket number. Every stripe keeps
    /// its own sequence, so no write is shared between threads.
    cursors: Box<[CachePadded<AtomicU64>]>,
    /// Count windows: the calls the window holds (buckets × bucket size).
    capacity: u64,
    /// Count windows: stamps buckets with the time of their last write.
    clock: ClockHandle,
}

/// Stripes per window: one per thread that owns one, plus the shared ones.
fn stripe_count() -> usize {
    exclusive_stripes() + SHARED_STRIPES
}

impl WindowState {
    pub(crate) fn new(window: &Window, latency: bool, clock: ClockHandle) -> Self {
        let buckets = window.bucket_count().max(1) as usize;
        let ring = buckets.next_power_of_two();
        let stripes = stripe_count();
        let stride = ring + STRIPE_GAP;
        let slots = (0..stripes * stride).map(|_| Slot::default()).collect();
        let latency = latency.then(|| {
            (0..stripes * ring * LATENCY_BUCKETS)
                .map(|_| AtomicU32::new(0))
                .collect()
        });
        let (time_recip, count_bucket_size) = match window.kind {
            WindowKind::Time(span) => {
                // Validation keeps a bucket at least 100µs wide, so the
                // reciprocal fits in 64 bits.
                let width =
                    (u64::try_from(span.as_nanos()).unwrap_or(u64::MAX) / buckets as u64).max(2);
                ((u64::MAX / width).saturating_add(1), 0)
            }
            WindowKind::Count(n) => (0, n.div_ceil(buckets as u32).max(1)),
        };
        WindowState {
            time_recip,
            count_bucket_size,
            buckets,
            ring_mask: ring - 1,
            stride,
            stripes,
            slots,
            latency,
            cursors: (0..stripes)
                .map(|_| CachePadded(AtomicU64::new(0)))
                .collect(),
            capacity: u64::from(count_bucket_size) * buckets as u64,
            clock,
        }
    }

    #[inline]
    fn slot(&self, stripe: usize, bucket: u64) -> &Slot {
        &self.slots[stripe * self.stride + (bucket as usize & self.ring_mask)]
    }

    /// Time windows: ⌊now / width⌋, or one more just below a bucket boundary:
    /// the same monotonic function for writers and readers.
    #[inline]
    fn time_bucket(&self, now: u64) -> u64 {
        ((u128::from(now) * u128::from(self.time_recip)) >> 64) as u64
    }

    /// Count windows: the slot this stripe writes now, starting the stripe's
    /// next bucket when its current one is full. `None` if the call is too old
    /// to count.
    #[inline]
    fn count_slot(&self, stripe: usize, exclusive: bool, epoch: u64) -> Option<(u64, &Slot)> {
        let cursor = &self.cursors[stripe];
        let mut bucket = cursor.load(Ordering::Relaxed);
        let mut slot = self.slot(stripe, bucket);
        let mut want = tag(epoch, bucket);
        let mut have = slot.tag.load(Ordering::Acquire);
        if have == want && (slot.counts.load(Ordering::Relaxed) as u32) >= self.count_bucket_size {
            let next = bucket + 1;
            bucket = if exclusive {
                cursor.store(next, Ordering::Relaxed);
                next
            } else {
                match cursor.compare_exchange(bucket, next, Ordering::AcqRel, Ordering::Relaxed) {
                    Ok(_) => next,
                    Err(actual) => actual,
                }
            };
            slot = self.slot(stripe, bucket);
            want = tag(epoch, bucket);
            have = slot.tag.load(Ordering::Acquire);
        }
        if have != want && !self.claim(slot, have, want, stripe, bucket) {
            return None;
        }
        Some((bucket, slot))
    }

    /// Makes `slot` belong to `want`, clearing it if it held an older bucket.
    /// Returns false if the slot holds a *newer* bucket or epoch (the caller's
    /// call is then too old to count).
    ///
    /// The slot is locked while it is cleared, so a concurrent writer on the
    /// same stripe never adds to counters that are about to be zeroed.
    #[cold]
    fn claim(&self, slot: &Slot, mut have: u64, want: u64, stripe: usize, bucket: u64) -> bool {
        loop {
            if have == want {
                return true;
            }
            if have == CLAIMING {
                std::hint::spin_loop();
                #[cfg(loom)]
                loom::thread::yield_now();
                have = slot.tag.load(Ordering::Acquire);
                continue;
            }
            if newer(have, want) {
                return false;
            }
            match slot
                .tag
                .compare_exchange(have, CLAIMING, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    slot.counts.store(0, Ordering::Relaxed);
                    slot.slow.store(0, Ordering::Relaxed);
                    if let Some(h) = &self.latency {
                        let base = self.latency_base(stripe, bucket);
                        for c in &h[base..base + LATENCY_BUCKETS] {
                            c.store(0, Ordering::Relaxed);
                        }
                    }
                    slot.tag.store(want, Ordering::Release);
                    return true;
                }
                Err(actual) => have = actual,
            }
        }
    }

    fn latency_base(&self, stripe: usize, bucket: u64) -> usize {
        (stripe * (self.ring_mask + 1) + (bucket as usize & self.ring_mask)) * LATENCY_BUCKETS
    }

    /// Records one counted call of epoch `epoch` that finished at `now`.
    #[inline]
    pub(crate) fn record(&self, epoch: u64, now: u64, failure: bool, slow: bool, nanos: u64) {
        let st = stripe_index();
        let exclusive = st & EXCLUSIVE != 0;
        let stripe = st & !EXCLUSIVE;
        let (bucket, slot) = if self.time_recip != 0 {
            let bucket = self.time_bucket(now);
            let slot = self.slot(stripe, bucket);
            let want = tag(epoch, bucket);
            let have = slot.tag.load(Ordering::Acquire);
            if have != want && !self.claim(slot, have, want, stripe, bucket) {
                return;
            }
            (bucket, slot)
        } else {
            match self.count_slot(stripe, exclusive, epoch) {
                Some(found) => found,
                None => return,
            }
        };
        if self.time_recip == 0 {
            slot.last.store(self.clock.now_nanos(), Ordering::Relaxed);
        }
        let inc = 1 | (u64::from(failure) << 32);
        if exclusive {
            // Only this thread writes this stripe: no read-modify-write needed.
            let c = slot.counts.load(Ordering::Relaxed);
            slot.counts.store(c.wrapping_add(inc), Ordering::Relaxed);
            if slow {
                let c = slot.slow.load(Ordering::Relaxed);
                slot.slow.store(c + 1, Ordering::Relaxed);
            }
            if let Some(h) = &self.latency {
                let c = &h[self.latency_base(stripe, bucket) + latency_index(nanos)];
                c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
            }
        } else {
            slot.counts.fetch_add(inc, Ordering::Relaxed);
            if slow {
                slot.slow.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(h) = &self.latency {
                h[self.latency_base(stripe, bucket) + latency_index(nanos)]
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records a success of epoch `epoch` that finished at `now` with plain
    /// stores, if it can: the calling thread owns its stripe, the window
    /// keeps no latency histogram, and the call goes into the bucket the
    /// stripe is filling (a time window's current bucket, already started; a
    /// count window's current bucket, not full). Returns false, having
    /// changed nothing, otherwise: [`record`](Self::record) then does it.
    #[inline(always)]
    pub(crate) fn record_success(&self, epoch: u64, now: u64) -> bool {
        let st = stripe_index();
        if st & EXCLUSIVE == 0 || self.latency.is_some() {
            return false;
        }
        let stripe = st & !EXCLUSIVE;
        let slot = if self.time_recip != 0 {
            let bucket = self.time_bucket(now);
            let slot = self.slot(stripe, bucket);
            if slot.tag.load(Ordering::Acquire) != tag(epoch, bucket) {
                return false;
            }
            slot
        } else {
            let cursor = &self.cursors[stripe];
            let bucket = cursor.load(Ordering::Relaxed);
            let slot = self.slot(stripe, bucket);
            if slot.tag.load(Ordering::Acquire) != tag(epoch, bucket) {
                return false;
            }
            if slot.counts.load(Ordering::Relaxed) as u32 >= self.count_bucket_size {
                return self.record_success_in_next(stripe, epoch, bucket);
            }
            slot.last.store(self.clock.now_nanos(), Ordering::Relaxed);
            slot
        };
        // Only this thread writes this stripe: no read-modify-write needed.
        let c = slot.counts.load(Ordering::Relaxed);
        slot.counts.store(c.wrapping_add(1), Ordering::Relaxed);
        true
    }

    /// Count windows, [`record_success`](Self::record_success) of an
    /// exclusive stripe whose bucket `bucket` is full: starts the next one
    /// and records there (false, having changed nothing, if the next slot
    /// holds a newer bucket or epoch).
    #[cold]
    #[inline(never)]
    fn record_success_in_next(&self, stripe: usize, epoch: u64, bucket: u64) -> bool {
        let next = bucket + 1;
        let slot = self.slot(stripe, next);
        let want = tag(epoch, next);
        let have = slot.tag.load(Ordering::Acquire);
        if have != want {
            if newer(have, want) {
                return false;
            }
            // This thread alone writes the stripe, so no other writer can
            // race the clearing (`claim` locks the slot against them): clear,
            // then publish the new tag. A reader that sees the tag sees the
            // cleared counters; the window keeps no latency histogram here.
            slot.counts.store(0, Ordering::Relaxed);
            slot.slow.store(0, Ordering::Relaxed);
            slot.tag.store(want, Ordering::Release);
        }
        self.cursors[stripe].store(next, Ordering::Relaxed);
        slot.last.store(self.clock.now_nanos(), Ordering::Relaxed);
        let c = slot.counts.load(Ordering::Relaxed);
        slot.counts.store(c.wrapping_add(1), Ordering::Relaxed);
        true
    }

    fn add_slot(&self, s: &mut WindowStats, slot: &Slot, stripe: usize, bucket: u64) {
        let c = slot.counts.load(Ordering::Relaxed);
        s.calls += c & 0xFFFF_FFFF;
        s.failures += c >> 32;
        s.slow += slot.slow.load(Ordering::Relaxed);
        if let (Some(h), Some(out)) = (&self.latency, s.latency.as_mut()) {
            let base = self.latency_base(stripe, bucket);
            for (o, c) in out.iter_mut().zip(&h[base..base + LATENCY_BUCKETS]) {
                *o = o.saturating_add(c.load(Ordering::Relaxed));
            }
        }
    }

    /// Sums the window of epoch `epoch` as of `now`.
    pub(crate) fn stats(&self, epoch: u64, now: u64) -> WindowStats {
        let mut s = WindowStats::empty(self.latency.is_some());
        if self.time_recip != 0 {
            let cur = self.time_bucket(now);
            let oldest = cur.saturating_sub(self.buckets as u64 - 1);
            for stripe in 0..self.stripes {
                for bucket in oldest..=cur {
                    let slot = self.slot(stripe, bucket);
                    if slot.tag.load(Ordering::Acquire) == tag(epoch, bucket) {
                        self.add_slot(&mut s, slot, stripe, bucket);
                    }
                }
            }
        } else {
            self.count_stats(&mut s, epoch);
        }
        s.failures = s.failures.min(s.calls);
        s.slow = s.slow.min(s.calls);
        s
    }

    /// Count windows: merges the stripes' buckets from the most recently
    /// written back, until the window's calls are reached. Each stripe's own
    /// buckets are in order, so this is a k-way merge, allocation-free.
    fn count_stats(&self, s: &mut WindowStats, epoch: u64) {
        const MAX: usize = 64;
        let stripes = self.stripes.min(MAX);
        let mut head = [0u64; MAX];
        let mut left = [0usize; MAX];
        for (i, (h, l)) in head
            .iter_mut()
            .zip(left.iter_mut())
            .take(stripes)
            .enumerate()
        {
            *h = self.cursors[i].load(Ordering::Relaxed);
            *l = self.buckets;
        }
        while s.calls < self.capacity {
            let mut best: Option<(usize, u64)> = None;
            for i in 0..stripes {
                if left[i] == 0 {
                    continue;
                }
                let slot = self.slot(i, head[i]);
                if slot.tag.load(Ordering::Acquire) != tag(epoch, head[i]) {
                    left[i] = 0; // older buckets of this stripe are older still
                    continue;
                }
                let t = slot.last.load(Ordering::Relaxed);
                if best.is_none_or(|(_, bt)| t > bt) {
                    best = Some((i, t));
                }
            }
            let Some((i, _)) = best else { break };
            self.add_slot(s, self.slot(i, head[i]), i, head[i]);
            left[i] -= 1;
            match head[i].checked_sub(1) {
                Some(b) => head[i] = b,
                None => left[i] = 0,
            }
        }
    }
}

impl fmt::Debug for WindowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowState")
            .field("buckets", &self.buckets)
            .field("stripes", &self.stripes)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            3,
            4,
            5,
            7,
            8,
            100,
            799,
            800,
            1_000,
            65_000,
            1 << 29,
        ] {
            let i = latency_index(us * 1000);
            assert!(i >= last, "index must not decrease");
            last = i;
            let upper = latency_upper_us(i);
            assert!(
                upper > us,
                "{us}µs must be below its bucket's upper bound {upper}"
            );
            assert!(
                upper as f64 <= (us as f64 * 1.25).max(us as f64 + 1.0),
                "{us} → {upper}"
            );
        }
    }

    #[test]
    fn quantiles_from_counts() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = WindowStats::from_counts(100, 0, 0, Some(&lat));
        let p90 = s.latency_quantile(0.9).unwrap();
        assert!(
            p90 >= Duration::from_millis(90) && p90 <= Duration::from_millis(113),
            "{p90:?}"
        );
        let p50 = s.latency_quantile(0.5).unwrap();
        assert!(
            p50 >= Duration::from_millis(50) && p50 <= Duration::from_millis(63),
            "{p50:?}"
        );
        assert_eq!(
            WindowStats::from_counts(0, 0, 0, None).latency_quantile(0.5),
            None
        );
        assert_eq!(
            WindowStats::from_counts(1, 0, 0, Some(&[])).latency_quantile(0.5),
            None
        );
    }

    #[test]
    fn count_window_keeps_the_last_n_calls() {
        let w = WindowState::new(&Window::count(4), false, ClockHandle::default());
        // 4 failures then 4 successes: the failures slide out one by one.
        for _ in 0..4 {
            w.record(0, 0, true, false, 0);
        }
        assert_eq!(w.stats(0, 0).failures(), 4);
        for i in 1..=4 {
            w.record(0, 0, false, false, 0);
            let s = w.stats(0, 0);
            assert_eq!((s.calls(), s.failures()), (4, 4 - i));
        }
    }

    #[test]
    fn a_large_count_window_holds_between_n_minus_a_bucket_and_n_calls() {
        // Window::count(100): 10 buckets of 10; one thread.
        let w = WindowState::new(&Window::count(100), false, ClockHandle::default());
        for i in 1..=100u64 {
            w.record(0, 0, true, false, 0);
            assert_eq!(w.stats(0, 0).calls(), i, "below N, every call counts");
        }
        for i in 1..=250u64 {
            w.record(0, 0, false, false, 0);
            let s = w.stats(0, 0);
            // The 9 full buckets before the current one, plus the current one's calls.
            let expected = 90 + (i - 1) % 10 + 1;
            assert_eq!(s.calls(), expected, "after {i} more calls");
            assert!((91..=100).contains(&s.calls()));
            // Every failure is older than the successes: they leave first.
            assert_eq!(s.failures(), expected.saturating_sub(i));
        }
        // One bucket per call makes it exact.
        let w = WindowState::new(
            &Window::count(100).buckets(100),
            false,
            ClockHandle::default(),
        );
        for _ in 0..250 {
            w.record(0, 0, false, false, 0);
            assert!(w.stats(0, 0).calls() <= 100);
        }
        assert_eq!(w.stats(0, 0).calls(), 100);
    }

    #[test]
    fn count_window_with_buckets_drops_a_bucket_at_a_time() {
        let w = WindowState::new(&Window::count(10).buckets(2), false, ClockHandle::default());
        for _ in 0..10 {
            w.record(0, 0, true, false, 0);
        }
        assert_eq!(w.stats(0, 0).calls(), 10);
        w.record(0, 0, false, false, 0);
        let s = w.stats(0, 0);
        assert_eq!((s.calls(), s.failures()), (6, 5));
    }

    #[test]
    fn count_window_merges_threads_newest_first() {
        let clock = crate::ManualClock::new();
        let w = WindowState::new(
            &Window::count(100).buckets(10),
            false,
            ClockHandle::from_clock(clock.clone()),
        );
        // A thread records 50 failures, then goes idle.
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..50 {
                    w.record(0, 0, true, false, 0);
                }
            });
        });
        clock.advance(Duration::from_millis(1));
        assert_eq!(w.stats(0, 0).failures(), 50);
        // Other threads' newer successes push the idle thread's failures out.
        for n in 1..=4 {
            std::thread::scope(|s| {
                s.spawn(|| {
                    for _ in 0..25 {
                        w.record(0, 0, false, false, 0);
                    }
                });
            });
            clock.advance(Duration::from_millis(1));
            let st = w.stats(0, 0);
            // Between N − one bucket and N (+ a partial bucket per stripe).
            assert!(
                st.calls() >= 90.min(50 + 25 * n) && st.calls() <= 110,
                "{st:?}"
            );
            if n == 4 {
                assert_eq!(st.failures(), 0, "100 newer calls: the old failures left");
            }
        }
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let sec = 1_000_000_000;
        let w = WindowState::new(
            &Window::time(Duration::from_secs(10)),
            true,
            ClockHandle::default(),
        );
        w.record(0, 0, true, true, 900_000_000);
        w.record(0, 5 * sec, false, false, 1_000_000);
        let s = w.stats(0, 9 * sec);
        assert_eq!((s.calls(), s.failures(), s.slow()), (2, 1, 1));
        let s = w.stats(0, 10 * sec);
        assert_eq!(
            (s.calls(), s.failures()),
            (1, 0),
            "bucket 0 has left the window"
        );
        let s = w.stats(0, 15 * sec);
        assert_eq!(s.calls(), 0);
        // A bucket reused after a full turn of the ring starts from zero.
        w.record(0, 20 * sec, false, false, 0);
        assert_eq!(w.stats(0, 20 * sec).calls(), 1);
    }

    #[test]
    fn a_new_epoch_starts_empty() {
        let w = WindowState::new(&Window::count(10), false, ClockHandle::default());
        w.record(3, 0, true, false, 0);
        assert_eq!(w.stats(3, 0).calls(), 1);
        assert_eq!(w.stats(4, 0).calls(), 0);
        w.record(4, 0, false, false, 0);
        assert_eq!(w.stats(4, 0).failures(), 0);
    }

    #[test]
    fn window_validation() {
        assert!(Window::count(0).validate().is_err());
        assert!(Window::count(2_000_000).validate().is_err());
        assert!(Window::count(5).buckets(6).validate().is_err());
        assert!(Window::count(5).buckets(0).validate().is_err());
        assert!(Window::time(Duration::ZERO).validate().is_err());
        assert!(Window::time(Duration::from_millis(10))
            .buckets(1000)
            .validate()
            .is_err());
        let e = Window::count(0).validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid `window.count` = 0: expected a count window of 1 to 1000000 calls"
        );
        assert!(Window::time(Duration::from_secs(10)).validate().is_ok());
        assert_eq!(Window::count(101).capacity(), Some(110));
        assert_eq!(Window::count(1000).bucket_count(), 10);
        assert_eq!(Window::count(20).bucket_count(), 20);
    }
}
