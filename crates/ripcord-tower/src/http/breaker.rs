//! A circuit breaker for HTTP clients that also sees body errors.

use http::{Response, StatusCode};
use ripcord::{CircuitBreaker, Outcome, OwnedPermit, Registry};

use super::classify_status;
use crate::body;
use crate::judge::{self, Judge, JudgedBreakerLayer, JudgedBreakerService, Keyed, Verdict};

/// The HTTP [`Judge`]: a failed or ignored head (by the status rule,
/// [`classify_status`] by default) is recorded at once; a successful head is
/// recorded when its body ends — a failure if the body fails while
/// streaming, a success when it ends or is dropped before its end (see
/// [`body`](crate::body#what-a-breaker-records)).
#[derive(Clone, Copy)]
pub struct HttpJudge {
    status: fn(StatusCode) -> Outcome,
}

impl std::fmt::Debug for HttpJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpJudge").finish_non_exhaustive()
    }
}

impl Default for HttpJudge {
    fn default() -> Self {
        HttpJudge {
            status: classify_status,
        }
    }
}

impl HttpJudge {
    /// A judge with its own status rule.
    pub fn with_status(status: fn(StatusCode) -> Outcome) -> Self {
        HttpJudge { status }
    }
}

impl<B> Judge<B> for HttpJudge {
    type Body = RecordedBody<B>;

    #[inline]
    fn head(&self, response: &Response<B>) -> Verdict {
        match (self.status)(response.status()) {
            Outcome::Success => Verdict::AtEnd,
            outcome => Verdict::Now(outcome),
        }
    }

    #[inline]
    fn body(&self, inner: B, pending: Option<OwnedPermit>) -> RecordedBody<B> {
        RecordedBody::new(inner, pending)
    }
}

/// A circuit breaker for an HTTP client that judges the response head and,
/// for a successful head, the body too: the response body is wrapped in a
/// [`RecordedBody`], and a body that fails while streaming (the connection
/// reset mid-body, a truncated chunked body) counts as a **failure**.
///
/// A failed or ignored head (5xx, 429, other 4xx) is recorded at once. A
/// successful head is recorded as a success when the body ends — or when it
/// is dropped before its end: the upstream answered and was sending, and a
/// failure mid-body would have shown as a body error. Readiness and refusals behave
/// as in [`CircuitBreakerService`](crate::CircuitBreakerService).
pub type HttpCircuitBreakerService<S> = JudgedBreakerService<S, HttpJudge>;

/// Makes [`HttpCircuitBreakerService`]s; all of them share the breaker.
pub type HttpCircuitBreakerLayer = JudgedBreakerLayer<HttpJudge>;

/// [`HttpCircuitBreakerLayer`] with a breaker per key (e.g.
/// [`HostKey`](super::HostKey)) from a [`Registry`].
pub type KeyedHttpCircuitBreakerLayer<K, X> = JudgedBreakerLayer<HttpJudge, Keyed<K, X>>;

/// The response future of [`HttpCircuitBreakerService`].
pub type HttpResponseFuture<F> = judge::future::ResponseFuture<F, HttpJudge>;

impl JudgedBreakerLayer<HttpJudge> {
    /// A layer judging statuses with [`classify_status`].
    pub fn new(breaker: CircuitBreaker) -> Self {
        JudgedBreakerLayer::with_judge(breaker, HttpJudge::default())
    }
}

impl<K, X> JudgedBreakerLayer<HttpJudge, Keyed<K, X>> {
    /// A layer picking each request's breaker from `registry` by the key
    /// `extract` gives it, judging statuses with [`classify_status`].
    pub fn keyed(registry: Registry<K>, extract: X) -> Self {
        JudgedBreakerLayer::with_judge(Keyed::new(registry, extract), HttpJudge::default())
    }
}

impl<P> JudgedBreakerLayer<HttpJudge, P> {
    /// Replaces the status rule.
    pub fn status(self, status: fn(StatusCode) -> Outcome) -> Self {
        self.map_judge(|_| HttpJudge::with_status(status))
    }
}

/// The response body of [`HttpCircuitBreakerService`]: the inner body,
/// recording a call whose head was a success when it ends — a failure if
/// it fails while streaming, a success when it ends or is dropped before
/// its end (see [`body`](crate::body#what-a-breaker-records)).
pub type RecordedBody<B> = body::RecordedBody<B, Option<OwnedPermit>>;
