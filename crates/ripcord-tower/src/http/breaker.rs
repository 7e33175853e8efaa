//! A circuit breaker for HTTP clients that also sees body errors.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use ripcord::{CircuitBreaker, Outcome, OwnedPermit, Registry};

use super::classify_status;
use crate::judge::{self, Judge, JudgedBreakerLayer, JudgedBreakerService, Keyed, Verdict};

/// The HTTP [`Judge`]: a failed or ignored head (by the status rule,
/// [`classify_status`] by default) is recorded at once; a successful head is
/// recorded when its body ends — a failure if the body fails while
/// streaming, a success when it ends or is dropped unread.
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
        RecordedBody {
            inner,
            pending: Pending(pending),
        }
    }
}

/// A circuit breaker for an HTTP client that judges the response head and,
/// for a successful head, the body too: the response body is wrapped in a
/// [`RecordedBody`], and a body that fails while streaming (the connection
/// reset mid-body, a truncated chunked body) counts as a **failure**.
///
/// A failed or ignored head (5xx, 429, other 4xx) is recorded at once. A
/// successful head is recorded as a success when the body ends — or when it
/// is dropped unread, since nothing went wrong. Readiness and refusals behave
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

/// A permit waiting for the body's verdict; a success if dropped.
#[derive(Debug)]
struct Pending(Option<OwnedPermit>);

impl Pending {
    fn record(&mut self, outcome: Outcome) {
        if let Some(p) = self.0.take() {
            p.record(outcome);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.record(Outcome::Success);
    }
}

pin_project! {
    /// A response body that records its call as a failure if it fails while
    /// streaming, and as a success when it ends or is dropped.
    #[derive(Debug)]
    pub struct RecordedBody<B> {
        #[pin]
        inner: B,
        pending: Pending,
    }
}

impl<B> RecordedBody<B> {
    /// Unwraps the inner body (a call still pending is then recorded as a
    /// success).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for RecordedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Err(_)) => this.pending.record(Outcome::Failure),
            None => this.pending.record(Outcome::Success),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
