//! The HTTP answer to a call a policy refused or that failed.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use ripcord::{Error, PolicyKind};

/// The header naming the policy that refused a request:
/// `x-ripcord-policy`.
pub const POLICY_HEADER: HeaderName = HeaderName::from_static("x-ripcord-policy");

/// What to answer for a [`ripcord::Error`]: a status, a `Retry-After` and
/// the policy to name in [`POLICY_HEADER`]. One mapping for the shedding
/// layer and for proxies:
///
/// | error | status | `Retry-After` | [`POLICY_HEADER`] |
/// |---|---|---|---|
/// | [`Error::Rejected`] (an open breaker) | `503 Service Unavailable` | time to the next probe | `circuit_breaker` |
/// | [`Error::RateLimited`] | `429 Too Many Requests` | time to the next permit | `rate_limiter` |
/// | [`Error::BulkheadFull`] | `503 Service Unavailable` | 1 s | `bulkhead` |
/// | [`Error::Timeout`] | `504 Gateway Timeout` | — | `timeout` |
/// | [`Error::Inner`] (the call's own error) | `502 Bad Gateway` | — | `upstream` |
/// | [`Error::Fallback`] (every fallback failed too) | the primary error's | the primary error's | `fallback` |
/// | [`Error::Injected`] (fault injection) | an abort's `abort_status` (a valid HTTP status, else `503`); `500` for an error, `502` for a reset, `504` for a stall | — | `chaos` |
///
/// `Retry-After` is in whole seconds, rounded up, at least 1. The fields are
/// public so that a caller can adjust one (say, answer `400` for a request
/// body that broke off) and keep the rest.
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use ripcord::{Error, RateLimited};
/// use ripcord_tower::http::{Refusal, POLICY_HEADER};
///
/// let error: Error<std::io::Error> =
///     Error::RateLimited(RateLimited::new("api", Duration::from_millis(1500)));
/// let response = Refusal::of(&error).response("slow down\n");
/// assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
/// assert_eq!(response.headers()[POLICY_HEADER], "rate_limiter");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The response status.
    pub status: StatusCode,
    /// The `Retry-After` value, in whole seconds (at least 1), if any.
    pub retry_after: Option<u64>,
    /// The policy that refused the call; `None` for the call's own error
    /// (named `upstream` in [`POLICY_HEADER`]).
    pub policy: Option<PolicyKind>,
    /// The exact wait behind `retry_after` for an open breaker or a rate
    /// limiter (the gRPC answer's `grpc-retry-pushback-ms`); `None` for
    /// the other errors.
    pub pushback: Option<Duration>,
}

