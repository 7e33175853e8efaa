//! The pipeline: several policies around one call, outermost first.
//!
//! ```
//! use ripcord::{Bulkhead, CircuitBreaker, Error, Pipeline, PolicyKind, Retry};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ripcord::ConfigError> {
//! let pipeline = Pipeline::builder()
//!     .timeout(Duration::from_secs(2))                                   // bounds the whole call
//!     .retry(Retry::builder("payments").max_attempts(3))                 // up to 3 attempts
//!     .circuit_breaker(CircuitBreaker::builder("payments").failure_rate(0.5)) // sees each attempt
//!     .bulkhead(Bulkhead::builder("payments").max_concurrent(16))        // a slot per attempt
//!     .build()?;
//!
//! match pipeline.execute(|| async { Ok::<_, std::io::Error>("paid") }).await {
//!     Ok(receipt) => println!("{receipt}"),
//!     Err(Error::Inner(e)) => println!("the call failed: {e}"),
//!     Err(e) => println!("{} stopped the call: {e}", e.policy().unwrap_or(PolicyKind::Retry)),
//! }
//! # Ok(()) }
//! ```
//!
//! # Order
//!
//! Policies run **outermost first, in the order they were added**: above, the
//! timeout encloses the retry, which encloses the breaker, which encloses the
//! bulkhead, which encloses the call. The usual order is
//! `fallback → timeout → retry → circuit breaker → rate limiter → bulkhead →
//! (hedge) → call`, but any order is honoured, and it matters:
//!
//! - **timeout outside retry** bounds the whole call, waits included;
//!   **retry outside timeout** bounds each attempt. A retry inside a timeout
//!   never schedules an attempt that could not start before the deadline.
//! - **breaker inside retry** sees (and counts) each attempt, and an open
//!   breaker's rejection tells the retry when the next probe is due; a
//!   breaker outside the retry sees one call whatever the attempts.
//! - **retry outside bulkhead and breaker**: while a retry waits, it holds no
//!   bulkhead slot and no breaker permit — they were released when the attempt
//!   ended. (A bulkhead *outside* a retry holds its slot across the attempts,
//!   as its position says.)
//! - **fallback outermost** answers for every error of the policies inside it;
//!   further in, it answers only for those inside it.
//! - **hedge**: each attempt runs the policies inside the hedge, so a breaker
//!   or bulkhead inside it counts every hedged attempt.
//!
//! A configuration file lists its policies in order; in its form with one
//! table per policy, without `order`, they take
//! [`PipelineConfig::DEFAULT_ORDER`]: `fallback → rate limiter → retry →
//! hedge → circuit breaker → bulkhead → timeout → chaos` — admission once
//! per call, then each attempt through its breaker, its bulkhead slot and its
//! own timeout, with injected faults (if any) innermost, where the
//! dependency's own would be.
//!
//! # What a breaker records
//!
//! A breaker records each call of the policies inside it:
//!
//! | result from inside | outcome |
//! |---|---|
//! | `Ok`, or the call's own error | by the pipeline's [`classify`](PipelineBuilder::classify) (default: `Ok` success, `Err` failure) |
//! | a timeout (inside the breaker, or an outer deadline cutting the call off) | **Failure** |
//! | a bulkhead or rate-limiter refusal, an inner breaker's rejection | **Ignored** |
//! | a fault injected inside it ([`chaos`](crate::chaos)): abort, reset, stall | **Failure** |
//! | an injected `error` | as the call's own error |
//! | a forced outcome injected inside it | that outcome, whatever ends the call further in |
//! | a failed inner fallback chain | Failure |
//! | the pipeline's future dropped (cancelled from outside) | Ignored |
//!
//! # Errors
//!
//! One error type, [`Error<E>`](crate::Error), for every policy;
//! [`Error::policy`](crate::Error::policy) says which one stopped the call
//! (`None` when the call itself failed), and
//! [`Error::retry_after`](crate::Error::retry_after) when to come back.
//!
//! # Cancellation
//!
//! Dropping the future of [`execute`](Pipeline::execute) cancels the call and
//! gives back everything it held: bulkhead slots are released, breaker
//! permits are dropped (a half-open probe slot is freed for another probe;
//! the call counts as ignored), a queued bulkhead or rate-limiter wait is
//! abandoned, and every hedged attempt is dropped.
//!
//! # Cost
//!
//! A call walks the policies in one loop: each policy's state (a permit, a
//! slot, a deadline, a retry's counters) sits in a small stack of frames kept
//! inside the call's own future — no boxed future per policy, and no
//! allocation at all for a call that succeeds without waiting, through up to
//! six policies (one of them a retry). Timers are created only if the call
//! does not finish at its first poll. Waiting (for a bulkhead slot, a
//! rate-limiter permit, a retry's delay), recovering (a fallback) and hedging
//! box their futures: they are off the hot path. `benches/README.md` compares
//! the cost with tower's own stack.
//!
//! A pipeline whose policies all decide at once — timeouts, breakers,
//! bulkheads without a queue, rate limiters that never wait — can also be
//! run without `execute`'s future: [`Pipeline::admit`] takes the policies'
//! permits for one call and hands back an [`Admitted`], which records the
//! call's result when told. Middleware uses it to keep its own small,
//! nameable future around the call (ripcord-tower's `PipelineLayer` does).
//!
//! # Configuration files
//!
//! [`PipelineConfig`] describes a pipeline in TOML (or any serde format), each
//! policy with its own configuration type; see its docs.

