use ripcord::RateLimiter;
use tower::Layer;

use super::RateLimitService;

/// Applies a [`RateLimiter`] to a service: makes [`RateLimitService`]s,
/// which share the limiter.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
}

impl RateLimitLayer {
    /// A layer holding calls to `limiter`'s rate.
    pub fn new(limiter: RateLimiter) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, self.limiter.clone())
    }
}
