//! Fault injection: delay, fail, reset or stall a share of the calls, to see
//! the other policies work before an incident does it for real.
//!
//! A [`Chaos`] policy decides, per call, whether to inject a **latency** (a
//! [`Latency`]: fixed, uniform or exponential) and at most one **fault**:
//!
//! | fault | the call | the caller gets | breakers outside record |
//! |---|---|---|---|
//! | `abort` | not made | [`Error::Injected`](crate::Error::Injected) (HTTP and gRPC layers: `abort_status`) | failure |
//! | `error` | not made | the pipeline's [`chaos_error`](crate::PipelineBuilder::chaos_error), else [`Error::Injected`](crate::Error::Injected) | as the classifier judges that error (failure without one) |
//! | `reset` | not made | HTTP and gRPC layers reset the connection; elsewhere [`Error::Injected`](crate::Error::Injected) | failure |
//! | `stall` | not made | never answered: a deadline (a timeout outside) cuts it off; HTTP layers send the head, then stall the body | failure (cut off) |
//! | forced `outcome` | made | the call's result | the forced outcome |
//!
//! Each with a rate (a probability per call). The draws are **stratified**:
//! every block of 1,024 calls (the first 1,024, the next 1,024, …) takes its
//! draws from a stretch of a low-discrepancy sequence, in an order shuffled
//! per block — so a rate `p` hits `p·1024` calls of each block give or take
//! a few (not just on average), while consecutive calls are hit or spared
//! as if independently (a retry after an injected fault is not spared by
//! the pattern). Under a [`seed`](ChaosBuilder::seed) the same calls are hit
//! on every run.
//!
//! # At runtime
//!
//! A `Chaos` is its own handle: clones share one state. [`enable`](Chaos::enable),
//! [`enable_for`](Chaos::enable_for) (with an expiry on the policy's
//! [`Clock`](crate::Clock)), [`disable`](Chaos::disable),
//! [`set_scale`](Chaos::set_scale) (multiplies every rate) and
//! [`reconfigure`](Chaos::reconfigure) apply to the calls that start after
//! them. A disabled policy costs a call one atomic load.
//!
//! # Events
//!
//! [`FaultInjected`](crate::EventKind::FaultInjected) for a call it hit,
//! [`FaultSkipped`](crate::EventKind::FaultSkipped) for one it let through
//! while enabled, [`FaultSwitched`](crate::EventKind::FaultSwitched) when it
//! is switched on or off (by hand or by its expiry).
//!
//! ```
//! use ripcord::chaos::Chaos;
//! use ripcord::{Error, ManualClock};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ripcord::ConfigError> {
//! let clock = ManualClock::new();
//! let chaos = Chaos::builder("payments").abort(0.25).seed(1).clock(clock.clone()).build()?;
//!
//! let mut aborted = 0;
//! for _ in 0..1024 {
//!     match chaos.execute(|| async { Ok::<_, std::io::Error>(()) }).await {
//!         Err(Error::Injected(_)) => aborted += 1,
//!         other => other.unwrap(),
//!     }
//! }
//! // A quarter of a block of 1,024 calls, give or take a few.
//! assert!((250..=262).contains(&aborted), "{aborted}");
//!
//! // A drill of one minute: on, then off by itself.
//! chaos.enable_for(Duration::from_secs(60))?;
//! clock.advance(Duration::from_secs(61));
//! assert!(!chaos.is_enabled());
//! assert!(chaos.decide().is_none());
//! # Ok(()) }
//! ```

mod config;

pub use config::{ChaosBuilder, ChaosConfig, Latency, MAX_FAULT_DURATION, MAX_SCALE};

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::ClockHandle;
use crate::event::{Event, EventKind, Events};
use crate::random::SplitMix64;
use crate::{ConfigError, Name, Outcome};

/// The fault injected into one call (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The call is not made; `status` is what HTTP and gRPC layers answer.
    Abort {
        /// The configured `abort_status`, if any.
        status: Option<u16>,
    },
    /// The call is not made; the caller gets its own kind of error.
    Error,
    /// The connection is reset.
    Reset,
    /// The call never completes.
    Stall,
    /// The call runs; the breakers outside record this outcome.
    Outcome(Outcome),
}

