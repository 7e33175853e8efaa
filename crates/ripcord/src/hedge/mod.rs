//! Hedging: when a call is slow, start another attempt and take whichever
//! succeeds first.
//!
//! A [`Hedge`] starts the call, and if it has not succeeded after the hedge
//! delay, starts another attempt — up to `max_hedges` extra attempts, one per
//! delay. The first success wins; every other attempt still running is
//! cancelled (dropped) at once. Events: [`HedgeStarted`](crate::EventKind::HedgeStarted)
//! for each extra attempt, [`HedgeWon`](crate::EventKind::HedgeWon) naming the
//! winner when any hedge was started.
//!
//! # The delay
//!
//! Fixed, or from the latencies of recent successful calls: with
//! [`percentile_delay(0.95, initial)`](HedgeBuilder::percentile_delay), a hedge
//! starts once the call has run longer than 95 % of recent calls did, so about
//! one call in twenty is hedged whatever the dependency's normal latency. The
//! latencies live in a small lock-free histogram (log-linear buckets, at most
//! 12.5 % wide; one to two `window`s of history); until `min_samples` are known
//! the `initial` delay applies, and the result is bounded by `delay_bounds`.
//!
//! # Failures
//!
//! Hedging is for latency, not errors (that is what a retry is for): an attempt
//! that fails drops out, and the call waits for the others still running. When
//! every started attempt has failed, the call fails with the last error, without
//! waiting for the next hedge — unless `hedge_on_failure` is set, in which case
//! a failure starts the next hedge at once (while any are left).
//!
//! Hedges multiply load on a dependency that is slow because it is overloaded;
//! keep `max_hedges` small, and put a circuit breaker or a rate limiter *inside*
//! the hedge in a [`Pipeline`](crate::Pipeline) so hedges count against it.
//!
//! The delay is waited on tokio's timer (feature `tokio`).
//!
//! ```
//! use ripcord::{Hedge, TokioClock};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), ripcord::ConfigError> {
//! let hedge = Hedge::builder("search")
//!     .delay(Duration::from_millis(50))
//!     .clock(TokioClock::new())
//!     .build()?;
//!
//! let mut attempt = 0;
//! let answer = hedge
//!     .execute(|| {
//!         attempt += 1;
//!         // The first attempt hangs; the hedge started at 50 ms answers in 10 ms.
//!         let took = if attempt == 1 { Duration::from_secs(60) } else { Duration::from_millis(10) };
//!         async move {
//!             tokio::time::sleep(took).await;
//!             Ok::<_, std::io::Error>(attempt)
//!         }
//!     })
//!     .await;
//! assert_eq!(answer.unwrap(), 2);
//! # Ok(()) }
//! ```

mod config;
mod state;

pub use config::{HedgeBuilder, HedgeConfig, HedgeDelay, PercentileDelay, MAX_HEDGES};

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::clock::ClockHandle;
use crate::event::{Event, EventKind, Events};
use crate::Name;
use state::LatencyHistogram;

/// Starts extra attempts of slow calls and takes the first success. Cheap to
/// clone: clones share one latency histogram.
///
/// See the [module docs](self).
#[derive(Clone)]
pub struct Hedge {
    inner: Arc<Inner>,
}

struct Inner {
    name: Name,
    config: HedgeConfig,
    histogram: Option<LatencyHistogram>,
    clock: ClockHandle,
    events: Events,
}

impl Hedge {
    /// Starts building a hedge named `name`.
    pub fn builder(name: &str) -> HedgeBuilder {
        HedgeBuilder::new(name)
    }

    /// The hedge's name.
    pub fn name(&self) -> &str {
        self.inner.name.as_str()
    }

    /// Extra attempts at most per call.
    pub fn max_hedges(&self) -> u32 {
        self.inner.config.max_hedges
    }

    /// The delay a call starting now would wait before its first hedge.
    pub fn current_delay(&self) -> Duration {
        match &self.inner.config.delay {
            HedgeDelay::Fixed(d) => *d,
            HedgeDelay::Percentile(p) => {
                let now = self.inner.clock.now_nanos();
                let observed = self
                    .inner
                    .histogram
                    .as_ref()
                    .and_then(|h| h.quantile(now, p.percentile, u64::from(p.min_samples)));
                observed.map_or(p.initial, |d| d.clamp(p.min, p.max))
            }
        }
    }

    /// Latencies of successful calls remembered now (0 for a fixed delay).
    pub fn latency_samples(&self) -> u64 {
        let now = self.inner.clock.now_nanos();
        self.inner.histogram.as_ref().map_or(0, |h| h.samples(now))
    }

    /// Runs `f`, and again after each hedge delay while no attempt has
    /// succeeded, up to `max_hedges` extra times. Returns the first success;
    /// the other attempts are dropped. If every attempt fails, returns the last
    /// error.
    pub async fn execute<T, E, F, Fut>(&self, mut f: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cfg = &self.inner.config;
        let delay = self.current_delay();
        let start = self.inner.clock.now_nanos();
        let mut first = pin!(f());
        let mut first_live = true;
        let mut hedges: Vec<Option<(u64, Pin<Box<Fut>>)>> = Vec::new();
        let mut started = 0u32;
        let mut live = 1u32;
        let mut last_err = None;
        let mut sleep = pin!(tokio::time::sleep(delay));
        poll_fn(|cx| loop {
            let mut start_now = false;
            if first_live {
                if let Poll::Ready(r) = first.as_mut().poll(cx) {
                    first_live = false;
                    live -= 1;
                    match r {
                        Ok(v) => return Poll::Ready(Ok(self.won(0, start, started, v))),
                        Err(e) => {
                            last_err = Some(e);
                            start_now = cfg.hedge_on_failure;
                        }
                    }
                }
            }
            for (i, slot) in hedges.iter_mut().enumerate() {
                let Some((began, fut)) = slot else { continue };
                if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                    let began = *began;
                    *slot = None;
                    live -= 1;
                    match r {
                        Ok(v) => return Poll::Ready(Ok(self.won(i as u32 + 1, began, started, v))),
                        Err(e) => {
                            last_err = Some(e);
                            start_now |= cfg.hedge_on_failure;
                        }
                    }
                }
            }
            if started < cfg.max_hedges && (start_now || sleep.as_mut().poll(cx).is_ready()) {
                started += 1;
                live += 1;
                hedges.push(Some((self.inner.clock.now_nanos(), Box::pin(f()))));
                self.emit(EventKind::HedgeStarted { hedge: started });
                sleep.as_mut().reset(tokio::time::Instant::now() + delay);
                continue; // poll the new attempt
            }
            if live == 0 {
                if let Some(e) = last_err.take() {
                    return Poll::Ready(Err(e));
                }
            }
            return Poll::Pending;
        })
        .await
    }

    fn won<T>(&self, attempt: u32, began: u64, started: u32, value: T) -> T {
        if let Some(h) = &self.inner.histogram {
            let now = self.inner.clock.now_nanos();
            h.record(now, Duration::from_nanos(now.saturating_sub(began)));
        }
        if started > 0 {
            self.emit(EventKind::HedgeWon { attempt });
        }
        value
    }

    fn emit(&self, kind: EventKind) {
        let events = &self.inner.events;
        if events.active() {
            events.emit(Event {
                name: self.inner.name.clone(),
                at: Duration::from_nanos(self.inner.clock.now_nanos()),
                epoch: 0,
                kind,
            });
        }
    }

    /// Receives every event from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }
}

impl fmt::Debug for Hedge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .finish()
    }
}
