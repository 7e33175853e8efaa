//! [`RedisRateLimiterBuilder`] and [`OnUnavailable`].

use std::sync::Arc;
use std::time::Duration;

use ripcord::rate_limiter::Gcra;
use ripcord::{RateLimiter, RateLimiterConfig};

use super::{Inner, RedisRateLimiter};
use crate::error::BuildError;
use crate::keys::slot;
use crate::RedisStore;

/// What a [`RedisRateLimiter`] does when the store cannot answer (down, slow,
/// or a corrupt reply).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum OnUnavailable {
    /// Admit the call (fail open; the default): an outage of Redis does not
    /// become an outage of the service.
    #[default]
    Admit,
    /// Refuse the call (fail closed), with a zero retry-after.
    Reject,
    /// Decide with this in-process limiter instead — typically the fleet's
    /// rate divided by the expected number of instances.
    Local(RateLimiter),
}

/// Configures a [`RedisRateLimiter`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct RedisRateLimiterBuilder {
    store: RedisStore,
    name: String,
    config: RateLimiterConfig,
    ttl: Duration,
    on_unavailable: OnUnavailable,
}

impl RedisRateLimiterBuilder {
    pub(crate) fn new(store: &RedisStore, name: &str) -> Self {
        RedisRateLimiterBuilder {
            store: store.clone(),
            name: name.to_string(),
            config: RateLimiterConfig::default(),
            ttl: Duration::from_secs(600),
            on_unavailable: OnUnavailable::default(),
        }
    }

    /// Takes rate, period, burst and max wait from a ripcord limiter
    /// configuration (so a local and a fleet-wide limiter read the same
    /// config).
    pub fn config(mut self, config: RateLimiterConfig) -> Self {
        self.config = config;
        self
    }

    /// `permits` per `period`, for the whole fleet.
    pub fn rate(mut self, permits: u32, period: Duration) -> Self {
        self.config.rate = permits;
        self.config.period = period;
        self
    }

    /// Permits that may be taken at once after a quiet spell (default: the
    /// rate).
    pub fn burst(mut self, burst: u32) -> Self {
        self.config.burst = Some(burst);
        self
    }

    /// How long [`acquire`](RedisRateLimiter::acquire) may wait for a permit
    /// (default 0).
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.config.max_wait = d;
        self
    }

    /// How long the limiter's key outlives its last admitted call (default
    /// 10 minutes; never less than a full bucket's refill time).
    pub fn ttl(mut self, d: Duration) -> Self {
        self.ttl = d;
        self
    }

    /// What to do when the store cannot answer (default: admit).
    pub fn on_unavailable(mut self, policy: OnUnavailable) -> Self {
        self.on_unavailable = policy;
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<RedisRateLimiter, BuildError> {
        self.config.validate().map_err(BuildError::Config)?;
        let c = &self.config;
        let gcra = Gcra::new(c.rate, c.period, c.burst.unwrap_or(c.rate));
        // Lua keeps numbers exact below 2^53 ns (about 104 days).
        if gcra.emission_interval.saturating_mul(u64::from(gcra.burst)) > 1 << 50 {
            return Err(BuildError::InvalidOption {
                option: "burst",
                expected: "a full bucket (burst × period / rate) under 13 days",
            });
        }
        let key = self.store.rate_limiter_key(&self.name);
        let refill =
            Duration::from_nanos(gcra.emission_interval.saturating_mul(u64::from(gcra.burst)))
                + c.max_wait
                + Duration::from_secs(1);
        Ok(RedisRateLimiter {
            inner: Arc::new(Inner {
                slot: slot(key.as_bytes()),
                key,
                ttl_ms: crate::store::ttl_millis(self.ttl.max(refill)),
                name: self.name,
                gcra,
                max_wait: c.max_wait,
                on_unavailable: self.on_unavailable,
                store: self.store,
            }),
        })
    }
}
