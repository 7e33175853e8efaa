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
pub use deadline::{format_grpc_timeout, parse_grpc_timeout, DeadlineLayer, DeadlineService};
pub use key::{MethodKey, ServiceKey};
pub use service::{
    GrpcCircuitBreakerLayer, GrpcCircuitBreakerService, GrpcJudge, GrpcResponseFuture,
    KeyedGrpcCircuitBreakerLayer, KeyedGrpcCircuitBreakerService,
};

use http::{HeaderMap, StatusCode};
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

/// The names of the gRPC status codes, by code (`0` to `16`).
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code of a status name such as `UNAVAILABLE` (as
/// [`CODE_NAMES`] spells them).
///
/// ```
/// use ripcord_tower::grpc::{code, code_by_name};
///
/// assert_eq!(code_by_name("UNAVAILABLE"), Some(code::UNAVAILABLE));
/// assert_eq!(code_by_name("unavailable"), None);
/// ```
pub fn code_by_name(name: &str) -> Option<i32> {
    CODE_NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| i32::try_from(i).ok())
}

/// A set of gRPC status codes that count as failures; `OK` is a success
/// and every other code is ignored. [`FailureCodes::DEFAULT`] is the
/// rule of [`classify_code`].
///
/// ```
/// use ripcord::Outcome;
/// use ripcord_tower::grpc::{code, FailureCodes};
///
/// let codes = FailureCodes::from_names(["UNAVAILABLE", "ABORTED"]).unwrap();
/// assert_eq!(codes.outcome(code::UNAVAILABLE), Outcome::Failure);
/// assert_eq!(codes.outcome(code::INTERNAL), Outcome::Ignored);
/// assert_eq!(codes.outcome(code::OK), Outcome::Success);
/// assert_eq!(FailureCodes::DEFAULT.outcome(code::INTERNAL), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailureCodes(u32);

impl Default for FailureCodes {
    fn default() -> Self {
        FailureCodes::DEFAULT
    }
}

impl FailureCodes {
    /// `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`,
    /// `INTERNAL` and `UNKNOWN`.
    pub const DEFAULT: FailureCodes = FailureCodes(
        1 << code::UNAVAILABLE
            | 1 << code::DEADLINE_EXCEEDED
            | 1 << code::RESOURCE_EXHAUSTED
            | 1 << code::INTERNAL
            | 1 << code::UNKNOWN,
    );

    /// No code is a failure.
    pub const NONE: FailureCodes = FailureCodes(0);

    /// The set with `code` added (`1` to `16`; others are left out: `OK`
    /// is always a success).
    pub const fn with(self, code: i32) -> FailureCodes {
        if code > 0 && code < 17 {
            FailureCodes(self.0 | 1 << code)
        } else {
            self
        }
    }

    /// The set of these names ([`CODE_NAMES`], `OK` excepted), or the
    /// first name that is not a failure code.
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<FailureCodes, &'a str> {
        let mut set = FailureCodes::NONE;
        for name in names {
            match code_by_name(name) {
                Some(c) if c != code::OK => set = set.with(c),
                _ => return Err(name),
            }
        }
        Ok(set)
    }

    /// Whether `code` is in the set.
    pub const fn contains(self, code: i32) -> bool {
        code > 0 && code < 17 && self.0 & (1 << code) != 0
    }

    /// The outcome of `code`: `OK` a success, a code of the set a
    /// failure, any other ignored.
    #[inline]
    pub const fn outcome(self, code: i32) -> Outcome {
        if code == code::OK {
            Outcome::Success
        } else if self.contains(code) {
            Outcome::Failure
        } else {
            Outcome::Ignored
        }
    }
}

/// The default outcome of a gRPC status code; see the [module docs](self).
pub fn classify_code(code: i32) -> Outcome {
    FailureCodes::DEFAULT.outcome(code)
}

/// Whether a request is a gRPC call: its `content-type` is
/// `application/grpc` or starts with `application/grpc+` /
/// `application/grpc;`.
///
/// ```
/// use ripcord_tower::grpc::is_grpc_request;
///
/// let mut h = http::HeaderMap::new();
/// h.insert("content-type", "application/grpc+proto".parse().unwrap());
/// assert!(is_grpc_request(&h));
/// h.insert("content-type", "application/grpc-web".parse().unwrap());
/// assert!(!is_grpc_request(&h));
/// ```
pub fn is_grpc_request(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    let v = v.as_bytes();
    let p = b"application/grpc";
    v.len() >= p.len()
        && v[..p.len()].eq_ignore_ascii_case(p)
        && matches!(v.get(p.len()), None | Some(b'+' | b';'))
}

/// The outcome of a gRPC response head, judged by `classify`: a non-200
/// HTTP status is a **Failure**, a head with `grpc-status` (a
/// trailers-only response) is that code's outcome, and `None` means the
/// status comes in the trailers ([`trailers_outcome`] at the end).
pub fn head_outcome(
    status: StatusCode,
    headers: &HeaderMap,
    classify: impl Fn(i32) -> Outcome,
) -> Option<Outcome> {
    match (status, grpc_status(headers)) {
        (StatusCode::OK, None) => None,
        (StatusCode::OK, Some(code)) => Some(classify(code)),
        _ => Some(Outcome::Failure),
    }
}

/// The outcome of a gRPC stream that ended with `trailers`, judged by
/// `classify`: the `grpc-status` code's, or **Failure** without one.
pub fn trailers_outcome(
    trailers: Option<&HeaderMap>,
    classify: impl Fn(i32) -> Outcome,
) -> Outcome {
    trailers
        .and_then(grpc_status)
        .map_or(Outcome::Failure, classify)
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
