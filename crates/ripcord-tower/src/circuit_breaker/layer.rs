use ripcord::{CircuitBreaker, ErrorsAsFailures};
use tower::Layer;

use super::CircuitBreakerService;

/// Applies a [`CircuitBreaker`] to a service: makes a
/// [`CircuitBreakerService`]. Every service it makes shares the one breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = ErrorsAsFailures> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A layer counting `Ok` as success and `Err` as failure.
    pub fn new(breaker: CircuitBreaker) -> Self {
        CircuitBreakerLayer {
            breaker,
            classifier: ErrorsAsFailures,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Replaces the classifier (any [`ripcord::Classify`] over the inner
    /// service's `Result<Response, Error>`, e.g.
    /// [`HttpClassifier`](crate::http::HttpClassifier) or a closure).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::with_classifier(inner, self.breaker.clone(), self.classifier.clone())
    }
}
