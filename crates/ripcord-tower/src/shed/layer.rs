use ripcord::{Bulkhead, CircuitBreaker, RateLimiter};
use tower::Layer;

use super::{Policies, ShedService};

/// Makes [`ShedService`]s; all of them share the policies. With no policy
/// set, it passes every request through.
#[derive(Debug, Clone, Default)]
pub struct ShedLayer {
    policies: Policies,
}

impl ShedLayer {
    /// A layer with no policy yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sheds requests over `limiter`'s rate with `429`.
    pub fn rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.policies.rate_limiter = Some(limiter);
        self
    }

    /// Records the handler's responses on `breaker` (5xx, 429 and body
    /// errors fail; see the [module docs](super#what-the-breaker-records))
    /// and sheds with `503` while it is open.
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.policies.breaker = Some(breaker);
        self
    }

    /// Sheds with `503` when every slot of `bulkhead` is taken (it never
    /// queues: a server should answer, not wait).
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.policies.bulkhead = Some(bulkhead);
        self
    }
}

#[cfg(feature = "grpc")]
impl ShedLayer {
    /// Answers refusals the gRPC way (feature `grpc`); see the
    /// [module docs](super#grpc).
    pub fn grpc(mut self) -> Self {
        self.policies.grpc = true;
        self
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = ShedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ShedService {
            inner,
            policies: self.policies.clone(),
        }
    }
}
