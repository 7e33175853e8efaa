use ripcord::TimeoutPolicy;
use tower::Layer;

use super::TimeoutService;

/// Applies a [`TimeoutPolicy`] to a service: makes [`TimeoutService`]s,
/// which share the policy.
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    policy: TimeoutPolicy,
}

impl TimeoutLayer {
    /// A layer cutting calls at `policy`'s timeout.
    pub fn new(policy: TimeoutPolicy) -> Self {
        TimeoutLayer { policy }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService::new(inner, self.policy.clone())
    }
}
