//! Server-side load shedding for axum and hyper servers (feature `http`).
//!
//! [`ShedService`] checks its policies **before** the handler runs and, when
//! one refuses, answers at once without reading the request body and without
//! calling the handler:
//!
//! | policy | refusal | response |
//! |---|---|---|
//! | [`RateLimiter`] | over the rate | `429 Too Many Requests`, `Retry-After` = time to the next permit |
//! | [`CircuitBreaker`] on the handler's own failures | open | `503 Service Unavailable`, `Retry-After` = time to the next probe |
//! | [`Bulkhead`] | every slot taken | `503 Service Unavailable`, `Retry-After: 1` |
//!
//! Each refusal also carries a header naming the policy
//! ([`POLICY_HEADER`], `x-ripcord-policy: rate_limiter` /
//! `circuit_breaker` / `bulkhead`) so operators and clients can tell shedding
//! from a handler's own errors. `Retry-After` is in whole seconds, rounded up,
//! at least 1. These answers are [`Refusal::of`](crate::http::Refusal::of)'s,
//! the mapping a proxy uses too.
//!
//! # gRPC
//!
//! With `ShedLayer::grpc` (feature `grpc`), for a tonic server, refusals
//! are trailers-only gRPC responses: `RESOURCE_EXHAUSTED` for the rate
//! limiter, `UNAVAILABLE` for the breaker and the bulkhead (with the same
//! `retry-after` and policy metadata), and the breaker judges the handler's
//! calls by their gRPC status (`grpc::classify_code`): a trailers-only
//! response at its head, a normal response from its `grpc-status` trailer
//! when the response stream ends (the body, a [`ShedBody`], records it; a
//! stream that fails or ends without a status is a failure, one dropped
//! before its end is ignored: nothing judged it yet, and the drop cancels
//! the call).
//!
//! # What the breaker records
//!
//! The policies run in that order: rate limiter, breaker, bulkhead. The
//! breaker judges the handler's response heads with
//! [`classify_status`](crate::http::classify_status):
//!
//! | the handler … | outcome |
//! |---|---|
//! | answers 5xx or 429 | **Failure**, at the head |
//! | answers another 4xx | Ignored, at the head |
//! | answers 1xx–3xx, and its body ends | Success, at the body's end |
//! | answers 1xx–3xx, and its body fails while streaming | **Failure** |
//! | answers 1xx–3xx, and its body is dropped before its end (the client went away) | **Success** |
//! | returns an error | **Failure** |
//!
//! A successful head waits for its body (a [`ShedBody`]) as in
//! [`HttpCircuitBreakerLayer`](crate::http::HttpCircuitBreakerLayer), by the
//! rule of [`body`](crate::body#what-a-breaker-records): the handler answered
//! and was sending, so an early drop is a success, and a failure mid-body
//! shows as a body error. A half-open breaker's probe therefore lasts until
//! its body ends. The bulkhead slot is held until the handler's response
//! future completes (the response head), not while its body streams.
//!
//! ```
//! use axum::{routing::get, Router};
//! use ripcord::RateLimiter;
//! use ripcord_tower::shed::ShedLayer;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), ripcord::ConfigError> {
//! let limiter = RateLimiter::builder("api").rate(100, Duration::from_secs(1)).build()?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(ShedLayer::new().rate_limiter(limiter));
//! # let _ = app;
//! # Ok(()) }
//! ```

pub mod body;
pub mod future;
mod layer;
#[cfg(test)]
mod tests;

/// The header naming the policy that shed a request: `x-ripcord-policy`
/// (the same as [`http::POLICY_HEADER`](crate::http::POLICY_HEADER)).
pub use crate::http::POLICY_HEADER;
pub use body::{ShedBody, ShedEnd};
pub use layer::ShedLayer;

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Request, Response};
use ripcord::{Bulkhead, CircuitBreaker, Error, RateLimiter};
use tower::Service;

use self::future::ResponseFuture;
use crate::http::Refusal;

#[derive(Debug, Clone, Default)]
pub(crate) struct Policies {
    pub(crate) rate_limiter: Option<RateLimiter>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) bulkhead: Option<Bulkhead>,
    pub(crate) grpc: bool,
}

/// A [`Service`] that sheds load before its inner service (the handler)
/// runs. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ShedService<S> {
    inner: S,
    policies: Policies,
}

impl<S> ShedService<S> {
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

/// The answer to a refusal: [`Refusal::response`], or for gRPC (feature
/// `grpc`) [`Refusal::grpc_response`].
fn shed_response<B: Default, E>(grpc: bool, error: ripcord::Error<E>) -> Response<B> {
    let refusal = Refusal::of(&error);
    #[cfg(feature = "grpc")]
    if grpc {
        return refusal.grpc_response(B::default());
    }
    let _ = grpc;
    refusal.response(B::default())
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ShedService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Default,
{
    type Response = Response<ShedBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let p = &self.policies;
        if let Some(limiter) = &p.rate_limiter {
            if let Err(limited) = limiter.try_acquire() {
                return ResponseFuture::shed(shed_response(
                    p.grpc,
                    Error::<Infallible>::RateLimited(limited),
                ));
            }
        }
        let permit = match &p.breaker {
            Some(breaker) => match breaker.try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(rejected) => {
                    return ResponseFuture::shed(shed_response(
                        p.grpc,
                        Error::<Infallible>::Rejected(rejected),
                    ))
                }
            },
            None => None,
        };
        let slot = match &p.bulkhead {
            Some(bulkhead) => match bulkhead.try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(full) => {
                    return ResponseFuture::shed(shed_response(
                        p.grpc,
                        Error::<Infallible>::BulkheadFull(full),
                    ))
                }
            },
            None => None,
        };
        ResponseFuture::called(self.inner.call(req), permit, slot, p.grpc)
    }
}
