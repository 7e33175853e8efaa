//! A rate limiter around a tower [`Service`].
//!
//! [`RateLimitService`] takes a permit from its [`RateLimiter`] in `call`.
//! Within the rate, the inner service is called at once. Over it:
//!
//! - a limiter without a wait (`max_wait` zero, the default) refuses at
//!   once: the future is ready with [`RateLimited`](ripcord::RateLimited)
//!   (boxed; its `retry_after` says when a permit is due) and the inner
//!   service is not called;
//! - a limiter with a `max_wait` waits for the permit when it is due
//!   within that time, then calls the inner service; otherwise it refuses.
//!
//! [`poll_ready`](Service::poll_ready) only asks the inner service: readiness
//! is never held back while the limiter is over its rate (unlike
//! `tower::limit::RateLimit`, which sleeps in `poll_ready`). Clones share the
//! limiter. The inner service must be `Clone`: a waiting call takes the
//! service that was made ready and leaves a clone in its place.
//!
//! ```
//! use std::time::Duration;
//! use ripcord::RateLimiter;
//! use ripcord_tower::RateLimitLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = RateLimiter::builder("api").rate(1, Duration::from_secs(60)).burst(1).build()?;
//! let svc = RateLimitLayer::new(limiter)
//!     .layer(service_fn(|_: ()| async { Ok::<_, std::io::Error>("ran") }));
//! assert_eq!(svc.clone().oneshot(()).await.unwrap(), "ran");
//! let err = svc.oneshot(()).await.unwrap_err();
//! let limited = err.downcast_ref::<ripcord::RateLimited>().unwrap();
//! assert!(limited.retry_after() > Duration::from_secs(50));
//! # Ok(()) }
//! ```

mod layer;

/// The response future.
pub mod future {
    pub use crate::gate::ResponseFuture;
}

pub use layer::RateLimitLayer;

use std::task::{Context, Poll};
use std::time::Duration;

use ripcord::RateLimiter;
use tower::{BoxError, Service};

use crate::gate::ResponseFuture;

/// A [`Service`] whose calls are held to a rate; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: RateLimiter,
}

impl<S> RateLimitService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limiter: RateLimiter) -> Self {
        RateLimitService { inner, limiter }
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for RateLimitService<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.limiter.try_acquire() {
            Ok(()) => ResponseFuture::called(self.inner.call(req), None),
            Err(limited) if self.limiter.max_wait() == Duration::ZERO => {
                ResponseFuture::refused(Box::new(limited))
            }
            Err(_) => {
                let limiter = self.limiter.clone();
                let wait = Box::pin(async move {
                    match limiter.acquire().await {
                        Ok(()) => Ok(None),
                        Err(limited) => Err(Box::new(limited) as BoxError),
                    }
                });
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(wait, ready, req)
            }
        }
    }
}
