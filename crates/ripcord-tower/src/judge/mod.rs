//! The breaker service behind the HTTP and gRPC breakers: one breaker (or
//! one per key) around a service whose responses are judged by a [`Judge`]
//! — at the head, or when the body ends (feature `http`).
//!
//! [`HttpCircuitBreakerLayer`](crate::http::HttpCircuitBreakerLayer) and
//! `grpc::GrpcCircuitBreakerLayer` (feature `grpc`) are this layer with
//! their judge, and their keyed variants pick the breaker from a
//! [`Registry`] with [`Keyed`]. A judge of your own plugs in with
//! [`JudgedBreakerLayer::with_judge`].
//!
//! The service asks for a permit in `call`. A refusal fails fast with
//! [`Rejected`](ripcord::Rejected) (or the registry's
//! [`RegistryError`](ripcord::registry::RegistryError)), boxed, without
//! calling the inner service; [`poll_ready`](Service::poll_ready) only asks
//! the inner service, so readiness is never held while a breaker is open.
//! An error from the inner service is a failure. A response goes to the
//! judge: [`Verdict::Now`] records at once, [`Verdict::AtEnd`] hands the
//! permit to the response body, which records when the stream ends.

pub mod future;

use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};

use http::{Request, Response};
use ripcord::{CircuitBreaker, Outcome, OwnedPermit, Registry};
use tower::{BoxError, Layer, Service};

use crate::keyed::ExtractKey;

use self::future::ResponseFuture;

/// When a response's outcome is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the head: record this outcome now.
    Now(Outcome),
    /// Only when the body ends: the permit goes with the body.
    AtEnd,
}

/// Judges responses whose body is `B` for a breaker: the head first, then
/// (for [`Verdict::AtEnd`]) the body, which it wraps.
pub trait Judge<B> {
    /// The body handed to the caller.
    type Body;

    /// The verdict on a response head.
    fn head(&self, response: &Response<B>) -> Verdict;

    /// Wraps the body. `pending` is the permit still to record (for a
    /// [`Verdict::AtEnd`] head), `None` when the head was recorded already.
    fn body(&self, body: B, pending: Option<OwnedPermit>) -> Self::Body;
}

/// Where a request's breaker comes from: one [`CircuitBreaker`] for every
/// request, or one per key ([`Keyed`]).
pub trait PickBreaker<Req> {
    /// A permit from the request's breaker, or why there is none (boxed:
    /// [`Rejected`](ripcord::Rejected) or a registry error).
    fn permit(&self, req: &Req) -> Result<OwnedPermit, BoxError>;
}

impl<Req> PickBreaker<Req> for CircuitBreaker {
    #[inline]
    fn permit(&self, _req: &Req) -> Result<OwnedPermit, BoxError> {
        self.try_acquire_owned()
            .map_err(|r| Box::new(r) as BoxError)
    }
}

/// One breaker per key, from a [`Registry`], by the key `extract` takes
/// from each request.
pub struct Keyed<K, X> {
    registry: Registry<K>,
    extract: X,
}

impl<K, X> Keyed<K, X> {
    /// Picks each request's breaker from `registry` by `extract`'s key.
    pub fn new(registry: Registry<K>, extract: X) -> Self {
        Keyed { registry, extract }
    }

    /// The registry of breakers.
    pub fn registry(&self) -> &Registry<K> {
        &self.registry
    }
}

impl<K, X: Clone> Clone for Keyed<K, X> {
    fn clone(&self) -> Self {
        Keyed {
            registry: self.registry.clone(),
            extract: self.extract.clone(),
        }
    }
}

impl<K, X> fmt::Debug for Keyed<K, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<Req, K, X> PickBreaker<Req> for Keyed<K, X>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    X: ExtractKey<Req, Key = K>,
{
    fn permit(&self, req: &Req) -> Result<OwnedPermit, BoxError> {
        let key = self.extract.extract(req);
        let breaker = self
            .registry
            .get(&key)
            .map_err(|e| Box::new(e) as BoxError)?;
        breaker
            .try_acquire_owned()
            .map_err(|r| Box::new(r) as BoxError)
    }
}

/// Makes [`JudgedBreakerService`]s; all of them share the breakers.
#[derive(Debug, Clone)]
pub struct JudgedBreakerLayer<J, P = CircuitBreaker> {
    breakers: P,
    judge: J,
}

impl<J, P> JudgedBreakerLayer<J, P> {
    /// A layer taking permits from `breakers` (a [`CircuitBreaker`] or
    /// [`Keyed`]) and judging responses with `judge`.
    pub fn with_judge(breakers: P, judge: J) -> Self {
        JudgedBreakerLayer { breakers, judge }
    }

    /// The breakers.
    pub fn breakers(&self) -> &P {
        &self.breakers
    }

    pub(crate) fn map_judge(self, f: impl FnOnce(J) -> J) -> Self {
        JudgedBreakerLayer {
            breakers: self.breakers,
            judge: f(self.judge),
        }
    }
}

impl<S, J: Clone, P: Clone> Layer<S> for JudgedBreakerLayer<J, P> {
    type Service = JudgedBreakerService<S, J, P>;

    fn layer(&self, inner: S) -> Self::Service {
        JudgedBreakerService {
            inner,
            breakers: self.breakers.clone(),
            judge: self.judge.clone(),
        }
    }
}

/// A breaker (or one per key) around a service, with responses judged by
/// a [`Judge`]; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct JudgedBreakerService<S, J, P = CircuitBreaker> {
    inner: S,
    breakers: P,
    judge: J,
}

impl<S, J, P> JudgedBreakerService<S, J, P> {
    /// Wraps `inner`.
    pub fn new(inner: S, breakers: P, judge: J) -> Self {
        JudgedBreakerService {
            inner,
            breakers,
            judge,
        }
    }

    /// The breakers (a [`CircuitBreaker`] or [`Keyed`]).
    pub fn breakers(&self) -> &P {
        &self.breakers
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

impl<S, J> JudgedBreakerService<S, J> {
    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breakers
    }
}

impl<S, J, P, ReqB, ResB> Service<Request<ReqB>> for JudgedBreakerService<S, J, P>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    J: Judge<ResB> + Clone,
    P: PickBreaker<Request<ReqB>>,
{
    type Response = Response<J::Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, J>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        match self.breakers.permit(&req) {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), permit, self.judge.clone()),
            Err(refused) => ResponseFuture::refused(refused),
        }
    }
}