impl Fault {
    /// Whether the call is still made.
    pub fn makes_the_call(&self) -> bool {
        matches!(self, Fault::Outcome(_))
    }

    /// The fault's name: `abort`, `error`, `reset`, `stall` or `outcome`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Fault::Abort { .. } => "abort",
            Fault::Error => "error",
            Fault::Reset => "reset",
            Fault::Stall => "stall",
            Fault::Outcome(_) => "outcome",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Abort { status: Some(s) } => write!(f, "an abort (status {s})"),
            Fault::Abort { status: None } => f.write_str("an abort"),
            Fault::Error => f.write_str("an error"),
            Fault::Reset => f.write_str("a connection reset"),
            Fault::Stall => f.write_str("a stall"),
            Fault::Outcome(o) => write!(f, "a forced {o}"),
        }
    }
}

/// What a [`Chaos`] policy does to one call it hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Injection {
    /// Wait this long before the call (or before the fault).
    pub delay: Option<Duration>,
    /// Then this, or make the call as usual.
    pub fault: Option<Fault>,
}

/// A call the fault-injection policy did not let through (see
/// [`Error::Injected`](crate::Error::Injected)(crate::Error::Injected)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    name: Name,
    fault: Fault,
}

impl Injected {
    /// The error of `fault`, injected by the policy named `name`.
    pub fn new(name: &str, fault: Fault) -> Self {
        Injected {
            name: Name::new(name),
            fault,
        }
    }

    /// The name of the policy that injected it.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The fault injected.
    pub fn fault(&self) -> Fault {
        self.fault
    }
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault injection `{}` injected {}", self.name, self.fault)
    }
}

impl std::error::Error for Injected {}

/// A fault-injection policy. Cheap to clone: clones share one state, so any
/// clone is a handle that switches it at runtime. See the [module docs](self).
#[derive(Clone)]
pub struct Chaos {
    inner: Arc<Inner>,
}

/// `until` when the policy is off.
const OFF: u64 = 0;
/// `until` when it is on without an expiry.
const FOREVER: u64 = u64::MAX;
/// Steps of the two low-discrepancy sequences: 2⁶⁴ times the fractional
/// parts of the golden ratio and of √2 (rationally independent, so the
/// pairs of draws fill the unit square evenly too).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const SILVER: u64 = 0x6A09_E667_F3BC_C909;

struct Inner {
    name: Name,
    clock: ClockHandle,
    events: Events,
    /// [`OFF`], [`FOREVER`], or the clock's instant (ns) it lapses at.
    until: AtomicU64,
    /// Calls drawn so far: the index into the sequences.
    calls: AtomicU64,
    /// Calls hit so far.
    hits: AtomicU64,
    seed: AtomicU64,
    /// Draws below this are delayed (a rate times 2⁶⁴).
    latency_cut: AtomicU64,
    /// Draws below `fault_cuts[k]` (and above the one before) get fault `k`;
    /// cumulative, in the order of [`ChaosConfig::fault_rates`].
    fault_cuts: [AtomicU64; 5],
    plan: Mutex<Plan>,
}

struct Plan {
    config: ChaosConfig,
    scale: f64,
}

/// Calls per block of the stratified draw: `2^BLOCK_BITS`.
const BLOCK_BITS: u32 = 10;
const BLOCK_MASK: u64 = (1 << BLOCK_BITS) - 1;

/// The `n`-th call's draws — one for its fault ([`fault_draw`]), one for
/// its latency ([`latency_draw`]) — are shares of 2⁶⁴: the elements of its
/// block's stretch of the two sequences, at positions a shuffle of the
/// block keyed by this gives (see the [module docs](self)).
#[inline]
fn block_key(seed: u64, n: u64) -> u64 {
    mix(seed ^ (n & !BLOCK_MASK))
}

/// The `n`-th call's fault draw (see [`block_key`]).
#[inline]
fn fault_draw(seed: u64, n: u64, key: u64) -> u64 {
    let i = (n & !BLOCK_MASK) | shuffle(n & BLOCK_MASK, key);
    seed.wrapping_add(i.wrapping_mul(GOLDEN))
}

