//! gRPC: status classification from headers and trailers, a breaker that
//! records streaming calls when they end, and `grpc-timeout` deadlines
//! (feature `grpc`).
//!
//! gRPC answers most errors with HTTP 200 and puts the status in the
//! `grpc-status` trailer (or, for a *trailers-only* response, in the
//! headers), so an HTTP classifier would count every failed call as a
//! success. [`GrpcCircuitBreakerService`] reads the status where gRPC puts it:
//!
//! - a trailers-only response (the status is in the headers) is recorded when
//!   the headers arrive;
//! - otherwise the response body is wrapped in a [`GrpcBody`] which records
//!   the outcome **when the stream ends**: from the `grpc-status` trailer, or
//!   as a failure if the body fails or ends without a status. A stream dropped
//!   before its end (the caller lost interest) counts as ignored: nothing
//!   judged it yet, and dropping it cancels the call, which is `CANCELLED`
//!   (ignored below). See [`GrpcEnd`] and [`body`](crate::body).
//!
//! The same layer works on the **server side** (a tonic server's
//! `Server::builder().layer(..)`, or an axum router serving tonic routes):
//! the handler's normal responses carry their status in the trailers, and
//! the breaker records it when the response stream ends. To answer refusals
//! as gRPC statuses there rather than as errors, use
//! [`ShedLayer::grpc`](crate::shed::ShedLayer::grpc), which judges the
//! handler's calls the same way.
//!
//! # Per method, service or host
//!
//! [`KeyedGrpcCircuitBreakerLayer`] takes each call's breaker from a
//! [`Registry`](ripcord::Registry) by a key: [`MethodKey`]
//! (`/package.Service/Method`), [`ServiceKey`] (`/package.Service`), or
//! [`HostKey`](crate::http::HostKey) (scheme and authority). One failing
//! method or host opens only its own breaker.
//!
//! ```
//! use ripcord::{CircuitBreaker, Registry};
//! use ripcord_tower::grpc::{KeyedGrpcCircuitBreakerLayer, MethodKey};
//!
//! # fn main() -> Result<(), ripcord::ConfigError> {
//! let registry: Registry<String> =
//!     Registry::builder(CircuitBreaker::builder("methods").failure_rate(0.5)).build()?;
//! let layer = KeyedGrpcCircuitBreakerLayer::keyed(registry, MethodKey);
//! # let _ = layer;
//! # Ok(()) }
//! ```
//!
//! # Classification
//!
//! [`classify_code`] is the default rule:
//!
//! | code | outcome |
//! |---|---|
//! | `OK` | Success |
//! | `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNKNOWN` | **Failure** |
//! | every other code (`INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`, `PERMISSION_DENIED`, `UNAUTHENTICATED`, `FAILED_PRECONDITION`, `CANCELLED`, …) | Ignored |
//! | a transport error, a non-200 HTTP status | **Failure** |
//!
//! With a tonic client:
//!
//! ```no_run
//! use ripcord::CircuitBreaker;
//! use ripcord_tower::grpc::{DeadlineLayer, GrpcCircuitBreakerLayer};
//! use tonic::transport::Endpoint;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
//! let breaker = CircuitBreaker::builder("health").build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(GrpcCircuitBreakerLayer::new(breaker))
//!     .layer(DeadlineLayer::new()) // honour each request's grpc-timeout
//!     .service(channel);
//! let mut client = tonic_health::pb::health_client::HealthClient::new(svc);
//! # let _ = &mut client;
//! # Ok(()) }
//! ```

pub mod body;
mod deadline;
mod key;
mod service;

pub use body::{GrpcBody, GrpcEnd};
pub use deadline::{parse_grpc_timeout, DeadlineLayer, DeadlineService};
pub use key::{MethodKey, ServiceKey};
pub use service::{
    GrpcCircuitBreakerLayer, GrpcCircuitBreakerService, GrpcJudge, GrpcResponseFuture,
    KeyedGrpcCircuitBreakerLayer, KeyedGrpcCircuitBreakerService,
};

use http::HeaderMap;
use ripcord::Outcome;

/// gRPC status codes used by the classifier and the shedding layer.
pub mod code {
    /// `OK`.
    pub const OK: i32 = 0;
    /// `CANCELLED`.
    pub const CANCELLED: i32 = 1;
    /// `UNKNOWN`.
    pub const UNKNOWN: i32 = 2;
    /// `DEADLINE_EXCEEDED`.
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// `RESOURCE_EXHAUSTED`.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// `INTERNAL`.
    pub const INTERNAL: i32 = 13;
    /// `UNAVAILABLE`.
    pub const UNAVAILABLE: i32 = 14;
}

/// The default outcome of a gRPC status code; see the [module docs](self).
pub fn classify_code(code: i32) -> Outcome {
    match code {
        code::OK => Outcome::Success,
        code::UNAVAILABLE
        | code::DEADLINE_EXCEEDED
        | code::RESOURCE_EXHAUSTED
        | code::INTERNAL
        | code::UNKNOWN => Outcome::Failure,
        _ => Outcome::Ignored,
    }
}

/// The `grpc-status` in a header map (headers of a trailers-only response,
/// or trailers), if present and numeric.
pub fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
