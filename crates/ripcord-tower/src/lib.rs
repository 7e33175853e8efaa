//! tower middleware for [ripcord]: circuit breakers (one, or one per
//! key), whole pipelines, each policy on its own, and server-side load
//! shedding, with outcome classification that knows HTTP and gRPC.
//!
//! | middleware | what it does |
//! |---|---|
//! | [`CircuitBreakerLayer`] | one breaker around a service; refused calls fail fast with [`Rejected`](ripcord::Rejected) |
//! | `http::HttpCircuitBreakerLayer` (`http`) | one breaker around an HTTP client that also counts body errors; `::keyed` for one per host or route |
//! | `grpc::GrpcCircuitBreakerLayer` (`grpc`) | one breaker for gRPC calls, client or server side, judged by the `grpc-status` of headers or trailers (streams at their end); `::keyed` for one per method, service or host |
//! | [`keyed::KeyedCircuitBreakerLayer`] | a breaker per key (host, route template, header, anything) from a [`Registry`](ripcord::Registry) |
//! | [`PipelineLayer`] | a whole [`ripcord::Pipeline`] (timeout, retry, breaker, bulkhead, …) |
//! | [`keyed::KeyedPipelineLayer`] | a pipeline per key from a [`Registry`](ripcord::Registry) |
//! | [`TimeoutLayer`], [`RetryLayer`], [`BulkheadLayer`], [`RateLimitLayer`] | one policy each, without a pipeline |
//! | [`ChaosLayer`], `chaos::HttpChaosLayer` (`http`, `.grpc()` with `grpc`) | fault injection for drills: latency, errors, HTTP statuses and gRPC codes, resets, stalled bodies |
//! | `shed::ShedLayer` (`http`) | server side: answers 429/503 (or gRPC `RESOURCE_EXHAUSTED`/`UNAVAILABLE`) with `Retry-After` before the handler runs; the mapping is `http::Refusal`'s |
//!
//! # What the HTTP layers record
//!
//! The HTTP and gRPC breakers and the shedding layer judge a response head
//! at once when it decides (a failure, an ignored 4xx, a gRPC
//! trailers-only status); otherwise the verdict waits for the body, which
//! a [`body::RecordedBody`] records exactly once when it ends:
//!
//! | after a head that … | body ends | body fails | body dropped before its end |
//! |---|---|---|---|
//! | was judged a success (HTTP) | Success | **Failure** | **Success** |
//! | left the verdict to the trailers (gRPC) | the `grpc-status` trailer; **Failure** without one | **Failure** | Ignored (a cancelled call) |
//!
//! A body dropped early after a successful head counts as a success: the
//! dependency answered and was sending, and a failure mid-body shows as a
//! body error. Counting such drops as ignored would leave a failure-rate
//! breaker blind to the successes of every stream its clients abandon. See
//! [`body`] for the rule, and for a recorder of your own (a proxy's permits,
//! slots and pooled connection).
//!
//! Every service is `Clone`, and clones share the policy's state.
//! `poll_ready` only asks the inner service: readiness is never held back
//! by a policy, and a refusal (an open breaker, a full bulkhead, a rate
//! over its limit) fails fast in `call` without calling the inner service.
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
//!   [`http::RouteKey`] / [`http::HeaderKey`], the body-aware breaker
//!   ([`judge`]) and the server-side [`shed`] layer.
//! - `grpc`: the `grpc` module: status classification from headers and trailers
//!   (streaming calls recorded at their end), `grpc-timeout` deadlines, and
//!   gRPC answers (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`) from the [`shed`]
//!   layer.
//! - `reqwest`: the `reqwest` module: a `reqwest-middleware` adapter running
//!   a pipeline per host.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "http")]
pub mod body;
pub mod bulkhead;
pub mod chaos;
pub mod circuit_breaker;
mod gate;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod judge;
pub mod keyed;
pub mod pipeline;
pub mod rate_limit;
#[cfg(feature = "reqwest")]
pub mod reqwest;
pub mod retry;
#[cfg(feature = "http")]
pub mod shed;
pub mod timeout;

pub use bulkhead::{BulkheadLayer, BulkheadService};
pub use chaos::{ChaosLayer, ChaosService};
pub use circuit_breaker::{CircuitBreakerLayer, CircuitBreakerService};
pub use keyed::{
    KeyedCircuitBreakerLayer, KeyedCircuitBreakerService, KeyedPipelineLayer, KeyedPipelineService,
};
pub use pipeline::{PipelineLayer, PipelineService};
pub use rate_limit::{RateLimitLayer, RateLimitService};
pub use retry::{RetryLayer, RetryService};
pub use timeout::{TimeoutLayer, TimeoutService};