/// The gRPC metadata telling a client how long to wait before it retries
/// (gRPC's retry design, A6): `grpc-retry-pushback-ms`.
pub const GRPC_PUSHBACK_HEADER: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// A `Retry-After` in whole seconds: rounded up, at least 1.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The status answering an injected fault.
fn injected_status(fault: ripcord::chaos::Fault) -> StatusCode {
    use ripcord::chaos::Fault;
    match fault {
        Fault::Abort { status: Some(s) } => {
            StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        }
        Fault::Error => StatusCode::INTERNAL_SERVER_ERROR,
        Fault::Reset => StatusCode::BAD_GATEWAY,
        Fault::Stall => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl Refusal {
    /// The answer to `error`; see the table above.
    pub fn of<E>(error: &Error<E>) -> Refusal {
        let (status, retry_after) = match error {
            Error::Rejected(r) => (StatusCode::SERVICE_UNAVAILABLE, Some(r.retry_after())),
            Error::RateLimited(r) => (StatusCode::TOO_MANY_REQUESTS, Some(r.retry_after())),
            Error::BulkheadFull(_) => (StatusCode::SERVICE_UNAVAILABLE, Some(Duration::ZERO)),
            Error::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, None),
            Error::Inner(_) => (StatusCode::BAD_GATEWAY, None),
            Error::Fallback(f) => {
                let primary = Refusal::of(f.primary());
                return Refusal {
                    policy: error.policy(),
                    ..primary
                };
            }
            Error::Injected(i) => (injected_status(i.fault()), None),
            // A policy refusal this crate does not know yet.
            _ => (StatusCode::SERVICE_UNAVAILABLE, error.retry_after()),
        };
        let pushback = match error {
            Error::Rejected(_) | Error::RateLimited(_) => retry_after,
            _ => None,
        };
        Refusal {
            status,
            retry_after: retry_after.map(whole_seconds),
            policy: error.policy(),
            pushback,
        }
    }

    /// The value of [`POLICY_HEADER`]: the policy's name
    /// ([`PolicyKind::as_str`]), or `upstream` for the call's own error.
    pub fn policy_name(&self) -> &'static str {
        self.policy.map_or("upstream", PolicyKind::as_str)
    }

    /// Writes `Retry-After` (when there is one) and [`POLICY_HEADER`] into
    /// `headers`, replacing what they held.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        headers.insert(POLICY_HEADER, HeaderValue::from_static(self.policy_name()));
    }

    /// A response with this status and headers, and `body`.
    pub fn response<B>(&self, body: B) -> Response<B> {
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        self.write_headers(response.headers_mut());
        response
    }

    /// The gRPC answer (feature `grpc`): a trailers-only response, HTTP
    /// 200 with `grpc-status` `RESOURCE_EXHAUSTED` for `429`,
    /// `DEADLINE_EXCEEDED` for `504` and `UNAVAILABLE` otherwise, a short
    /// `grpc-message`, the same `Retry-After` and [`POLICY_HEADER`] (as
    /// metadata), and, for an open breaker or a rate limiter,
    /// [`GRPC_PUSHBACK_HEADER`] with the wait in milliseconds (rounded up).
    #[cfg(feature = "grpc")]
    pub fn grpc_response<B>(&self, body: B) -> Response<B> {
        use crate::grpc::code;

        let code = match self.status {
            StatusCode::TOO_MANY_REQUESTS => code::RESOURCE_EXHAUSTED,
            StatusCode::GATEWAY_TIMEOUT => code::DEADLINE_EXCEEDED,
            _ => code::UNAVAILABLE,
        };
        let message = match self.policy {
            Some(PolicyKind::RateLimiter) => "rate%20limited",
            Some(PolicyKind::CircuitBreaker) => "circuit%20breaker%20open",
            Some(PolicyKind::Timeout) => "deadline%20exceeded",
            _ => "overloaded",
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(code));
        headers.insert("grpc-message", HeaderValue::from_static(message));
        if let Some(wait) = self.pushback {
            let ms = wait.as_micros().div_ceil(1000);
            headers.insert(
                GRPC_PUSHBACK_HEADER,
                HeaderValue::from(u64::try_from(ms).unwrap_or(u64::MAX)),
            );
        }
        self.write_headers(headers);
        response
    }
}

#[cfg(test)]
mod tests {
    use ripcord::{BulkheadFull, RateLimited, Timeout};

    use super::*;

    type E = Error<std::io::Error>;

