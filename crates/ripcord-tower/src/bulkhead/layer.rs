use ripcord::Bulkhead;
use tower::Layer;

use super::BulkheadService;

/// Applies a [`Bulkhead`] to a service: makes [`BulkheadService`]s, which
/// share the bulkhead's slots.
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer limiting calls to `bulkhead`'s slots.
    pub fn new(bulkhead: Bulkhead) -> Self {
        BulkheadLayer { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService::new(inner, self.bulkhead.clone())
    }
}
