use ripcord::Retry;
use tower::Layer;

use super::RetryService;
use crate::pipeline::CloneRequest;

/// Applies a [`Retry`] policy to a service: makes [`RetryService`]s, which
/// share the policy (and its retry budget, if any).
#[derive(Debug, Clone)]
pub struct RetryLayer<R = CloneRequest> {
    retry: Retry,
    replay: R,
}

impl RetryLayer {
    /// A layer retrying by `retry`, replaying requests by cloning them
    /// ([`CloneRequest`]).
    pub fn new(retry: Retry) -> Self {
        RetryLayer {
            retry,
            replay: CloneRequest,
        }
    }
}

impl<R> RetryLayer<R> {
    /// How to get another copy of a request (see
    /// [`Replay`](crate::pipeline::Replay)); for HTTP,
    /// [`HttpReplay`](crate::http::HttpReplay).
    pub fn replay<R2>(self, replay: R2) -> RetryLayer<R2> {
        RetryLayer {
            retry: self.retry,
            replay,
        }
    }
}

impl<S, R: Clone> Layer<S> for RetryLayer<R> {
    type Service = RetryService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService::new(inner, self.retry.clone(), self.replay.clone())
    }
}
