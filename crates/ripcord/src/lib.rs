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
//!
//! ## Features
//!
//! - `serde` (default): `Deserialize` for configurations, durations as `"800ms"`.
//! - `tokio` (default): broadcast event subscriptions, the eager open timer and
//!   the background recovery check.
#![doc(test(attr(deny(warnings))))]

mod backoff;
pub mod circuit_breaker;
mod clock;
mod config;
mod error;
pub mod event;
mod name;
mod outcome;
mod random;
pub mod registry;
#[cfg(feature = "tokio")]
pub mod store;
mod sync;

pub use backoff::Backoff;
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
pub use name::Name;
pub use outcome::{Classify, ErrorsAsFailures, Outcome};
pub use registry::Registry;
