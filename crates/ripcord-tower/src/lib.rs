//! tower middleware for [ripcord]: circuit breakers (one, or one per
//! key), whole pipelines, and server-side load shedding, with outcome
//! classification that knows HTTP.
//!
//! | middleware | what it does |
//! |---|---|
//! | [`CircuitBreakerLayer`] | one breaker around a service; refused calls fail fast with [`Rejected`](ripcord::Rejected) |
//! | `http::HttpCircuitBreakerLayer` (`http`) | one breaker around an HTTP client that also counts body errors |
//! | [`keyed::KeyedCircuitBreakerLayer`] | a breaker per key (host, header, anything) from a [`Registry`](ripcord::Registry) |
//! | [`PipelineLayer`] | a whole [`ripcord::Pipeline`] (timeout, retry, breaker, bulkhead, …); a one-policy pipeline for a single policy |
//! | [`keyed::KeyedPipelineLayer`] | a pipeline per key from a [`Registry`](ripcord::Registry) |
//! | [`shed::ShedLayer`] (`http`) | server side: answers 429/503 with `Retry-After` before the handler runs |
//!
//! Every error converts into a [`tower::BoxError`] and ripcord's typed errors
//! ([`Rejected`](ripcord::Rejected), [`Timeout`](ripcord::Timeout),
//! [`BulkheadFull`](ripcord::BulkheadFull), [`RateLimited`](ripcord::RateLimited))
//! can be downcast from it:
//!
//! ```
//! use ripcord::CircuitBreaker;
//! use ripcord_tower::CircuitBreakerLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::builder("api").build()?;
//! breaker.force_open();
//! let svc = CircuitBreakerLayer::new(breaker)
//!     .layer(service_fn(|_: ()| async { Ok::<_, std::io::Error>("hello") }));
//! let err = svc.oneshot(()).await.unwrap_err();
//! let rejected = err.downcast_ref::<ripcord::Rejected>().expect("a rejection");
//! assert_eq!(rejected.name(), "api");
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `http` (default): [`http::HttpClassifier`], `Retry-After` parsing,
//!   idempotency rules for retries, [`http::HostKey`] /
//!   [`http::HeaderKey`] and the server-side [`shed`] layer.
//! - `grpc`: the `grpc` module: status classification from headers and trailers
//!   (streaming calls recorded at their end), `grpc-timeout` deadlines, and
//!   gRPC answers (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`) from the [`shed`]
//!   layer.
//! - `reqwest`: the `reqwest` module: a `reqwest-middleware` adapter running
//!   a pipeline per host.

#![doc(test(attr(deny(warnings))))]

pub mod circuit_breaker;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
pub mod keyed;
pub mod pipeline;
#[cfg(feature = "reqwest")]
pub mod reqwest;
#[cfg(feature = "http")]
pub mod shed;

pub use circuit_breaker::{CircuitBreakerLayer, CircuitBreakerService};
pub use keyed::{
    KeyedCircuitBreakerLayer, KeyedCircuitBreakerService, KeyedPipelineLayer, KeyedPipelineService,
};
pub use pipeline::{PipelineLayer, PipelineService};
