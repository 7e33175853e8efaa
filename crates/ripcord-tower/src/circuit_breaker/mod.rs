//! A circuit breaker around a tower [`Service`].
//!
//! [`CircuitBreakerService`] asks its [`CircuitBreaker`] for a permit in
//! [`call`](Service::call). When the breaker is closed (or admits a half-open
//! probe) the request goes to the inner service, and the permit records the
//! outcome that the classifier gives the result. When the breaker refuses, the
//! inner service is **not** called and the returned future is ready at once
//! with a [`Rejected`](error::Rejected) error, boxed into a
//! [`tower::BoxError`]:
//!
//! ```
//! use ripcord::CircuitBreaker;
//! use ripcord_tower::CircuitBreakerLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::builder("db").consecutive_failures(1).build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .service(service_fn(|n: u32| async move {
//!         if n == 0 { Err("boom") } else { Ok(n) }
//!     }));
//!
//! assert!(svc.clone().oneshot(0).await.is_err()); // a failure trips the breaker
//! let err = svc.oneshot(1).await.unwrap_err();    // refused without a call
//! assert!(err.downcast_ref::<ripcord::Rejected>().is_some());
//! # Ok(()) }
//! ```
//!
//! # Readiness
//!
//! [`poll_ready`](Service::poll_ready) only asks the inner service: readiness is
//! never held back while the breaker is open, so a caller waiting for
//! readiness (a `Buffer`, a balancer) is not parked forever; the refusal comes
//! from `call`, fast. A refused call leaves the readiness it was given unused,
//! which tower allows (the next `poll_ready` may return it again).
//!
//! # Sharing
//!
//! Clones of the service share the breaker (it is one `Arc`), so every clone
//! made by a server or a balancer counts against the same dependency.
//!
//! # Classification
//!
//! The classifier is any [`Classify<Response, Error>`](ripcord::Classify) —
//! a closure works. The default, [`ErrorsAsFailures`], counts `Ok` as a
//! success and `Err` as a failure; for HTTP, use
//! [`HttpClassifier`](crate::http::HttpClassifier) (feature `http`), which
//! also counts 5xx and 429 responses as failures and ignores other 4xx.

pub mod error;
pub mod future;
mod layer;

pub use layer::CircuitBreakerLayer;

use std::task::{Context, Poll};

use ripcord::{CircuitBreaker, Classify, ErrorsAsFailures};
use tower::{BoxError, Service};

use self::future::ResponseFuture;

/// A [`Service`] whose calls go through a [`CircuitBreaker`]. See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, C = ErrorsAsFailures> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
}

impl<S> CircuitBreakerService<S> {
    /// Wraps `inner`, counting `Ok` as success and `Err` as failure.
    pub fn new(inner: S, breaker: CircuitBreaker) -> Self {
        CircuitBreakerService {
            inner,
            breaker,
            classifier: ErrorsAsFailures,
        }
    }
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Wraps `inner`, classifying each result with `classifier`.
    pub fn with_classifier(inner: S, breaker: CircuitBreaker, classifier: C) -> Self {
        CircuitBreakerService {
            inner,
            breaker,
            classifier,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
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

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire_owned() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.classifier.clone())
            }
            Err(rejected) => ResponseFuture::refused(Box::new(rejected)),
        }
    }
}