/// The `n`-th call's latency draw (see [`block_key`]).
#[inline]
fn latency_draw(seed: u64, n: u64, key: u64) -> u64 {
    let j = (n & !BLOCK_MASK) | shuffle(n & BLOCK_MASK, key.rotate_left(29));
    seed.rotate_left(32).wrapping_add(j.wrapping_mul(SILVER))
}

/// SplitMix64's finalizer: a well-spread function of `z`.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A bijection of `0..2^BLOCK_BITS` chosen by `key`: every step (xor, odd
/// multiplication and xor-shift, all modulo the block) is one.
#[inline]
fn shuffle(j: u64, key: u64) -> u64 {
    let mut x = (j ^ key) & BLOCK_MASK;
    x = x.wrapping_mul((key >> 16) | 1) & BLOCK_MASK;
    x ^= x >> 5;
    x = x.wrapping_mul((key >> 32) | 1) & BLOCK_MASK;
    x ^= x >> 4;
    x = x.wrapping_add(key >> 48).wrapping_mul(0x2C5) & BLOCK_MASK;
    x ^ (x >> 5)
}

/// `p` (clamped to `[0, 1]`) as a share of 2⁶⁴.
fn cut(p: f64) -> u64 {
    if p >= 1.0 {
        u64::MAX
    } else if p > 0.0 {
        (p * 18_446_744_073_709_551_616.0) as u64
    } else {
        0
    }
}

impl Chaos {
    /// Starts building a fault-injection policy named `name` (default: no
    /// fault, enabled).
    pub fn builder(name: &str) -> ChaosBuilder {
        ChaosBuilder::new(name)
    }

