//! Fault injection as middleware: a [`ripcord::Chaos`] policy in front
//! of any service, or of an HTTP or gRPC service, client or server side.
//!
//! | fault | [`ChaosLayer`] (any service) | [`HttpChaosLayer`] (feature `http`) | `.grpc()` (feature `grpc`) |
//! |---|---|---|---|
//! | latency | waits, then calls | waits, then calls | waits, then calls |
//! | abort | error: [`Injected`](ripcord::chaos::Injected) | `abort_status` (default `503`) | trailers-only, `grpc-status` = `abort_status` when 1–16 (default `UNAVAILABLE`) |
//! | error | error: [`Injected`](ripcord::chaos::Injected) | `500` | `INTERNAL` |
//! | reset | error: an [`io::Error`](std::io::Error) of kind `ConnectionReset` | the same: a client sees a broken connection, a server (hyper) drops it | the same |
//! | stall | never answers | the inner response's head, then a body that never goes on | the same |
//! | forced outcome | calls (only breakers act on it) | calls | calls |
//!
//! Injected answers carry [`POLICY_HEADER`](crate::http::POLICY_HEADER)
//! `chaos`. The inner service is not called for an abort, an error or a
//! reset. A call the policy spares costs one `decide` and no allocation; an
//! injected latency boxes its future.
//!
//! ```
//! use ripcord::Chaos;
//! use ripcord_tower::chaos::ChaosLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let chaos = Chaos::builder("drill").abort(1.0).build()?;
//! let svc = ChaosLayer::new(chaos.clone())
//!     .layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//! let err = svc.clone().oneshot(1).await.unwrap_err();
//! assert!(err.downcast_ref::<ripcord::chaos::Injected>().is_some());
//!
//! chaos.disable();
//! assert_eq!(svc.oneshot(2).await?, 2);
//! # Ok(()) }
//! ```

#[cfg(feature = "http")]
mod http;

#[cfg(feature = "http")]
pub use self::http::{ChaosBody, HttpChaosFuture, HttpChaosLayer, HttpChaosService};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use ripcord::chaos::{Fault, Injection};
use ripcord::Chaos;
use tower::{BoxError, Layer, Service};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Makes [`ChaosService`]s; all of them share the policy.
#[derive(Debug, Clone)]
pub struct ChaosLayer {
    chaos: Chaos,
}

impl ChaosLayer {
    /// Injects `chaos`'s faults.
    pub fn new(chaos: Chaos) -> Self {
        ChaosLayer { chaos }
    }
}

impl<S> Layer<S> for ChaosLayer {
    type Service = ChaosService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ChaosService {
            inner,
            chaos: self.chaos.clone(),
        }
    }
}

/// A [`Service`] with faults injected in front of it; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct ChaosService<S> {
    inner: S,
    chaos: Chaos,
}

impl<S> ChaosService<S> {
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

/// The error of an injected fault the service answers with an error.
pub(crate) fn fault_error(chaos: &Chaos, fault: Fault) -> BoxError {
    let injected = chaos.injected(fault);
    match fault {
        Fault::Reset => Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            injected,
        )),
        _ => Box::new(injected),
    }
}

/// Takes the service that `poll_ready` made ready, leaving a clone in its
/// place, for a call made later (after an injected latency).
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

pin_project! {
    /// The response future of [`ChaosService`]: the inner call, or an
    /// injected fault (boxed, with its latency).
    pub struct ChaosFuture<F, R> {
        #[pin]
        kind: Kind<F, R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, R> {
        Called { #[pin] future: F },
        Injected { future: BoxFuture<Result<R, BoxError>> },
    }
}

impl<F, R> std::fmt::Debug for ChaosFuture<F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaosFuture").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for ChaosFuture<F, R>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => future.poll(cx).map_err(Into::into),
            KindProj::Injected { future } => future.as_mut().poll(cx),
        }
    }
}

/// Waits an injected latency, then gives `then` the fault, if any.
pub(crate) async fn after_delay<T>(injection: Injection, then: impl Future<Output = T>) -> T {
    if let Some(d) = injection.delay {
        tokio::time::sleep(d).await;
    }
    then.await
}

impl<S, Req> Service<Req> for ChaosService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ChaosFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(injection) = self.chaos.decide() else {
            return ChaosFuture {
                kind: Kind::Called {
                    future: self.inner.call(req),
                },
            };
        };
        let mut inner = take_ready(&mut self.inner);
        let chaos = self.chaos.clone();
        let future = after_delay(injection, async move {
            match injection.fault {
                None | Some(Fault::Outcome(_)) => inner.call(req).await.map_err(Into::into),
                Some(Fault::Stall) => std::future::pending().await,
                Some(fault) => Err(fault_error(&chaos, fault)),
            }
        });
        ChaosFuture {
            kind: Kind::Injected {
                future: Box::pin(future),
            },
        }
    }
}

#[cfg(test)]
mod tests;
