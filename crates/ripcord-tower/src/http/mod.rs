//! HTTP: outcome classification, `Retry-After`, idempotency rules for
//! retries, and request keys for per-host breakers (feature `http`).
//!
//! # Classification
//!
//! [`HttpClassifier`] (the default for HTTP) judges a
//! `Result<http::Response<B>, E>`:
//!
//! | result | outcome |
//! |---|---|
//! | 5xx, 429 Too Many Requests | **Failure** |
//! | other 4xx (400, 401, 403, 404, 409, …) | Ignored: the caller's mistake, not the dependency's |
//! | 1xx, 2xx, 3xx | Success |
//! | any error: connect refused, reset, timeout, a body error surfaced by the client | **Failure** |
//!
//! The status rule can be replaced with [`HttpClassifier::with_status`], or
//! any closure over `&Result<Response<B>, E>` can be used instead (every
//! `Fn(&Result<T, E>) -> Outcome` is a [`Classify`]).
//!
//! With [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) and a
//! classifier, the outcome is recorded when the response *head* arrives, so a
//! body that fails while streaming afterwards is not seen.
//! [`HttpCircuitBreakerLayer`] also watches the body: it wraps it in a
//! [`RecordedBody`] and counts a body error as a failure
//! ([`KeyedHttpCircuitBreakerLayer`] does the same with a breaker per key).
//! A successful head is then recorded when its body ends:
//!
//! | the body … | outcome |
//! |---|---|
//! | ends (`None`, `is_end_stream` after its last data frame, or a trailers frame) | Success |
//! | fails while streaming | **Failure** |
//! | is dropped before its end (the reader went away) | **Success** |
//!
//! An early drop is a success: the dependency answered and was sending, and
//! a failure mid-body would have shown as a body error (see
//! [`body`](crate::body#what-a-breaker-records)).
//!
//! # Refusals as responses
//!
//! [`Refusal::of`] turns a [`ripcord::Error`] into a status, a
//! `Retry-After` and the [`POLICY_HEADER`]: what
//! [`ShedLayer`](crate::shed::ShedLayer) answers, and what a proxy answers
//! with a body of its own.
//!
//! # Keys
//!
//! For per-key layers: [`HostKey`] (scheme + authority), [`RouteKey`]
//! (route templates such as `/users/{id}`; unmatched paths share one key)
//! and [`HeaderKey`].
//!
//! # Retries
//!
//! [`retry_after`] parses a `Retry-After` header (delay-seconds or an
//! HTTP-date); give [`response_retry_after`] to
//! [`RetryBuilder::retry_after`](ripcord::RetryBuilder::retry_after) and the
//! retry waits at least as long as the server asked. [`HttpReplay`] replays
//! only requests that are safe to send twice: idempotent methods
//! ([`is_idempotent`]) or requests marked with the [`Retryable`] extension,
//! and only bodies that can be cloned (`B: Clone`) — a streaming body never
//! is.

mod breaker;
mod key;
mod refusal;
mod retry_after;

pub use breaker::{
    HttpCircuitBreakerLayer, HttpCircuitBreakerService, HttpJudge, HttpResponseFuture,
    KeyedHttpCircuitBreakerLayer, RecordedBody,
};
pub use key::{HeaderKey, HostKey, RouteKey};
pub use refusal::{Refusal, GRPC_PUSHBACK_HEADER, POLICY_HEADER};
pub use retry_after::{response_retry_after, retry_after, retry_after_at};

use http::{Method, Request, Response, StatusCode};
use ripcord::{Classify, Outcome};

use crate::pipeline::Replay;

/// The default outcome of a status code: 5xx and 429 fail, other 4xx are
/// ignored, the rest succeed.
pub fn classify_status(status: StatusCode) -> Outcome {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Outcome::Failure
    } else if status.is_client_error() {
        Outcome::Ignored
    } else {
        Outcome::Success
    }
}

/// Classifies HTTP results; see the [module docs](self).
#[derive(Clone, Copy)]
pub struct HttpClassifier {
    status: fn(StatusCode) -> Outcome,
}

impl std::fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClassifier").finish_non_exhaustive()
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        HttpClassifier {
            status: classify_status,
        }
    }
}

impl HttpClassifier {
    /// The default classifier ([`classify_status`]; every error fails).
    pub fn new() -> Self {
        Self::default()
    }

    /// A classifier with its own status rule (errors still fail).
    ///
    /// ```
    /// use http::StatusCode;
    /// use ripcord::Outcome;
    /// use ripcord_tower::http::{classify_status, HttpClassifier};
    ///
    /// // Also count 408 Request Timeout against the dependency.
    /// let classifier = HttpClassifier::with_status(|s| match s {
    ///     StatusCode::REQUEST_TIMEOUT => Outcome::Failure,
    ///     s => classify_status(s),
    /// });
    /// # let _ = classifier;
    /// ```
    pub fn with_status(status: fn(StatusCode) -> Outcome) -> Self {
        HttpClassifier { status }
    }

    /// The outcome of one status code.
    pub fn status(&self, status: StatusCode) -> Outcome {
        (self.status)(status)
    }
}

impl<B, E> Classify<Response<B>, E> for HttpClassifier {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => (self.status)(response.status()),
            Err(_) => Outcome::Failure,
        }
    }
}

/// Whether a method is idempotent (RFC 9110 §9.2.2): GET, HEAD, OPTIONS,
/// TRACE, PUT, DELETE.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A request extension that marks a request as safe to retry whatever its
/// method (e.g. a POST carrying an idempotency key).
///
/// ```
/// use ripcord_tower::http::{is_retryable, Retryable};
///
/// let mut req = http::Request::post("http://api/pay").body(()).unwrap();
/// assert!(!is_retryable(&req));
/// req.extensions_mut().insert(Retryable);
/// assert!(is_retryable(&req));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retryable;

/// Whether a request may be sent again: its method is idempotent or it is
/// marked [`Retryable`].
pub fn is_retryable<B>(req: &Request<B>) -> bool {
    is_idempotent(req.method()) || req.extensions().get::<Retryable>().is_some()
}

/// Replays HTTP requests that [`is_retryable`] allows, by cloning them
/// (headers, extensions and body: the body type must be `Clone`, e.g.
/// `String`, `Bytes` or `Full<Bytes>`; a streaming body is never replayed).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpReplay;

impl<B: Clone> Replay<Request<B>> for HttpReplay {
    fn replay(&self, req: &Request<B>) -> Option<Request<B>> {
        is_retryable(req).then(|| req.clone())
    }
}

/// Gives a retry the HTTP rules, for a [`PipelineLayer`](crate::PipelineLayer)
/// over an HTTP client whose response body is `B`: retry what
/// [`HttpClassifier`] finds a failure (5xx, 429, transport errors), and wait
/// at least what a `Retry-After` header asks for.
///
/// ```
/// use ripcord::Retry;
///
/// let retry = ripcord_tower::http::retry_rules::<String>(Retry::builder("api").max_attempts(3))
///     .build()?;
/// # let _ = retry;
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
pub fn retry_rules<B: 'static>(retry: ripcord::RetryBuilder) -> ripcord::RetryBuilder {
    retry
        .classify::<Response<B>, tower::BoxError>(HttpClassifier::new())
        .retry_after(response_retry_after::<B>)
}
