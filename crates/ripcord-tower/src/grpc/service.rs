use http::Response;
use ripcord::{CircuitBreaker, Outcome, OwnedPermit, Registry};

use super::{classify_code, head_outcome, GrpcBody, GrpcEnd};
use crate::judge::{self, Judge, JudgedBreakerLayer, JudgedBreakerService, Keyed, Verdict};

/// The gRPC [`Judge`]: a trailers-only response (the status in the
/// headers) or a non-200 HTTP status is judged at the head; otherwise the
/// body, a [`GrpcBody`], records the status of the trailers when the stream
/// ends. Status codes are judged by [`classify_code`] unless replaced.
#[derive(Clone, Copy)]
pub struct GrpcJudge {
    classify: fn(i32) -> Outcome,
}

impl std::fmt::Debug for GrpcJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcJudge").finish_non_exhaustive()
    }
}

impl Default for GrpcJudge {
    fn default() -> Self {
        GrpcJudge {
            classify: classify_code,
        }
    }
}

impl GrpcJudge {
    /// A judge with its own status-code rule.
    pub fn with_classify(classify: fn(i32) -> Outcome) -> Self {
        GrpcJudge { classify }
    }
}

impl<B> Judge<B> for GrpcJudge {
    type Body = GrpcBody<B>;

    #[inline]
    fn head(&self, response: &Response<B>) -> Verdict {
        // Without a status in the head, it comes in the trailers.
        match head_outcome(response.status(), response.headers(), self.classify) {
            Some(outcome) => Verdict::Now(outcome),
            None => Verdict::AtEnd,
        }
    }

    #[inline]
    fn body(&self, body: B, pending: Option<OwnedPermit>) -> GrpcBody<B> {
        GrpcBody::new(body, pending.map(|p| GrpcEnd::new(p, self.classify)))
    }
}

/// A circuit breaker for gRPC calls, unary and streaming, client or server
/// side; see the [module docs](super). Readiness and refusals behave as in
/// [`CircuitBreakerService`](crate::CircuitBreakerService): a refused call
/// fails in `call` with [`ripcord::Rejected`], boxed (tonic turns a
/// middleware error into a `Status`; `Status::source()` holds the
/// rejection).
pub type GrpcCircuitBreakerService<S> = JudgedBreakerService<S, GrpcJudge>;

/// Makes [`GrpcCircuitBreakerService`]s; all of them share the breaker.
pub type GrpcCircuitBreakerLayer = JudgedBreakerLayer<GrpcJudge>;

/// [`GrpcCircuitBreakerLayer`] with a breaker per key — per method
/// ([`MethodKey`](super::MethodKey)), per service
/// ([`ServiceKey`](super::ServiceKey)) or per host
/// ([`HostKey`](crate::http::HostKey)) — from a [`Registry`].
pub type KeyedGrpcCircuitBreakerLayer<K, X> = JudgedBreakerLayer<GrpcJudge, Keyed<K, X>>;

/// The service of [`KeyedGrpcCircuitBreakerLayer`].
pub type KeyedGrpcCircuitBreakerService<S, K, X> = JudgedBreakerService<S, GrpcJudge, Keyed<K, X>>;

/// The response future of the gRPC breaker services.
pub type GrpcResponseFuture<F> = judge::future::ResponseFuture<F, GrpcJudge>;

impl JudgedBreakerLayer<GrpcJudge> {
    /// A layer classifying status codes with [`classify_code`].
    pub fn new(breaker: CircuitBreaker) -> Self {
        JudgedBreakerLayer::with_judge(breaker, GrpcJudge::default())
    }
}

impl<K, X> JudgedBreakerLayer<GrpcJudge, Keyed<K, X>> {
    /// A layer picking each call's breaker from `registry` by the key
    /// `extract` gives it (e.g. [`MethodKey`](super::MethodKey)).
    pub fn keyed(registry: Registry<K>, extract: X) -> Self {
        JudgedBreakerLayer::with_judge(Keyed::new(registry, extract), GrpcJudge::default())
    }
}

impl<P> JudgedBreakerLayer<GrpcJudge, P> {
    /// Replaces the status-code rule.
    pub fn classify(self, classify: fn(i32) -> Outcome) -> Self {
        self.map_judge(|_| GrpcJudge::with_classify(classify))
    }
}
