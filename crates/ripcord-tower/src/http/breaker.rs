//! A circuit breaker for HTTP clients that also sees body errors.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use ripcord::{CircuitBreaker, Outcome, OwnedPermit};
use tower::{BoxError, Layer, Service};

use super::classify_status;

/// Makes [`HttpCircuitBreakerService`]s; all of them share the breaker.
#[derive(Debug, Clone)]
pub struct HttpCircuitBreakerLayer {
    breaker: CircuitBreaker,
    status: fn(StatusCode) -> Outcome,
}

impl HttpCircuitBreakerLayer {
    /// A layer judging statuses with [`classify_status`].
    pub fn new(breaker: CircuitBreaker) -> Self {
        HttpCircuitBreakerLayer {
            breaker,
            status: classify_status,
        }
    }

    /// Replaces the status rule.
    pub fn status(mut self, status: fn(StatusCode) -> Outcome) -> Self {
        self.status = status;
        self
    }
}

impl<S> Layer<S> for HttpCircuitBreakerLayer {
    type Service = HttpCircuitBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpCircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            status: self.status,
        }
    }
}

/// A circuit breaker for an HTTP client that judges the response head and,
/// for a successful head, the body too: the response body is wrapped in a
/// [`RecordedBody`], and a body that fails while streaming (the connection
/// reset mid-body, a truncated chunked body) counts as a **failure**.
///
/// A failed or ignored head (5xx, 429, other 4xx) is recorded at once. A
/// successful head is recorded as a success when the body ends — or when it
/// is dropped unread, since nothing went wrong. Readiness and refusals behave
/// as in [`CircuitBreakerService`](crate::CircuitBreakerService).
#[derive(Debug, Clone)]
pub struct HttpCircuitBreakerService<S> {
    inner: S,
    breaker: CircuitBreaker,
    status: fn(StatusCode) -> Outcome,
}

impl<S> HttpCircuitBreakerService<S> {
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

impl<S, ReqB, ResB> Service<Request<ReqB>> for HttpCircuitBreakerService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RecordedBody<ResB>>;
    type Error = BoxError;
    type Future = HttpResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (future, permit, error) = match self.breaker.try_acquire_owned() {
            Ok(permit) => (Some(self.inner.call(req)), Some(permit), None),
            Err(rejected) => (None, None, Some(Box::new(rejected) as BoxError)),
        };
        HttpResponseFuture {
            future,
            permit,
            error,
            status: self.status,
        }
    }
}

pin_project! {
    /// The response future of [`HttpCircuitBreakerService`].
    #[derive(Debug)]
    pub struct HttpResponseFuture<F> {
        #[pin]
        future: Option<F>,
        permit: Option<OwnedPermit>,
        error: Option<BoxError>,
        status: fn(StatusCode) -> Outcome,
    }
}

impl<F, B, E> Future for HttpResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RecordedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(future) = this.future.as_pin_mut() else {
            return Poll::Ready(Err(this
                .error
                .take()
                .expect("HttpResponseFuture polled after completion")));
        };
        let result = ready!(future.poll(cx));
        let permit = this.permit.take();
        match result {
            Ok(response) => {
                let permit = match (this.status)(response.status()) {
                    Outcome::Success => permit,
                    outcome => {
                        if let Some(p) = permit {
                            p.record(outcome);
                        }
                        None
                    }
                };
                Poll::Ready(Ok(response.map(|inner| RecordedBody {
                    inner,
                    pending: Pending(permit),
                })))
            }
            Err(e) => {
                if let Some(p) = permit {
                    p.record(Outcome::Failure);
                }
                Poll::Ready(Err(e.into()))
            }
        }
    }
}

/// A permit waiting for the body's verdict; a success if dropped.
#[derive(Debug)]
struct Pending(Option<OwnedPermit>);

impl Pending {
    fn record(&mut self, outcome: Outcome) {
        if let Some(p) = self.0.take() {
            p.record(outcome);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.record(Outcome::Success);
    }
}

pin_project! {
    /// A response body that records its call as a failure if it fails while
    /// streaming, and as a success when it ends or is dropped.
    #[derive(Debug)]
    pub struct RecordedBody<B> {
        #[pin]
        inner: B,
        pending: Pending,
    }
}

impl<B: Body> Body for RecordedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Err(_)) => this.pending.record(Outcome::Failure),
            None => this.pending.record(Outcome::Success),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
