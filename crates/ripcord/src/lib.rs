//! # ripcord
//!
//! A resilience toolkit whose core is a circuit breaker that a whole fleet of
//! service instances can share, with a hot path of a few nanoseconds: deciding
//! a call reads one atomic, recording a success writes only to the calling
//! core's counters, and nothing allocates or locks.
//!
//! ```
//! use ripcord::{Backoff, CircuitBreaker, Error, Window};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::builder("payments")
//!     .failure_rate(0.5)                                  // ≥ 50 % of calls failed
//!     .slow_calls(Duration::from_millis(800), 0.5)        // or ≥ 50 % slower than 800 ms
//!     .minimum_calls(20)
//!     .window(Window::time(Duration::from_secs(10)))
//!     .open_for(Backoff::exponential(Duration::from_secs(5), Duration::from_secs(120)).jitter(0.2))
//!     .half_open_calls(3)
//!     .build()?;
//!
//! match breaker.call(|| async { Ok::<_, std::io::Error>("paid") }).await {
//!     Ok(v) => println!("{v}"),
//!     Err(Error::Rejected(r)) => println!("not now: retry in {:?}", r.retry_after()),
//!     Err(Error::Inner(e)) => println!("the call failed: {e}"),
//!     Err(e) => println!("{e}"),
//! }
//! # Ok(()) }
//! ```
//!
//! - [`CircuitBreaker`]: states, trip rules, windows, half-open probing,
//!   manual control, epochs — see the [`circuit_breaker`] module docs.
//! - [`Registry`]: one breaker per key (endpoint, tenant), created lazily,
//!   bounded, with idle eviction.
//! - [`Clock`]: every time-based behaviour runs on a clock you can drive by
//!   hand ([`ManualClock`]).
//! - [`event`]: every transition, rejection and outcome as an [`Event`].
//! - [`Retry`] (backoff with jitter, retry budget, server-given delays,
//!   deadlines), [`TimeoutPolicy`] (cancels at a deadline that nested policies
//!   share), [`Bulkhead`] (concurrency limit with a fair bounded queue) and
//!   [`RateLimiter`] (GCRA, exact under concurrency) — see the [`retry`],
//!   [`timeout`], [`bulkhead`] and [`rate_limiter`] module docs.
//! - [`Pipeline`]: several policies around one call, outermost first — see
//!   below and the [`pipeline`] module docs; [`Fallback`] chains and
//!   [`Hedge`]d requests are policies of it too.
//!
//! ## Pipeline
//!
//! ```
//! use ripcord::{Bulkhead, CircuitBreaker, Error, Pipeline, Retry};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = Pipeline::builder()
//!     .timeout(Duration::from_secs(2))                     // bounds the whole call, retries included
//!     .retry(Retry::builder("payments").max_attempts(3))   // each attempt runs what follows
//!     .circuit_breaker(CircuitBreaker::builder("payments").failure_rate(0.5))
//!     .bulkhead(Bulkhead::builder("payments").max_concurrent(32))
//!     .build()?;
//!
//! match pipeline.execute(|| async { Ok::<_, std::io::Error>("paid") }).await {
//!     Ok(receipt) => println!("{receipt}"),
//!     Err(Error::Inner(e)) => println!("payments failed: {e}"),
//!     Err(e) => println!("{:?} stopped the call: {e}", e.policy()), // breaker, timeout, bulkhead…
//! }
//! # Ok(()) }
//! ```
//!
//! A pipeline is cheap to clone and shared between tasks; a
//! [`Registry`] of them gives each endpoint its own
//! (`Registry::with_factory(move |k| template.build_named(k))`), and a
//! [`PipelineConfig`] reads one from a TOML file.
//!
//! ## Features
//!
//! - `serde` (default): `Deserialize` for configurations, durations as `"800ms"`.
//! - `tokio` (default): broadcast event subscriptions, the eager open timer and
//!   the background recovery check; [`Retry`] and [`TimeoutPolicy`] (which wait
//!   on tokio's timers), and the waiting `acquire`/`execute` of [`Bulkhead`]
//!   and [`RateLimiter`].

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod backoff;
pub mod bulkhead;
pub mod chaos;
pub mod circuit_breaker;
mod clock;
mod config;
mod error;
pub mod event;
pub mod fallback;
#[cfg(feature = "tokio")]
pub mod hedge;
mod kinds;
mod name;
mod outcome;
#[cfg(feature = "tokio")]
pub mod pipeline;
mod random;
pub mod rate_limiter;
pub mod registry;
#[cfg(feature = "tokio")]
pub mod retry;
#[cfg(feature = "tokio")]
pub mod store;
pub mod stripe;
mod sync;
#[cfg(feature = "tokio")]
pub mod timeout;

pub use backoff::Backoff;
pub use bulkhead::{
    Bulkhead, BulkheadBuilder, BulkheadConfig, BulkheadPermit, OwnedBulkheadPermit,
};
pub use chaos::{Chaos, ChaosBuilder, ChaosConfig};
pub use circuit_breaker::{
    CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerConfig, OwnedPermit, Permit, State,
    Window, WindowStats,
};
#[cfg(feature = "tokio")]
pub use clock::TokioClock;
pub use clock::{Clock, ManualClock, PreciseClock, SystemClock};
#[cfg(feature = "serde")]
pub use config::duration;
pub use error::{BulkheadFull, ConfigError, Error, PolicyKind, RateLimited, Rejected, Timeout};
pub use event::{Event, EventKind, TransitionReason};
pub use fallback::{Fallback, FallbackBuilder, FallbackConfig, FallbackError};
#[cfg(feature = "tokio")]
pub use hedge::{Hedge, HedgeBuilder, HedgeConfig, HedgeDelay};
pub use name::Name;
pub use outcome::{Classify, ErrorsAsFailures, Outcome};
#[cfg(feature = "tokio")]
pub use pipeline::{Pipeline, PipelineBuilder, PipelineConfig};
pub use rate_limiter::{RateLimiter, RateLimiterBuilder, RateLimiterConfig};
pub use registry::Registry;
#[cfg(feature = "tokio")]
pub use retry::{Retry, RetryBudget, RetryBudgetConfig, RetryBuilder, RetryConfig};
#[cfg(feature = "tokio")]
pub use timeout::{TimeoutBuilder, TimeoutConfig, TimeoutPolicy};