    fn from_builder(b: ChaosBuilder) -> Self {
        let seed = b
            .config
            .seed
            .unwrap_or_else(|| SplitMix64::from_entropy().next_u64());
        let chaos = Chaos {
            inner: Arc::new(Inner {
                name: b.name,
                clock: b.clock,
                events: Events::new(b.listeners, b.event_capacity),
                until: AtomicU64::new(OFF),
                calls: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                seed: AtomicU64::new(seed),
                latency_cut: AtomicU64::new(0),
                fault_cuts: Default::default(),
                plan: Mutex::new(Plan {
                    config: b.config,
                    scale: 1.0,
                }),
            }),
        };
        let plan = chaos.plan();
        chaos.set_cuts(&plan);
        let (enabled, expiry) = (plan.config.enabled, plan.config.expires_after);
        drop(plan);
        if enabled {
            chaos.switch_on(expiry, false);
        }
        chaos
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        // The plan is only ever replaced whole: a panic elsewhere cannot
        // leave it half-written.
        self.inner.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_cuts(&self, plan: &Plan) {
        let c = &plan.config;
        let inner = &*self.inner;
        inner
            .latency_cut
            .store(cut(c.latency_rate * plan.scale), Ordering::Relaxed);
        let mut acc = 0.0;
        for (slot, r) in inner.fault_cuts.iter().zip(c.fault_rates()) {
            acc += r * plan.scale;
            slot.store(cut(acc), Ordering::Relaxed);
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// Decides what to inject into the call starting now: `None` to let it
    /// through untouched. [`execute`](Self::execute) and the pipeline call
    /// it; middleware that injects faults of its own kind (an HTTP status, a
    /// reset connection) calls it directly.
    #[inline]
    pub fn decide(&self) -> Option<Injection> {
        let until = self.inner.until.load(Ordering::Acquire);
        if until == OFF {
            return None;
        }
        self.draw(until)
    }

    #[inline]
    fn draw(&self, until: u64) -> Option<Injection> {
        let inner = &*self.inner;
        if until != FOREVER && inner.clock.now_nanos() >= until {
            self.lapse(until);
            return None;
        }
        let n = inner.calls.fetch_add(1, Ordering::Relaxed);
        let seed = inner.seed.load(Ordering::Relaxed);
        let key = block_key(seed, n);
        let x = fault_draw(seed, n, key);
        // The latency's draw only when a latency is configured.
        let latency_cut = inner.latency_cut.load(Ordering::Relaxed);
        let delayed = latency_cut != 0 && latency_draw(seed, n, key) < latency_cut;
        if !delayed && x >= inner.fault_cuts[4].load(Ordering::Relaxed) {
            if inner.events.active() {
                self.emit(EventKind::FaultSkipped);
            }
            return None;
        }
        Some(self.hit(n, x, delayed))
    }

    #[cold]
    #[inline(never)]
    fn hit(&self, n: u64, x: u64, delayed: bool) -> Injection {
        let inner = &*self.inner;
        inner.hits.fetch_add(1, Ordering::Relaxed);
        let (latency, status, outcome) = {
            let plan = self.plan();
            let c = &plan.config;
            (c.latency, c.abort_status, c.outcome)
        };
        let delay = match latency {
            Some(l) if delayed => {
                let seed = inner.seed.load(Ordering::Relaxed);
                let u = SplitMix64::new(seed ^ n.wrapping_mul(GOLDEN)).next_f64();
                Some(l.sample(u))
            }
            _ => None,
        };
        let k = inner
            .fault_cuts
            .iter()
            .position(|c| x < c.load(Ordering::Relaxed));
        let fault = k.map(|k| match k {
            0 => Fault::Abort { status },
            1 => Fault::Error,
            2 => Fault::Reset,
            3 => Fault::Stall,
            _ => Fault::Outcome(outcome),
        });
        if inner.events.active() {
            self.emit(EventKind::FaultInjected { fault, delay });
        }
        Injection { delay, fault }
    }

    fn emit(&self, kind: EventKind) {
        let inner = &*self.inner;
        inner.events.emit(Event {
            name: inner.name.clone(),
            at: Duration::from_nanos(inner.clock.now_nanos()),
            epoch: 0,
            kind,
        });
    }

    /// The expiry passed: off, once (the first caller to see it reports it).
    #[cold]
    fn lapse(&self, until: u64) {
        let swapped =
            self.inner
                .until
                .compare_exchange(until, OFF, Ordering::AcqRel, Ordering::Acquire);
        if swapped.is_ok() && self.inner.events.active() {
            self.emit(EventKind::FaultSwitched {
                enabled: false,
                expires_in: None,
            });
        }
    }

    fn switch_on(&self, expiry: Option<Duration>, report: bool) {
        let until = match expiry {
            None => FOREVER,
            Some(d) => {
                let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1);
                self.inner
                    .clock
                    .now_nanos()
                    .saturating_add(d)
                    .clamp(1, FOREVER - 1)
            }
        };
        self.inner.until.store(until, Ordering::Release);
        if report && self.inner.events.active() {
            self.emit(EventKind::FaultSwitched {
                enabled: true,
                expires_in: expiry,
            });
        }
    }

    /// Switches it on, with the configured `expires_after` if any.
    pub fn enable(&self) {
        let expiry = self.plan().config.expires_after;
        self.switch_on(expiry, true);
    }

    /// Switches it on until `duration` from now (on the policy's clock).
    pub fn enable_for(&self, duration: Duration) -> Result<(), ConfigError> {
        if duration.is_zero() || duration > MAX_FAULT_DURATION {
            return Err(ConfigError::new(
                "expires_after",
                duration,
                "a duration greater than zero and at most one day",
            ));
        }
        self.switch_on(Some(duration), true);
        Ok(())
    }

    /// Switches it off: every call goes through untouched.
    pub fn disable(&self) {
        let was = self.inner.until.swap(OFF, Ordering::AcqRel);
        if was != OFF && self.inner.events.active() {
            self.emit(EventKind::FaultSwitched {
                enabled: false,
                expires_in: None,
            });
        }
    }

    /// Whether it is on (and its expiry, if any, has not passed).
    pub fn is_enabled(&self) -> bool {
        match self.inner.until.load(Ordering::Acquire) {
            OFF => false,
            FOREVER => true,
            until => self.inner.clock.now_nanos() < until,
        }
    }

    /// How long until it switches itself off: `None` when it is off or has
    /// no expiry.
    pub fn expires_in(&self) -> Option<Duration> {
        match self.inner.until.load(Ordering::Acquire) {
            OFF | FOREVER => None,
            until => {
                let now = self.inner.clock.now_nanos();
                (now < until).then(|| Duration::from_nanos(until - now))
            }
        }
    }

    /// Multiplies every rate by `scale` (default 1; between 0 and
    /// [`MAX_SCALE`]): 0.5 halves the faults, 2 doubles them (a rate is
    /// never above 1, and the faults together never above 1 either: the
    /// later ones in the order abort, error, reset, stall, outcome give way).
    pub fn set_scale(&self, scale: f64) -> Result<(), ConfigError> {
        if !(0.0..=MAX_SCALE).contains(&scale) {
            return Err(ConfigError::new(
                "scale",
                scale,
                "a factor between 0 and 1000",
            ));
        }
        let mut plan = self.plan();
        plan.scale = scale;
        self.set_cuts(&plan);
        Ok(())
    }

    /// The factor every rate is multiplied by.
    pub fn scale(&self) -> f64 {
        self.plan().scale
    }

    /// Replaces the faults (and, if it gives one, the seed), for the calls
    /// that start from now on; switches the policy on or off as `config`
    /// says (with its expiry). The scale is kept; the draws start afresh
    /// (and [`counts`](Self::counts) from zero), so that a drill under a
    /// seed hits the same of its calls on every run.
    pub fn reconfigure(&self, config: ChaosConfig) -> Result<(), ConfigError> {
        config.validate()?;
        if let Some(seed) = config.seed {
            self.inner.seed.store(seed, Ordering::Relaxed);
        }
        self.inner.calls.store(0, Ordering::Relaxed);
        self.inner.hits.store(0, Ordering::Relaxed);
        let (enabled, expiry) = (config.enabled, config.expires_after);
        {
            let mut plan = self.plan();
            plan.config = config;
            self.set_cuts(&plan);
        }
        if enabled {
            self.switch_on(expiry, true);
        } else {
            self.disable();
        }
        Ok(())
    }

    /// The configuration in force (`enabled` as it was last set; see
    /// [`is_enabled`](Self::is_enabled) for now).
    pub fn config(&self) -> ChaosConfig {
        self.plan().config.clone()
    }

    /// Calls drawn while it was enabled, and how many of them it hit.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.inner.calls.load(Ordering::Relaxed),
            self.inner.hits.load(Ordering::Relaxed),
        )
    }

