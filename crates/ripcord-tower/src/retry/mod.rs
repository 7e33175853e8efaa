//! Retries around a tower [`Service`], from a [`Retry`] policy.
//!
//! [`RetryService`] sends a request, hands the result to the policy, and
//! while the policy asks for another attempt waits its delay, drives the
//! inner service to readiness again and sends another copy of the request.
//! The last result is returned as it came (an error boxed): a response the
//! policy still finds retryable after the last attempt (a 503) comes back as
//! a response.
//!
//! The policy's predicates are typed: they judge a
//! `Result<S::Response, BoxError>` (the inner service's errors are boxed
//! first). For HTTP, build the policy with
//! [`http::retry_rules`](crate::http::retry_rules) (retry 5xx, 429 and
//! transport errors; wait at least what `Retry-After` asks) and replay with
//! [`HttpReplay`](crate::http::HttpReplay), which copies only requests that
//! are safe to send twice (idempotent methods, or marked
//! [`Retryable`](crate::http::Retryable)) with a body that can be cloned:
//!
//! ```
//! use std::time::Duration;
//! use ripcord::{Backoff, Retry};
//! use ripcord_tower::http::{retry_rules, HttpReplay};
//! use ripcord_tower::RetryLayer;
//!
//! # fn main() -> Result<(), ripcord::ConfigError> {
//! // A retry for a hyper client whose responses have a body of type B.
//! # type B = String;
//! let retry = retry_rules::<B>(
//!     Retry::builder("api").max_attempts(3).backoff(Backoff::fixed(Duration::from_millis(50))),
//! )
//! .build()?;
//! let layer = RetryLayer::new(retry).replay(HttpReplay);
//! # let _ = layer;
//! # Ok(()) }
//! ```
//!
//! # Readiness and cost
//!
//! [`poll_ready`](Service::poll_ready) asks the inner service; `call` takes
//! the service that was made ready for the first attempt (leaving a clone in
//! its place, so the inner service must be `Clone`) and drives that same
//! service to readiness again before each retry. A request the [`Replay`]
//! will not copy (a POST, a streaming body) is sent once, with no retry and
//! no allocation: the inner future is returned as it is. A replayable
//! request's attempts run in one boxed future.

mod layer;

pub use layer::RetryLayer;

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use ripcord::retry::RetryStep;
use ripcord::Retry;
use tower::{BoxError, Service};

use crate::pipeline::{CloneRequest, Replay};

/// A [`Service`] that retries failed calls; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RetryService<S, R = CloneRequest> {
    inner: S,
    retry: Retry,
    replay: R,
}

impl<S, R> RetryService<S, R> {
    /// Wraps `inner`: `retry` decides, `replay` copies requests.
    pub fn new(inner: S, retry: Retry, replay: R) -> Self {
        RetryService {
            inner,
            retry,
            replay,
        }
    }

    /// The retry policy.
    pub fn retry(&self) -> &Retry {
        &self.retry
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

type Attempts<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// The response future of [`RetryService`]: the single call of a
    /// request that cannot be replayed, or every attempt of one that can.
    pub struct ResponseFuture<F, T> {
        #[pin]
        kind: Kind<F, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T> {
        Once {
            #[pin]
            future: F,
        },
        Retrying {
            attempts: Attempts<T>,
        },
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Once { .. } => "once",
            Kind::Retrying { .. } => "retrying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Once { future } => Poll::Ready(ready!(future.poll(cx)).map_err(Into::into)),
            KindProj::Retrying { attempts } => attempts.as_mut().poll(cx),
        }
    }
}

impl<S, R, Req> Service<Req> for RetryService<S, R>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    Req: Send + 'static,
    R: Replay<Req> + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(template) = self.replay.replay(&req) else {
            return ResponseFuture {
                kind: Kind::Once {
                    future: self.inner.call(req),
                },
            };
        };
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        let retry = self.retry.clone();
        let replay = self.replay.clone();
        let attempts = Box::pin(async move {
            let mut run = retry.start();
            let mut next = Some(req);
            loop {
                run.begin_attempt();
                let result = match next.take() {
                    Some(req) => svc.call(req).await.map_err(Into::into),
                    None => match replay.replay(&template) {
                        Some(req) => {
                            let ready = poll_fn(|cx| svc.poll_ready(cx).map_err(Into::into));
                            match ready.await {
                                Ok(()) => svc.call(req).await.map_err(Into::into),
                                Err(e) => Err(e),
                            }
                        }
                        None => {
                            Err(Box::new(crate::pipeline::error::NotReplayable(())) as BoxError)
                        }
                    },
                };
                match run.next(result) {
                    RetryStep::Done(result) => return result,
                    RetryStep::Retry { after } => tokio::time::sleep(after).await,
                }
            }
        });
        ResponseFuture {
            kind: Kind::Retrying { attempts },
        }
    }
}
