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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::Response;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use tower::{service_fn, Layer, ServiceExt};

    use super::*;
    use crate::body::tests::{data, drain, Frames};

    /// Calls an HTTP breaker service whose handler answers `status` with
    /// `frames`, and returns the response.
    async fn call(
        cb: &CircuitBreaker,
        status: u16,
        frames: fn() -> Vec<Result<Frame<Bytes>, String>>,
    ) -> Response<RecordedBody<Frames>> {
        let svc = HttpCircuitBreakerLayer::new(cb.clone()).layer(service_fn(
            move |_: http::Request<()>| {
                let frames = Frames::new(frames(), true);
                async move {
                    let mut r = Response::new(frames);
                    *r.status_mut() = StatusCode::from_u16(status).unwrap();
                    Ok::<_, std::io::Error>(r)
                }
            },
        ));
        svc.oneshot(http::Request::new(())).await.unwrap()
    }

    fn counts(cb: &CircuitBreaker) -> (u64, u64) {
        (cb.stats().successes(), cb.stats().failures())
    }

    #[tokio::test]
    async fn a_successful_head_is_judged_by_how_its_body_ends() {
        let cb = CircuitBreaker::builder("http-body").build().unwrap();
        let res = call(&cb, 200, || vec![data("a"), data("b")]).await;
        assert_eq!(counts(&cb), (0, 0), "not at the head");
        drain(res.into_body()).await;
        assert_eq!(counts(&cb), (1, 0), "ended: a success");

        let mut body = call(&cb, 200, || vec![data("a"), data("b")])
            .await
            .into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(counts(&cb), (2, 0), "dropped before its end: a success");

        let res = call(&cb, 200, || vec![data("a"), Err("reset".into())]).await;
        drain(res.into_body()).await;
        assert_eq!(counts(&cb), (2, 1), "failed mid-body: a failure");

        let res = call(&cb, 503, || vec![data("a")]).await;
        assert_eq!(counts(&cb), (2, 2), "a failed head, at once");
        drop(res);
        let res = call(&cb, 404, || vec![data("a")]).await;
        drain(res.into_body()).await;
        assert_eq!(
            counts(&cb),
            (2, 2),
            "an ignored head; its body records nothing"
        );
        assert_eq!(cb.stats().calls(), 4);
    }
}
