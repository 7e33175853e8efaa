use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use ripcord::{CircuitBreaker, Outcome, OwnedPermit};
use tower::{BoxError, Layer, Service};

use super::{classify_code, grpc_status, GrpcBody};

/// Makes [`GrpcCircuitBreakerService`]s; all of them share the breaker.
#[derive(Debug, Clone)]
pub struct GrpcCircuitBreakerLayer {
    breaker: CircuitBreaker,
    classify: fn(i32) -> Outcome,
}

impl GrpcCircuitBreakerLayer {
    /// A layer classifying status codes with [`classify_code`].
    pub fn new(breaker: CircuitBreaker) -> Self {
        GrpcCircuitBreakerLayer {
            breaker,
            classify: classify_code,
        }
    }

    /// Replaces the status-code rule.
    pub fn classify(mut self, classify: fn(i32) -> Outcome) -> Self {
        self.classify = classify;
        self
    }
}

impl<S> Layer<S> for GrpcCircuitBreakerLayer {
    type Service = GrpcCircuitBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcCircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify,
        }
    }
}

/// A circuit breaker for gRPC calls, unary and streaming; see the
/// [module docs](super). Readiness and refusals behave as in
/// [`CircuitBreakerService`](crate::CircuitBreakerService): a refused call
/// fails in `call` with [`ripcord::Rejected`], boxed (tonic turns a
/// middleware error into a `Status`; `Status::source()` holds the
/// rejection).
#[derive(Debug, Clone)]
pub struct GrpcCircuitBreakerService<S> {
    inner: S,
    breaker: CircuitBreaker,
    classify: fn(i32) -> Outcome,
}

impl<S> GrpcCircuitBreakerService<S> {
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

impl<S, ReqB, ResB> Service<Request<ReqB>> for GrpcCircuitBreakerService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<GrpcBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (future, permit, error) = match self.breaker.try_acquire_owned() {
            Ok(permit) => (Some(self.inner.call(req)), Some(permit), None),
            Err(rejected) => (None, None, Some(Box::new(rejected) as BoxError)),
        };
        ResponseFuture {
            future,
            permit,
            error,
            classify: self.classify,
        }
    }
}

pin_project! {
    /// The response future of [`GrpcCircuitBreakerService`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        future: Option<F>,
        permit: Option<OwnedPermit>,
        error: Option<BoxError>,
        classify: fn(i32) -> Outcome,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<GrpcBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(future) = this.future.as_pin_mut() else {
            return Poll::Ready(Err(this
                .error
                .take()
                .expect("ResponseFuture polled after completion")));
        };
        let result = ready!(future.poll(cx));
        let permit = this.permit.take();
        match result {
            Ok(response) => {
                let classify = *this.classify;
                let permit = match (response.status(), grpc_status(response.headers())) {
                    (StatusCode::OK, None) => permit, // the status comes in the trailers
                    (StatusCode::OK, Some(code)) => {
                        if let Some(p) = permit {
                            p.record(classify(code));
                        }
                        None
                    }
                    _ => {
                        if let Some(p) = permit {
                            p.record(Outcome::Failure);
                        }
                        None
                    }
                };
                Poll::Ready(Ok(response.map(|b| GrpcBody::new(b, permit, classify))))
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
