//! A bulkhead around a tower [`Service`]: at most `max_concurrent` calls
//! in flight.
//!
//! [`BulkheadService`] takes a slot from its [`Bulkhead`] in `call`. With a
//! free slot the inner service is called at once and the slot is held until
//! the response future completes (or is dropped). With every slot taken:
//!
//! - a bulkhead without a queue (`max_queued(0)`, the default) refuses at
//!   once: the future is ready with [`BulkheadFull`](ripcord::BulkheadFull),
//!   boxed, and the inner service is not called;
//! - a bulkhead with a queue waits (up to its `max_wait`) for a slot, then
//!   calls the inner service — or refuses with `BulkheadFull` if none came.
//!
//! [`poll_ready`](Service::poll_ready) only asks the inner service: readiness
//! is never held while the bulkhead is full (unlike
//! `tower::limit::ConcurrencyLimit`, which waits in `poll_ready`), so a full
//! bulkhead refuses fast instead of parking the caller. Clones share the
//! bulkhead. The inner service must be `Clone`: a queued call takes the
//! service that was made ready and leaves a clone in its place.
//!
//! ```
//! use ripcord::Bulkhead;
//! use ripcord_tower::BulkheadLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bulkhead = Bulkhead::builder("db").max_concurrent(1).build()?;
//! let _busy = bulkhead.try_acquire_owned()?; // the only slot is taken
//! let svc = BulkheadLayer::new(bulkhead)
//!     .layer(service_fn(|_: ()| async { Ok::<_, std::io::Error>("ran") }));
//! let err = svc.oneshot(()).await.unwrap_err();
//! assert!(err.is::<ripcord::BulkheadFull>());
//! # Ok(()) }
//! ```

mod layer;

/// The response future.
pub mod future {
    pub use crate::gate::ResponseFuture;
}

pub use layer::BulkheadLayer;

use std::task::{Context, Poll};

use ripcord::Bulkhead;
use tower::{BoxError, Service};

use crate::gate::ResponseFuture;

/// A [`Service`] with at most `max_concurrent` calls in flight; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S> BulkheadService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, bulkhead: Bulkhead) -> Self {
        BulkheadService { inner, bulkhead }
    }

    /// The bulkhead.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
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

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.bulkhead.try_acquire_owned() {
            Ok(slot) => ResponseFuture::called(self.inner.call(req), Some(slot)),
            Err(full) if self.bulkhead.max_queued() == 0 => ResponseFuture::refused(Box::new(full)),
            Err(_) => {
                let bulkhead = self.bulkhead.clone();
                let wait = Box::pin(async move {
                    match bulkhead.acquire_owned().await {
                        Ok(slot) => Ok(Some(slot)),
                        Err(full) => Err(Box::new(full) as BoxError),
                    }
                });
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(wait, ready, req)
            }
        }
    }
}