mod admit;
mod config;
mod execute;
mod rules;

pub use admit::Admitted;
pub use config::{FallbackEntry, Part, PipelineBuilder, PipelineConfig, PolicyConfig};

use std::fmt;
use std::sync::Arc;

use crate::chaos::{Fault, Injected};
use crate::rate_limiter::ExternalLimiter;
use crate::registry::Member;
use crate::{
    Bulkhead, Chaos, CircuitBreaker, Classify, Error, Fallback, Hedge, Name, PolicyKind,
    RateLimiter, Retry, TimeoutPolicy,
};

/// Makes the caller's error for an injected [`Fault::Error`].
pub(crate) type ChaosError<E> = Arc<dyn Fn(&Injected) -> E + Send + Sync>;

/// Policies around a call, outermost first. Cheap to clone (one `Arc`), and
/// `Send + Sync`: share one pipeline between tasks.
///
/// `T` and `E` are the call's value and error types (a fallback produces a
/// `T`; a classifier judges a `Result<T, E>`). See the [module docs](self).
pub struct Pipeline<T, E> {
    inner: Arc<Inner<T, E>>,
}

pub(crate) struct Inner<T, E> {
    name: Name,
    policies: Box<[Policy<T, E>]>,
    classify: Option<Arc<dyn Classify<T, E> + Send + Sync>>,
    /// The caller's error for an injected [`Fault::Error`].
    chaos_error: Option<ChaosError<E>>,
    /// The policies `execute` walks with a frame each: all of them, but an
    /// innermost fault injection, which decides at the call.
    walk_end: usize,
    /// Whether every policy decides at once (see [`Pipeline::admit`]).
    direct: bool,
    /// Whether every policy admits or refuses (see
    /// [`Pipeline::admit_waiting`]).
    admissible: bool,
}

/// The pipeline's policies and their accessors, from the one list of
/// policies ([`crate::kinds`]).
macro_rules! policies {
    ($([$kind:ident, $name:ident, $label:literal, $config:ident, $slot:ident, $policy:ty, $builder:ty])*) => {
        /// One policy of a pipeline.
        pub(crate) enum Policy<T, E> {
            $($kind($policy),)*
            /// A rate limiter decided outside the process: a
            /// [`PolicyKind::RateLimiter`] that always waits for its answer.
            ExternalRateLimiter(Arc<dyn ExternalLimiter>),
        }

        impl<T, E> Policy<T, E> {
            fn kind(&self) -> PolicyKind {
                match self {
                    $(Policy::$kind(_) => PolicyKind::$kind,)*
                    Policy::ExternalRateLimiter(_) => PolicyKind::RateLimiter,
                }
            }
        }

        impl<T, E> Pipeline<T, E> {
            $(
                #[doc = concat!("The outermost ", $label, ", if any.")]
                pub fn $name(&self) -> Option<&$policy> {
                    self.inner.policies.iter().find_map(|p| match p {
                        Policy::$kind(x) => Some(x),
                        _ => None,
                    })
                }
            )*
        }
    };
}

crate::kinds::policy_list!(policies);

impl<T, E> Clone for Pipeline<T, E> {
    fn clone(&self) -> Self {
        Pipeline {
            inner: self.inner.clone(),
        }
    }
}

impl<T, E> Pipeline<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    /// Starts building a pipeline.
    pub fn builder() -> PipelineBuilder<T, E> {
        PipelineBuilder::new()
    }
}

impl<T, E> Pipeline<T, E> {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// The kinds of its policies, outermost first.
    pub fn kinds(&self) -> impl Iterator<Item = PolicyKind> + '_ {
        self.inner.policies.iter().map(Policy::kind)
    }

    /// The number of policies.
    pub fn len(&self) -> usize {
        self.inner.policies.len()
    }

    /// Whether the pipeline has no policy (it then just runs the call).
    pub fn is_empty(&self) -> bool {
        self.inner.policies.is_empty()
    }

    /// Every circuit breaker, outermost first.
    pub fn circuit_breakers(&self) -> impl Iterator<Item = &CircuitBreaker> {
        self.inner.policies.iter().filter_map(|p| match p {
            Policy::CircuitBreaker(b) => Some(b),
            _ => None,
        })
    }

    /// Whether two handles share the same pipeline.
    pub fn same_as(&self, other: &Pipeline<T, E>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<T, E> Inner<T, E> {
    /// The error a fault-injection policy's `fault` stops a call with: the
    /// caller's own for [`Fault::Error`] when the pipeline has a
    /// [`chaos_error`](PipelineBuilder::chaos_error), else [`Error::Injected`].
    pub(super) fn injected(&self, chaos: &Chaos, fault: Fault) -> Error<E> {
        let injected = chaos.injected(fault);
        match &self.chaos_error {
            Some(make) if fault == Fault::Error => Error::Inner(make(&injected)),
            _ => Error::Injected(injected),
        }
    }
}

/// A registry keeps a pipeline while any of its breakers is open, like it
/// keeps an open breaker: evicting it would drop the protection.
impl<T: 'static, E: 'static> Member for Pipeline<T, E> {
    fn is_pinned(&self) -> bool {
        self.circuit_breakers().any(|b| b.state().is_open())
    }
}

impl<T, E> fmt::Debug for Pipeline<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.inner.name)
            .field("policies", &self.kinds().collect::<Vec<_>>())
            .finish()
    }
}
