//! HTTP and gRPC faults: answers, resets and stalled bodies.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use ripcord::chaos::Fault;
use ripcord::Chaos;
use tower::{BoxError, Layer, Service};

use super::{after_delay, fault_error, take_ready, BoxFuture};
use crate::http::POLICY_HEADER;

/// Makes [`HttpChaosService`]s; all of them share the policy. See the
/// [module docs](super).
///
/// ```
/// use http::{Request, Response, StatusCode};
/// use ripcord::Chaos;
/// use ripcord_tower::chaos::HttpChaosLayer;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let chaos = Chaos::builder("drill").abort(1.0).abort_status(429).build()?;
/// let svc = HttpChaosLayer::new(chaos).layer(service_fn(|_: Request<String>| async {
///     Ok::<_, std::io::Error>(Response::new(String::from("hello")))
/// }));
/// let response = svc.oneshot(Request::new(String::new())).await?;
/// assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(response.headers()["x-ripcord-policy"], "chaos");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HttpChaosLayer {
    chaos: Chaos,
    grpc: bool,
}

impl HttpChaosLayer {
    /// Injects `chaos`'s faults as HTTP answers.
    pub fn new(chaos: Chaos) -> Self {
        HttpChaosLayer { chaos, grpc: false }
    }

    /// Answers aborts and errors the gRPC way: trailers-only responses with a
    /// `grpc-status` (feature `grpc`).
    #[cfg(feature = "grpc")]
    pub fn grpc(mut self) -> Self {
        self.grpc = true;
        self
    }
}

impl<S> Layer<S> for HttpChaosLayer {
    type Service = HttpChaosService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpChaosService {
            inner,
            chaos: self.chaos.clone(),
            grpc: self.grpc,
        }
    }
}

/// An HTTP [`Service`] with faults injected in front of it; see the
/// [module docs](super).
#[derive(Debug, Clone)]
pub struct HttpChaosService<S> {
    inner: S,
    chaos: Chaos,
    grpc: bool,
}

impl<S> HttpChaosService<S> {
    /// The policy.
    pub fn chaos(&self) -> &Chaos {
        &self.chaos
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// gRPC's `INTERNAL` and `UNAVAILABLE` (as in `grpc::code`, which needs the
/// `grpc` feature).
const GRPC_INTERNAL: i32 = 13;
const GRPC_UNAVAILABLE: i32 = 14;

/// The answer to an injected abort or error, HTTP or gRPC.
fn answer<B: Default>(fault: Fault, grpc: bool) -> Response<ChaosBody<B>> {
    let mut response = Response::new(ChaosBody::new(B::default()));
    let headers = response.headers_mut();
    headers.insert(POLICY_HEADER, HeaderValue::from_static("chaos"));
    if grpc {
        let code = match fault {
            Fault::Abort { status: Some(s) } if (1..=16).contains(&s) => i32::from(s),
            Fault::Error => GRPC_INTERNAL,
            _ => GRPC_UNAVAILABLE,
        };
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(code));
        headers.insert("grpc-message", HeaderValue::from_static("injected%20fault"));
        return response;
    }
    *response.status_mut() = match fault {
        Fault::Abort { status: Some(s) } => {
            StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        }
        Fault::Error => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    response
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for HttpChaosService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ReqB: Send + 'static,
    ResB: Default + Send + 'static,
{
    type Response = Response<ChaosBody<ResB>>;
    type Error = BoxError;
    type Future = HttpChaosFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let Some(injection) = self.chaos.decide() else {
            return HttpChaosFuture {
                kind: Kind::Called {
                    future: self.inner.call(req),
                },
            };
        };
        let mut inner = take_ready(&mut self.inner);
        let (chaos, grpc) = (self.chaos.clone(), self.grpc);
        let future = after_delay(injection, async move {
            match injection.fault {
                None | Some(Fault::Outcome(_)) => inner
                    .call(req)
                    .await
                    .map(|r| r.map(ChaosBody::new))
                    .map_err(Into::into),
                Some(Fault::Stall) => {
                    let response = inner.call(req).await.map_err(Into::into)?;
                    Ok(response.map(ChaosBody::stalled))
                }
                Some(f @ (Fault::Abort { .. } | Fault::Error)) => Ok(answer(f, grpc)),
                Some(fault) => Err(fault_error(&chaos, fault)),
            }
        });
        HttpChaosFuture {
            kind: Kind::Injected {
                future: Box::pin(future),
            },
        }
    }
}

pin_project! {
    /// The response future of [`HttpChaosService`]: the inner call, or an
    /// injected fault (boxed, with its latency).
    pub struct HttpChaosFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

type Answer<B> = Result<Response<ChaosBody<B>>, BoxError>;

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Called { #[pin] future: F },
        Injected { future: BoxFuture<Answer<B>> },
    }
}

impl<F, B> std::fmt::Debug for HttpChaosFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpChaosFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for HttpChaosFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Answer<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => future
                .poll(cx)
                .map(|r| r.map(|r| r.map(ChaosBody::new)).map_err(Into::into)),
            KindProj::Injected { future } => future.as_mut().poll(cx),
        }
    }
}

pin_project! {
    /// The response body of [`HttpChaosService`]: the inner body, or — for
    /// an injected stall — one that never yields a frame (the peer's own
    /// timeout ends it).
    #[derive(Debug)]
    pub struct ChaosBody<B> {
        #[pin]
        inner: B,
        stalled: bool,
    }
}

impl<B> ChaosBody<B> {
    /// `inner`, unchanged.
    pub fn new(inner: B) -> Self {
        ChaosBody {
            inner,
            stalled: false,
        }
    }

    /// `inner`, never read: the body stalls.
    pub fn stalled(inner: B) -> Self {
        ChaosBody {
            inner,
            stalled: true,
        }
    }

    /// Whether the body stalls.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }
}

impl<B: Body> Body for ChaosBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.stalled {
            // Never woken: the stall lasts until the body is dropped.
            return Poll::Pending;
        }
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        !self.stalled && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