    /// The error of `fault`, named after this policy.
    pub fn injected(&self, fault: Fault) -> Injected {
        Injected {
            name: self.inner.name.clone(),
            fault,
        }
    }

    /// Receives every event from now on. A receiver that falls behind loses
    /// the oldest events; it never slows the policy.
    #[cfg(feature = "tokio")]
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::Event> {
        self.inner.events.subscribe()
    }

    /// Runs `f` with the faults injected: sleeps an injected latency first
    /// (on tokio's timer), returns [`Error::Injected`](crate::Error::Injected)(crate::Error::Injected)
    /// for an abort, an error or a reset without calling `f`, never returns
    /// for a stall (put a timeout around it), and runs `f` for a forced
    /// outcome (which only breakers outside, in a pipeline, act on).
    #[cfg(feature = "tokio")]
    pub async fn execute<T, E, F, Fut>(&self, f: F) -> Result<T, crate::Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        if let Some(injection) = self.decide() {
            if let Some(d) = injection.delay {
                tokio::time::sleep(d).await;
            }
            match injection.fault {
                None | Some(Fault::Outcome(_)) => {}
                Some(Fault::Stall) => std::future::pending::<()>().await,
                Some(fault) => return Err(crate::Error::Injected(self.injected(fault))),
            }
        }
        f().await.map_err(crate::Error::Inner)
    }
}

impl fmt::Debug for Chaos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("name", &self.inner.name)
            .field("enabled", &self.is_enabled())
            .field("config", &self.plan().config)
            .finish()
    }
}

#[cfg(test)]
mod tests;
