//! Per-key circuit breakers: one breaker per dependency, picked from a
//! [`Registry`] by a key taken from each request.
//!
//! One failing host (or route, or tenant) opens its own breaker and never
//! refuses calls to another key. Keys are extracted by an [`ExtractKey`]: any
//! closure `Fn(&Request) -> K`, or for HTTP (feature `http`)
//! [`HostKey`](crate::http::HostKey) (scheme + authority, the default),
//! [`RouteKey`](crate::http::RouteKey) (the route template a path matches,
//! with one fixed key for unmatched paths, so the number of breakers stays
//! bounded) and [`HeaderKey`](crate::http::HeaderKey); for gRPC (feature
//! `grpc`) `grpc::MethodKey` and `grpc::ServiceKey`.
//!
//! ```
//! use ripcord::{CircuitBreaker, Registry};
//! use ripcord_tower::keyed::KeyedCircuitBreakerLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry: Registry<String> =
//!     Registry::builder(CircuitBreaker::builder("hosts").consecutive_failures(1)).build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(KeyedCircuitBreakerLayer::new(registry, |host: &(String, bool)| host.0.clone()))
//!     .service(service_fn(|(_, ok): (String, bool)| async move {
//!         if ok { Ok("fine") } else { Err("down") }
//!     }));
//!
//! assert!(svc.clone().oneshot(("a".into(), false)).await.is_err()); // trips `a`
//! assert!(svc.clone().oneshot(("b".into(), true)).await.is_ok());   // `b` unaffected
//! let err = svc.oneshot(("a".into(), true)).await.unwrap_err();
//! assert!(err.is::<ripcord::Rejected>());
//! # Ok(()) }
//! ```
//!
//! [`KeyedPipelineLayer`] does the same with whole pipelines, from a
//! `Registry<K, Pipeline<T, BoxError>>` (see
//! [`PipelineLayer`](crate::PipelineLayer) for how pipelines wrap a service).
//!
//! If the registry cannot hand out a breaker (it is full of open breakers),
//! the call fails fast with the [`RegistryError`](ripcord::registry::RegistryError).

mod layer;
mod pipeline;

pub use layer::KeyedCircuitBreakerLayer;
pub use pipeline::{KeyedPipelineLayer, KeyedPipelineService};

use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};

use ripcord::{Classify, ErrorsAsFailures, Registry};
use tower::{BoxError, Service};

use crate::circuit_breaker::future::ResponseFuture;

/// Takes the key of a request, to pick its breaker.
///
/// Implemented for every `Fn(&Req) -> K`.
pub trait ExtractKey<Req> {
    /// The key type.
    type Key;

    /// The request's key.
    fn extract(&self, req: &Req) -> Self::Key;
}

impl<Req, K, F> ExtractKey<Req> for F
where
    F: Fn(&Req) -> K,
{
    type Key = K;

    fn extract(&self, req: &Req) -> K {
        self(req)
    }
}

/// A [`Service`] whose calls go through the breaker of their key. See the
/// [module docs](self).
pub struct KeyedCircuitBreakerService<S, K, X, C = ErrorsAsFailures> {
    inner: S,
    registry: Registry<K>,
    extract: X,
    classifier: C,
}

impl<S: Clone, K, X: Clone, C: Clone> Clone for KeyedCircuitBreakerService<S, K, X, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerService {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            extract: self.extract.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, K, X, C> fmt::Debug for KeyedCircuitBreakerService<S, K, X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerService")
            .field("inner", &self.inner)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<S, K, X, C> KeyedCircuitBreakerService<S, K, X, C> {
    /// Wraps `inner`: each request goes through `registry`'s breaker for
    /// the key `extract` gives it, classified by `classifier`.
    pub fn new(inner: S, registry: Registry<K>, extract: X, classifier: C) -> Self {
        KeyedCircuitBreakerService {
            inner,
            registry,
            extract,
            classifier,
        }
    }

    /// The registry of breakers.
    pub fn registry(&self) -> &Registry<K> {
        &self.registry
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

impl<S, K, X, C, Req> Service<Req> for KeyedCircuitBreakerService<S, K, X, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Eq + Hash + Clone + Send + Sync + 'static,
    X: ExtractKey<Req, Key = K>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.extract.extract(&req);
        let breaker = match self.registry.get(&key) {
            Ok(b) => b,
            Err(e) => return ResponseFuture::refused(Box::new(e)),
        };
        match breaker.try_acquire_owned() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.classifier.clone())
            }
            Err(rejected) => ResponseFuture::refused(Box::new(rejected)),
        }
    }
}
