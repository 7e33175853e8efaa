//! Errors of the circuit breaker middleware.
//!
//! A refused call fails with [`Rejected`], boxed into a [`tower::BoxError`];
//! find it with `err.downcast_ref::<Rejected>()`. Errors of the inner service
//! pass through, boxed, unchanged.

pub use ripcord::Rejected;