    #[test]
    fn an_injected_fault_maps_to_its_status() {
        use ripcord::chaos::{Fault, Injected};
        let cases = [
            (
                Fault::Abort { status: Some(429) },
                StatusCode::TOO_MANY_REQUESTS,
            ),
            (
                Fault::Abort { status: Some(14) },
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Fault::Abort { status: None },
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (Fault::Error, StatusCode::INTERNAL_SERVER_ERROR),
            (Fault::Reset, StatusCode::BAD_GATEWAY),
            (Fault::Stall, StatusCode::GATEWAY_TIMEOUT),
        ];
        for (fault, status) in cases {
            let r = Refusal::of(&E::Injected(Injected::new("drill", fault)));
            assert_eq!((r.status, r.retry_after), (status, None), "{fault}");
            assert_eq!(r.policy_name(), "chaos");
        }
    }

    #[test]
    fn each_error_maps_to_its_status_wait_and_policy() {
        let breaker = ripcord::CircuitBreaker::builder("b").build().unwrap();
        breaker.force_open();
        let rejected = breaker.try_acquire_owned().unwrap_err();
        let wait = whole_seconds(rejected.retry_after());
        let cases: Vec<(E, StatusCode, Option<u64>, &str)> = vec![
            (
                Error::Rejected(rejected),
                StatusCode::SERVICE_UNAVAILABLE,
                Some(wait),
                "circuit_breaker",
            ),
            (
                Error::RateLimited(RateLimited::new("r", Duration::from_millis(2001))),
                StatusCode::TOO_MANY_REQUESTS,
                Some(3),
                "rate_limiter",
            ),
            (
                Error::RateLimited(RateLimited::new("r", Duration::ZERO)),
                StatusCode::TOO_MANY_REQUESTS,
                Some(1),
                "rate_limiter",
            ),
            (
                Error::BulkheadFull(BulkheadFull::new("k", 4, Duration::ZERO)),
                StatusCode::SERVICE_UNAVAILABLE,
                Some(1),
                "bulkhead",
            ),
            (
                Error::Timeout(Timeout::new("t", Duration::from_secs(2))),
                StatusCode::GATEWAY_TIMEOUT,
                None,
                "timeout",
            ),
            (
                Error::Inner(std::io::Error::other("refused")),
                StatusCode::BAD_GATEWAY,
                None,
                "upstream",
            ),
        ];
        for (error, status, retry_after, policy) in cases {
            let refusal = Refusal::of(&error);
            assert_eq!(
                (refusal.status, refusal.retry_after),
                (status, retry_after),
                "{error:?}"
            );
            let response = refusal.response(());
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[POLICY_HEADER], policy);
            assert_eq!(
                response
                    .headers()
                    .get(RETRY_AFTER)
                    .map(|v| v.to_str().unwrap().to_owned()),
                retry_after.map(|s| s.to_string()),
            );
        }
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn grpc_answers_carry_the_code_and_the_exact_pushback() {
        let breaker = ripcord::CircuitBreaker::builder("b").build().unwrap();
        breaker.force_open();
        let rejected = breaker.try_acquire_owned().unwrap_err();
        let wait = rejected.retry_after();
        let cases: Vec<(E, &str, Option<u128>)> = vec![
            (
                Error::Rejected(rejected),
                "14",
                Some(wait.as_micros().div_ceil(1000)),
            ),
            (
                Error::RateLimited(RateLimited::new("r", Duration::from_micros(1500))),
                "8",
                Some(2),
            ),
            (
                Error::BulkheadFull(BulkheadFull::new("k", 4, Duration::ZERO)),
                "14",
                None,
            ),
            (
                Error::Timeout(Timeout::new("t", Duration::from_secs(2))),
                "4",
                None,
            ),
        ];
        for (error, code, pushback) in cases {
            let response = Refusal::of(&error).grpc_response(());
            assert_eq!(response.status(), StatusCode::OK);
            let h = response.headers();
            assert_eq!(h["grpc-status"], code, "{error:?}");
            assert_eq!(
                h.get(GRPC_PUSHBACK_HEADER)
                    .map(|v| v.to_str().unwrap().parse::<u128>().unwrap()),
                pushback,
                "{error:?}"
            );
        }
    }

    #[test]
    fn written_headers_replace_what_was_there() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("600"));
        headers.insert(POLICY_HEADER, HeaderValue::from_static("fallback"));
        let error: E = Error::RateLimited(RateLimited::new("r", Duration::from_secs(5)));
        Refusal::of(&error).write_headers(&mut headers);
        assert_eq!(headers[RETRY_AFTER], "5");
        assert_eq!(headers[POLICY_HEADER], "rate_limiter");
        assert_eq!(headers.len(), 2);
    }
}
