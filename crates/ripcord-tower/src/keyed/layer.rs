use std::fmt;

use ripcord::{ErrorsAsFailures, Registry};
use tower::Layer;

use super::KeyedCircuitBreakerService;

/// Makes [`KeyedCircuitBreakerService`]s; all of them share the registry.
pub struct KeyedCircuitBreakerLayer<K, X, C = ErrorsAsFailures> {
    registry: Registry<K>,
    extract: X,
    classifier: C,
}

impl<K, X: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<K, X, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerLayer {
            registry: self.registry.clone(),
            extract: self.extract.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, X, C> fmt::Debug for KeyedCircuitBreakerLayer<K, X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<K, X> KeyedCircuitBreakerLayer<K, X> {
    /// A layer picking each request's breaker from `registry` by the key
    /// `extract` gives it; `Ok` counts as success, `Err` as failure.
    pub fn new(registry: Registry<K>, extract: X) -> Self {
        KeyedCircuitBreakerLayer {
            registry,
            extract,
            classifier: ErrorsAsFailures,
        }
    }
}

impl<K, X, C> KeyedCircuitBreakerLayer<K, X, C> {
    /// Replaces the classifier (e.g. with
    /// [`HttpClassifier`](crate::http::HttpClassifier)).
    pub fn classifier<C2>(self, classifier: C2) -> KeyedCircuitBreakerLayer<K, X, C2> {
        KeyedCircuitBreakerLayer {
            registry: self.registry,
            extract: self.extract,
            classifier,
        }
    }
}

impl<S, K, X: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, X, C> {
    type Service = KeyedCircuitBreakerService<S, K, X, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreakerService::new(
            inner,
            self.registry.clone(),
            self.extract.clone(),
            self.classifier.clone(),
        )
    }
}
