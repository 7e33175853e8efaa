//! A timeout around a tower [`Service`], from a [`TimeoutPolicy`].
//!
//! [`TimeoutService`] fails a call that has not finished by its deadline
//! with [`ripcord::Timeout`], boxed, and drops the inner call's future. The
//! deadline is the policy's timeout from the moment of `call`, or the
//! enclosing task's deadline
//! ([`current_deadline`](ripcord::timeout::current_deadline)) if that is
//! earlier. A call that finishes at its first poll never creates a timer.
//!
//! ```
//! use std::time::Duration;
//! use ripcord::TimeoutPolicy;
//! use ripcord_tower::TimeoutLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = TimeoutPolicy::builder("api").timeout(Duration::from_millis(20)).build()?;
//! let svc = TimeoutLayer::new(policy).layer(service_fn(|_: ()| async {
//!     tokio::time::sleep(Duration::from_secs(5)).await;
//!     Ok::<_, std::io::Error>("late")
//! }));
//! let err = svc.oneshot(()).await.unwrap_err();
//! assert_eq!(err.downcast_ref::<ripcord::Timeout>().unwrap().name(), "api");
//! # Ok(()) }
//! ```
//!
//! Readiness is the inner service's; clones share the policy. The deadline
//! covers the response future only: for an HTTP response whose body
//! streams afterwards, the body is not bounded.
//!
//! A call cut at the deadline emits the policy's `TimedOut` event (see
//! [`TimeoutPolicy::timed_out`]). Unlike a timeout inside a
//! [`PipelineLayer`](crate::PipelineLayer), the layer does not publish its
//! deadline to the services inside it (a pipeline or a retry further in
//! does not see it as
//! [`current_deadline`](ripcord::timeout::current_deadline)): publishing
//! costs a task-local swap on every poll of the call. When it matters, use
//! a `PipelineLayer` with a timeout (and the breaker, bulkhead, … in the
//! same pipeline): a pipeline of policies that decide at once costs little
//! more than the separate layers.

pub mod future;
mod layer;

pub use layer::TimeoutLayer;

use std::task::{Context, Poll};

use ripcord::TimeoutPolicy;
use tokio::time::Instant;
use tower::{BoxError, Service};

use self::future::ResponseFuture;

/// A [`Service`] whose calls are cut at their deadline; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    policy: TimeoutPolicy,
}

impl<S> TimeoutService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: TimeoutPolicy) -> Self {
        TimeoutService { inner, policy }
    }

    /// The policy.
    pub fn policy(&self) -> &TimeoutPolicy {
        &self.policy
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

impl<S, Req> Service<Req> for TimeoutService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let now = Instant::now();
        let mut deadline = now + self.policy.duration();
        if let Some(outer) = ripcord::timeout::current_deadline() {
            deadline = deadline.min(outer);
        }
        ResponseFuture::new(
            self.inner.call(req),
            deadline,
            deadline.saturating_duration_since(now),
            &self.policy,
        )
    }
}
