//! A whole [`ripcord::Pipeline`] around a tower [`Service`].
//!
//! [`PipelineService`] runs every request through the pipeline's policies —
//! timeout, retry, circuit breaker, rate limiter, bulkhead, fallback, hedge —
//! in the order the pipeline was built. The pipeline's error type is
//! [`tower::BoxError`]: the inner service's errors are boxed before the
//! policies see them, so one pipeline fits any inner service.
//!
//! ```
//! use ripcord::{CircuitBreaker, Pipeline, Retry};
//! use ripcord_tower::PipelineLayer;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{service_fn, BoxError, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let pipeline: Pipeline<u32, BoxError> = Pipeline::builder()
//!     .timeout(Duration::from_secs(1))
//!     .retry(Retry::builder("api").max_attempts(3).backoff(ripcord::Backoff::fixed(Duration::from_millis(1))))
//!     .circuit_breaker(CircuitBreaker::builder("api"))
//!     .build()?;
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = calls.clone();
//! let svc = PipelineLayer::new(pipeline).layer(service_fn(move |n: u32| {
//!     let attempt = counter.fetch_add(1, Ordering::SeqCst);
//!     async move { if attempt == 0 { Err::<u32, BoxError>("flaky".into()) } else { Ok(n * 2) } }
//! }));
//! assert_eq!(svc.oneshot(21).await?, 42); // the second attempt succeeded
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! # Ok(()) }
//! ```
//!
//! # Readiness and cloning
//!
//! The service is `Clone` and clones share the pipeline (one `Arc`).
//! [`poll_ready`](Service::poll_ready) drives the inner service to
//! readiness; it never waits on a policy, so an open breaker or a full
//! bulkhead refuses in `call`, fast, and readiness is not held for it.
//! `call` takes the service that was made ready (leaving a clone in its
//! place, as `tower::util::Oneshot`-style callers expect: the inner service
//! must be `Clone` and cheap to clone — hyper and reqwest clients, tonic
//! channels and `tower::buffer::Buffer` are) and calls it for the first
//! attempt once the policies admit it; a retry or a hedge drives that same
//! service to readiness again before each further attempt.
//!
//! # Replaying requests
//!
//! A retry or a hedge needs the request again. How to get another copy is a
//! [`Replay`]: [`CloneRequest`] (the default, for `Req: Clone`), [`NoReplay`],
//! or for HTTP [`HttpReplay`](crate::http::HttpReplay), which replays only
//! idempotent or explicitly retryable requests. When a request cannot be
//! replayed, it goes through the pipeline given to
//! [`PipelineLayer::non_replayable`] (build it without a retry, sharing the
//! breaker instance); without one, a second attempt fails with
//! [`error::NotReplayable`].
//!
//! # Errors
//!
//! The inner service's errors come back as they were (boxed); a policy's
//! refusal comes back as its own error struct ([`ripcord::Rejected`],
//! [`ripcord::Timeout`], [`ripcord::BulkheadFull`],
//! [`ripcord::RateLimited`]), boxed, so `downcast_ref` finds it. A failed
//! fallback chain comes back as its primary error.
//!
//! # Cost
//!
//! A pipeline whose policies all decide at once — timeouts, circuit
//! breakers, bulkheads without a queue, rate limiters that never wait —
//! runs without allocating (up to two breakers and bulkheads in the
//! pipeline; more share one allocation): the policies admit the call in `call`
//! ([`Pipeline::admit`](ripcord::Pipeline::admit)), the inner service is
//! called in place (no clone), and the [`ResponseFuture`] is the inner
//! call's future raced against the deadline, whose timer is created only if
//! the call is still pending at its first poll.
//!
//! A pipeline with a retry, a hedge, a fallback or a policy that may wait
//! boxes its future (one allocation) and clones the inner service once
//! per call (the `poll_ready`/`call` hand-over above). A request is copied
//! for a possible retry only when the pipeline has a retry or a hedge.

pub mod error;
pub mod future;
mod layer;

pub use future::ResponseFuture;
pub use layer::PipelineLayer;

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use ripcord::{Pipeline, PolicyKind};
use tower::{BoxError, Service};

use self::error::NotReplayable;

/// Gives another copy of a request, for a retry or a hedge, or `None` when
/// the request must not be sent twice.
pub trait Replay<Req> {
    /// Another copy of `req`, or `None` if it must not be replayed.
    fn replay(&self, req: &Req) -> Option<Req>;
}

/// Replays requests by cloning them.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneRequest;

