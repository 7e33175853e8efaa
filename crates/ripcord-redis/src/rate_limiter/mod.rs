//! [`RedisRateLimiter`]: one rate limit for a whole fleet, GCRA in Lua.
//!
//! The limiter's whole state is one theoretical arrival time (TAT) in a Redis
//! hash; each decision is [`Gcra::decide`] — the same arithmetic as ripcord's
//! in-process [`RateLimiter`](ripcord::RateLimiter), mirrored in Lua and
//! property-tested against it — run atomically by one script on the store's
//! clock. N instances sharing the limiter together admit `rate` per `period`
//! (plus one burst), whatever N is.
//!
//! **Cost:** unlike the breaker, every decision is one Redis round trip (one
//! `EVALSHA`): about 0.1–1 ms on a LAN, bounded by the store's
//! `response_timeout`. Use it where a fleet-wide limit is worth a round trip
//! (an upstream's global quota), and ripcord's local limiter for per-instance
//! protection. When the store cannot answer, [`OnUnavailable`] decides.
//!
//! ```no_run
//! use ripcord_redis::{RedisRateLimiter, RedisStore};
//! use std::time::Duration;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::builder("redis://127.0.0.1:6379").build().await?;
//! // 100 calls a second to the partner API, from the whole fleet.
//! let limiter = RedisRateLimiter::builder(&store, "partner-api")
//!     .rate(100, Duration::from_secs(1))
//!     .burst(10)
//!     .build()?;
//! match limiter.try_acquire().await {
//!     Ok(()) => { /* call the partner */ }
//!     Err(limited) => println!("over the fleet's quota; retry in {:?}", limited.retry_after()),
//! }
//! # Ok(()) }
//! ```

mod config;

pub use config::{OnUnavailable, RedisRateLimiterBuilder};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ripcord::rate_limiter::{Decision, Gcra};
use ripcord::store::StoreError;
use ripcord::RateLimited;

use crate::store::reply;
use crate::store::scripts::evalsha;
use crate::RedisStore;

/// A rate limit shared by every instance using the same store and name.
/// Cheap to clone.
///
/// See the [module docs](self).
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    store: RedisStore,
    name: String,
    key: String,
    slot: u16,
    gcra: Gcra,
    max_wait: Duration,
    ttl_ms: u64,
    on_unavailable: OnUnavailable,
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("name", &self.inner.name)
            .field("key", &self.inner.key)
            .field("gcra", &self.inner.gcra)
            .field("max_wait", &self.inner.max_wait)
            .finish()
    }
}

/// A pipeline's rate limiter shared by the fleet: runs
/// [`acquire`](RedisRateLimiter::acquire) (one round trip, waiting up to the
/// configured `max_wait`, and [`OnUnavailable`] when the store cannot answer).
///
/// ```no_run
/// use ripcord::Pipeline;
/// use ripcord_redis::{RedisRateLimiter, RedisStore};
/// use std::time::Duration;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379").build().await?;
/// let quota = RedisRateLimiter::builder(&store, "partner-api")
///     .rate(100, Duration::from_secs(1))
///     .build()?;
/// let pipeline = Pipeline::<String, std::io::Error>::builder()
///     .timeout(Duration::from_secs(2))
///     .external_rate_limiter(quota)
///     .build()?;
/// # let _ = pipeline; Ok(()) }
/// ```
impl ripcord::rate_limiter::ExternalLimiter for RedisRateLimiter {
    fn name(&self) -> &str {
        RedisRateLimiter::name(self)
    }

    fn acquire(&self) -> ripcord::rate_limiter::AcquireFuture<'_> {
        Box::pin(RedisRateLimiter::acquire(self))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RedisRateLimiter {
    /// Starts configuring a limiter named `name` on `store` (default: 100 a
    /// second, bursts of 100, no waiting).
    pub fn builder(store: &RedisStore, name: &str) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder::new(store, name)
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its GCRA parameters.
    pub fn gcra(&self) -> Gcra {
        self.inner.gcra
    }

    /// Decides a request for `n` permits, reserving them if they are due
    /// within `max_wait`: one round trip. Errors when the store cannot answer.
    pub async fn decide(&self, n: u32, max_wait: Duration) -> Result<Decision, StoreError> {
        let inner = &*self.inner;
        let store = &*inner.store.inner;
        let cmd = evalsha(
            &store.scripts.gcra,
            &[&inner.key],
            &[
                &inner.gcra.emission_interval,
                &inner.gcra.burst,
                &n,
                &nanos(max_wait).min(1 << 50),
                &inner.ttl_ms,
            ],
        );
        let v = store
            .conn
            .query(inner.slot, cmd)
            .await
            .map_err(|e| store.error(e))?;
        let corrupt = |detail: String| StoreError::Corrupt {
            key: inner.key.clone(),
            detail,
        };
        let items = match &v {
            redis::Value::ServerError(e) => {
                return Err(StoreError::Unavailable(format!(
                    "script on `{}` failed: {} {}",
                    inner.key,
                    e.code(),
                    e.details().unwrap_or("")
                )))
            }
            other => reply::array(other).map_err(corrupt)?,
        };
        if let Some(detail) = reply::corruption(items.get(2)) {
            inner.store.report_corruption(inner.key.clone(), detail);
        }
        let admitted = items.first().and_then(reply::int);
        let amount = items.get(1).and_then(reply::int);
        match (admitted, amount) {
            (Some(1), Some(wait)) => Ok(Decision::Admit {
                wait: u64::try_from(wait).unwrap_or(0),
            }),
            (Some(0), Some(retry)) => Ok(Decision::Reject {
                retry_after: u64::try_from(retry).unwrap_or(u64::MAX),
            }),
            _ => Err(corrupt(format!("bad limiter reply {items:?}"))),
        }
    }

    /// Takes a permit if one is available now; never waits for one (but does
    /// wait for the store's answer).
    pub async fn try_acquire(&self) -> Result<(), RateLimited> {
        match self.decide(1, Duration::ZERO).await {
            Ok(Decision::Admit { .. }) => Ok(()),
            Ok(Decision::Reject { retry_after }) => Err(self.limited(retry_after)),
            Err(_) => self.unavailable(),
        }
    }

    /// Takes a permit, waiting up to the configured `max_wait` for it (a
    /// permit due within `max_wait` is reserved at once, and the call sleeps
    /// until it is due).
    pub async fn acquire(&self) -> Result<(), RateLimited> {
        match self.decide(1, self.inner.max_wait).await {
            Ok(Decision::Admit { wait }) => {
                if wait > 0 {
                    tokio::time::sleep(Duration::from_nanos(wait)).await;
                }
                Ok(())
            }
            Ok(Decision::Reject { retry_after }) => Err(self.limited(retry_after)),
            Err(_) => self.unavailable(),
        }
    }

    fn limited(&self, retry_after: u64) -> RateLimited {
        RateLimited::new(&self.inner.name, Duration::from_nanos(retry_after))
    }

    fn unavailable(&self) -> Result<(), RateLimited> {
        match &self.inner.on_unavailable {
            OnUnavailable::Admit => Ok(()),
            OnUnavailable::Reject => Err(self.limited(0)),
            OnUnavailable::Local(local) => local.try_acquire(),
        }
    }
}

#[cfg(test)]
mod tests;