impl<Req: Clone> Replay<Req> for CloneRequest {
    fn replay(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// Never replays a request: each is sent at most once.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplay;

impl<Req> Replay<Req> for NoReplay {
    fn replay(&self, _req: &Req) -> Option<Req> {
        None
    }
}

/// A [`Service`] whose calls go through a [`ripcord::Pipeline`]. See the
/// [module docs](self).
pub struct PipelineService<S, T, R = CloneRequest> {
    inner: S,
    pipeline: Pipeline<T, BoxError>,
    once: Option<Pipeline<T, BoxError>>,
    replay: R,
}

impl<S: Clone, T, R: Clone> Clone for PipelineService<S, T, R> {
    fn clone(&self) -> Self {
        PipelineService {
            inner: self.inner.clone(),
            pipeline: self.pipeline.clone(),
            once: self.once.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<S: fmt::Debug, T, R> fmt::Debug for PipelineService<S, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineService")
            .field("inner", &self.inner)
            .field("pipeline", &self.pipeline.name())
            .finish_non_exhaustive()
    }
}

impl<S, T, R> PipelineService<S, T, R> {
    /// Wraps `inner`; see [`PipelineLayer`] for the options.
    pub fn new(
        inner: S,
        pipeline: Pipeline<T, BoxError>,
        once: Option<Pipeline<T, BoxError>>,
        replay: R,
    ) -> Self {
        PipelineService {
            inner,
            pipeline,
            once,
            replay,
        }
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline<T, BoxError> {
        &self.pipeline
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

impl<S, T, R, Req> Service<Req> for PipelineService<S, T, R>
where
    S: Service<Req, Response = T> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    T: Send + 'static,
    Req: Send + 'static,
    R: Replay<Req> + Clone + Send + Sync + 'static,
{
    type Response = T;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        start(
            &self.pipeline,
            self.once.as_ref(),
            &mut self.inner,
            &self.replay,
            req,
        )
    }
}

/// Starts a call of `inner` (made ready by `poll_ready`) through
/// `pipeline`: directly when its policies all decide at once, boxed
/// otherwise (see [`run`]).
pub(crate) fn start<S, T, R, Req>(
    pipeline: &Pipeline<T, BoxError>,
    once: Option<&Pipeline<T, BoxError>>,
    inner: &mut S,
    replay: &R,
    req: Req,
) -> ResponseFuture<S::Future, T>
where
    S: Service<Req, Response = T> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    T: Send + 'static,
    Req: Send + 'static,
    R: Replay<Req> + Clone + Send + Sync + 'static,
{
    match pipeline.admit() {
        Some(Ok(admitted)) => ResponseFuture::admitted(inner.call(req), admitted),
        Some(Err(refused)) => ResponseFuture::refused(into_box_error(refused)),
        None => {
            let clone = inner.clone();
            let ready = std::mem::replace(inner, clone);
            ResponseFuture::boxed(run(pipeline, once, ready, replay, req))
        }
    }
}

/// What the attempts of one call share: the inner service (made ready by
/// the caller for the first attempt) and the request, until the first
/// attempt takes it.
struct Attempts<S, Req> {
    svc: S,
    first: Option<Req>,
    /// Boxed: a request is large, and most calls never need a copy.
    template: Option<Box<Req>>,
}

/// Runs `req` through `pipeline` (or `once` if the request cannot be
/// replayed), calling `ready` — an inner service that `poll_ready` has made
/// ready — for the first attempt and driving it to readiness again for any
/// later one.
pub(crate) fn run<S, T, R, Req>(
    pipeline: &Pipeline<T, BoxError>,
    once: Option<&Pipeline<T, BoxError>>,
    ready: S,
    replay: &R,
    req: Req,
) -> Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>
where
    S: Service<Req, Response = T> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    T: Send + 'static,
    Req: Send + 'static,
    R: Replay<Req> + Clone + Send + Sync + 'static,
{
    // Copies are needed only by a retry or a hedge.
    let again = pipeline
        .kinds()
        .any(|k| matches!(k, PolicyKind::Retry | PolicyKind::Hedge));
    let template = if again {
        replay.replay(&req).map(Box::new)
    } else {
        None
    };
    let pipeline = match (&template, once) {
        (None, Some(once)) if again => once.clone(),
        _ => pipeline.clone(),
    };
    let replay = replay.clone();
    let shared = Mutex::new(Attempts {
        svc: ready,
        first: Some(req),
        template,
    });
    Box::pin(async move {
        let attempt = || {
            let shared = &shared;
            let replay = &replay;
            async move {
                let first = {
                    let mut attempts = lock(shared);
                    // The service is still ready from `poll_ready`.
                    let req = attempts.first.take();
                    req.map(|req| attempts.svc.call(req))
                };
                let future = match first {
                    Some(future) => future,
                    None => {
                        // Boxed, so that the attempt's future stays small
                        // for the first attempt.
                        let mut req = lock(shared)
                            .template
                            .as_ref()
                            .and_then(|t| replay.replay(t))
                            .map(Box::new);
                        if req.is_none() {
                            return Err(Box::new(NotReplayable(())) as BoxError);
                        }
                        poll_fn(|cx| {
                            let mut attempts = lock(shared);
                            match attempts.svc.poll_ready(cx) {
                                Poll::Ready(Ok(())) => match req.take() {
                                    Some(req) => Poll::Ready(Ok(attempts.svc.call(*req))),
                                    None => {
                                        Poll::Ready(Err(Box::new(NotReplayable(())) as BoxError))
                                    }
                                },
                                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                                Poll::Pending => Poll::Pending,
                            }
                        })
                        .await?
                    }
                };
                future.await.map_err(Into::into)
            }
        };
        pipeline.execute(attempt).await.map_err(into_box_error)
    })
}

fn lock<S, Req>(m: &Mutex<Attempts<S, Req>>) -> std::sync::MutexGuard<'_, Attempts<S, Req>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Flattens a pipeline's error into a [`BoxError`] holding the inner
/// service's error as it was, or the policy's own error struct.
pub fn into_box_error(error: ripcord::Error<BoxError>) -> BoxError {
    match error {
        ripcord::Error::Inner(e) => e,
        ripcord::Error::Rejected(r) => Box::new(r),
        ripcord::Error::Timeout(t) => Box::new(t),
        ripcord::Error::BulkheadFull(b) => Box::new(b),
        ripcord::Error::RateLimited(r) => Box::new(r),
        ripcord::Error::Fallback(f) => into_box_error(f.into_parts().0),
        other => other.to_string().into(),
    }
}
