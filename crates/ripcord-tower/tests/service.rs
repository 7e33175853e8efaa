//! Service behaviour without a network: readiness, sharing between clones,
//! downcasting, compile-time auto traits, and the HTTP helpers.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ripcord::{CircuitBreaker, Outcome, Pipeline, State};
use ripcord_tower::http::{
    classify_status, retry_after_at, HeaderKey, HostKey, HttpClassifier, HttpReplay,
};
use ripcord_tower::keyed::ExtractKey;
use ripcord_tower::pipeline::Replay;
use ripcord_tower::shed::ShedLayer;
use ripcord_tower::{CircuitBreakerLayer, CircuitBreakerService, PipelineLayer};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

/// An inner service that is always ready and counts its calls and
/// readiness polls.
#[derive(Clone, Default)]
struct Counting {
    calls: Arc<AtomicU32>,
    polls: Arc<AtomicU32>,
}

impl Service<bool> for Counting {
    type Response = ();
    type Error = &'static str;
    type Future = std::future::Ready<Result<(), &'static str>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ok: bool) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(if ok { Ok(()) } else { Err("failed") })
    }
}

#[tokio::test]
async fn readiness_is_never_held_while_open_and_refusals_fail_in_call() {
    let breaker = CircuitBreaker::builder("r").build().unwrap();
    breaker.force_open();
    let inner = Counting::default();
    let mut svc = CircuitBreakerLayer::new(breaker).layer(inner.clone());
    let ready = svc
        .ready()
        .await
        .expect("ready although the breaker is open");
    let err = ready.call(true).await.unwrap_err();
    assert!(err.is::<ripcord::Rejected>());
    assert_eq!(inner.polls.load(Ordering::SeqCst), 1);
    assert_eq!(
        inner.calls.load(Ordering::SeqCst),
        0,
        "the inner service is not called"
    );
}

#[tokio::test]
async fn clones_share_the_breaker_and_inner_errors_pass_through() {
    let breaker = CircuitBreaker::builder("shared")
        .consecutive_failures(2)
        .build()
        .unwrap();
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(Counting::default());
    let (a, b) = (svc.clone(), svc.clone());
    let err = a.oneshot(false).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed",
        "the inner error, boxed, unchanged"
    );
    b.oneshot(false).await.unwrap_err();
    assert_eq!(breaker.state(), State::Open);
    assert!(svc
        .oneshot(true)
        .await
        .unwrap_err()
        .is::<ripcord::Rejected>());
}

#[tokio::test]
async fn a_custom_classifier_decides_the_outcome() {
    let breaker = CircuitBreaker::builder("custom")
        .consecutive_failures(1)
        .build()
        .unwrap();
    // Errors are ignored: they never trip the breaker.
    let svc = CircuitBreakerLayer::new(breaker.clone())
        .classifier(|r: &Result<(), &'static str>| match r {
            Ok(()) => Outcome::Success,
            Err(_) => Outcome::Ignored,
        })
        .layer(Counting::default());
    for _ in 0..5 {
        svc.clone().oneshot(false).await.unwrap_err();
    }
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test]
async fn pipeline_errors_downcast_to_policy_structs() {
    let pipeline: Pipeline<(), BoxError> = Pipeline::builder()
        .timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let slow = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, Infallible>(())
    });
    let err = PipelineLayer::new(pipeline)
        .layer(slow)
        .oneshot(())
        .await
        .unwrap_err();
    assert!(err.is::<ripcord::Timeout>(), "{err}");
}

#[test]
fn status_classification() {
    for (code, outcome) in [
        (200, Outcome::Success),
        (204, Outcome::Success),
        (301, Outcome::Success),
        (400, Outcome::Ignored),
        (401, Outcome::Ignored),
        (404, Outcome::Ignored),
        (409, Outcome::Ignored),
        (429, Outcome::Failure),
        (500, Outcome::Failure),
        (502, Outcome::Failure),
        (503, Outcome::Failure),
        (504, Outcome::Failure),
    ] {
        let status = http::StatusCode::from_u16(code).unwrap();
        assert_eq!(classify_status(status), outcome, "{code}");
        assert_eq!(HttpClassifier::new().status(status), outcome, "{code}");
    }
}

#[test]
fn retry_after_forms() {
    let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    let header = |v: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, v.parse().unwrap());
        h
    };
    assert_eq!(retry_after_at(&header("0"), now), Some(Duration::ZERO));
    assert_eq!(
        retry_after_at(&header(" 7 "), now),
        Some(Duration::from_secs(7))
    );
    assert_eq!(
        retry_after_at(&header("Sun, 06 Nov 1994 08:49:47 GMT"), now),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        retry_after_at(&header("Sun, 06 Nov 1994 08:00:00 GMT"), now),
        Some(Duration::ZERO),
        "a date in the past: no wait"
    );
    assert_eq!(retry_after_at(&header("-1"), now), None);
    assert_eq!(retry_after_at(&header("soon"), now), None);
    assert_eq!(
        retry_after_at(&http::HeaderMap::new(), SystemTime::now()),
        None
    );
}

#[test]
fn keys_and_replay() {
    let req = http::Request::get("https://api.example.com:8443/v1/pay?x=1")
        .header("x-tenant", "acme")
        .body(String::new())
        .unwrap();
    assert_eq!(HostKey.extract(&req), "https://api.example.com:8443");
    let key = HeaderKey::new(http::HeaderName::from_static("x-tenant"));
    assert_eq!(key.extract(&req), "acme");
    let origin_form = http::Request::get("/v1")
        .header(http::header::HOST, "svc.local")
        .body(())
        .unwrap();
    assert_eq!(HostKey.extract(&origin_form), "svc.local");

    assert!(HttpReplay.replay(&req).is_some(), "GET replays");
    let post = http::Request::post("http://a/")
        .body(String::from("x"))
        .unwrap();
    assert!(HttpReplay.replay(&post).is_none(), "POST does not");
    let put = http::Request::put("http://a/")
        .body(String::from("x"))
        .unwrap();
    assert_eq!(
        HttpReplay.replay(&put).unwrap().body(),
        "x",
        "PUT is idempotent"
    );
}

fn assert_send_sync_clone<T: Send + Sync + Clone>(_: &T) {}
fn assert_send<T: Send>(_: &T) {}

#[test]
fn services_layers_and_futures_are_send_sync() {
    let breaker = CircuitBreaker::builder("t").build().unwrap();
    let layer = CircuitBreakerLayer::new(breaker).classifier(HttpClassifier::new());
    assert_send_sync_clone(&layer);
    let mut svc: CircuitBreakerService<Counting, _> =
        CircuitBreakerLayer::new(CircuitBreaker::builder("u").build().unwrap())
            .layer(Counting::default());
    assert_send_sync_clone(&svc);
    assert_send(&svc.call(true));
    assert_send_sync_clone(&ShedLayer::new());
    let pipeline: Pipeline<(), BoxError> = Pipeline::builder().build().unwrap();
    let mut p = PipelineLayer::new(pipeline).layer(Counting::default());
    assert_send_sync_clone(&p);
    assert_send(&Service::<bool>::call(&mut p, true));
}

#[test]
fn route_key_matches_templates_segment_by_segment() {
    use ripcord_tower::http::RouteKey;
    let routes = RouteKey::new([
        "/",
        "/users/{id}",
        "/users/me", // never reached: the template above matches first
        "/files/{*path}",
        "/a/{x}/b",
    ])
    .other("unrouted");
    let key = |path: &str| routes.route(path).to_string();
    assert_eq!(key("/"), "/");
    assert_eq!(key("/users/7"), "/users/{id}");
    assert_eq!(
        key("/users/7/"),
        "/users/{id}",
        "a trailing slash is ignored"
    );
    assert_eq!(key("/users/me"), "/users/{id}", "first match wins");
    assert_eq!(key("/users"), "unrouted", "a parameter needs a segment");
    assert_eq!(key("/users//"), "unrouted", "an empty segment is no id");
    assert_eq!(key("/users/7/posts"), "unrouted");
    assert_eq!(
        key("/files"),
        "/files/{*path}",
        "a rest matches nothing too"
    );
    assert_eq!(key("/files/a/b/c.txt"), "/files/{*path}");
    assert_eq!(key("/a/1/b"), "/a/{x}/b");
    assert_eq!(key("/a/1/c"), "unrouted");
    assert_eq!(key(""), "/");
    let req = http::Request::get("http://h/users/5?x=1").body(()).unwrap();
    assert_eq!(&*ExtractKey::extract(&routes, &req), "/users/{id}");
}

#[test]
fn standalone_layers_and_their_futures_are_send_sync() {
    use ripcord::{Bulkhead, RateLimiter, Retry, TimeoutPolicy};
    use ripcord_tower::{BulkheadLayer, RateLimitLayer, RetryLayer, TimeoutLayer};

    let timeout = TimeoutLayer::new(TimeoutPolicy::builder("t").build().unwrap());
    assert_send_sync_clone(&timeout);
    let mut svc = timeout.layer(Counting::default());
    assert_send_sync_clone(&svc);
    assert_send(&svc.call(true));

    let retry = RetryLayer::new(Retry::builder("r").build().unwrap());
    assert_send_sync_clone(&retry);
    let mut svc = retry.layer(Counting::default());
    assert_send_sync_clone(&svc);
    assert_send(&svc.call(true));

    let bulkhead = BulkheadLayer::new(Bulkhead::builder("b").build().unwrap());
    assert_send_sync_clone(&bulkhead);
    let mut svc = bulkhead.layer(Counting::default());
    assert_send_sync_clone(&svc);
    assert_send(&svc.call(true));

    let limiter = RateLimitLayer::new(RateLimiter::builder("l").build().unwrap());
    assert_send_sync_clone(&limiter);
    let mut svc = limiter.layer(Counting::default());
    assert_send_sync_clone(&svc);
    assert_send(&svc.call(true));
}

/// An inner service that is ready only after being polled twice, counting
/// its readiness polls and calls.
#[derive(Clone, Default)]
struct Slow {
    polls: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
}

impl Service<()> for Slow {
    type Response = ();
    type Error = Infallible;
    type Future = std::future::Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.polls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(()))
    }
}

#[tokio::test]
async fn policy_layers_pass_readiness_through_and_refuse_in_call() {
    use ripcord::{Bulkhead, RateLimiter};
    use ripcord_tower::{BulkheadLayer, RateLimitLayer};

    // An open breaker inside a pipeline: readiness is the inner service's,
    // and the refusal comes from `call` without calling it.
    let breaker = CircuitBreaker::builder("p").build().unwrap();
    breaker.force_open();
    let pipeline: Pipeline<(), BoxError> = Pipeline::builder()
        .circuit_breaker(breaker)
        .build()
        .unwrap();
    let inner = Slow::default();
    let mut svc = PipelineLayer::new(pipeline).layer(inner.clone());
    let ready = svc.ready().await.unwrap();
    assert_eq!(inner.polls.load(Ordering::SeqCst), 2, "the inner readiness");
    let err = ready.call(()).await.unwrap_err();
    assert!(err.is::<ripcord::Rejected>());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);

    // A full bulkhead and an exhausted limiter, likewise.
    let bulkhead = Bulkhead::builder("b").max_concurrent(1).build().unwrap();
    let _slot = bulkhead.try_acquire_owned().unwrap();
    let inner = Slow::default();
    let mut svc = BulkheadLayer::new(bulkhead).layer(inner.clone());
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<ripcord::BulkheadFull>());
    assert_eq!(inner.polls.load(Ordering::SeqCst), 2);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);

    let limiter = RateLimiter::builder("l")
        .rate(1, Duration::from_secs(60))
        .burst(1)
        .build()
        .unwrap();
    limiter.try_acquire().unwrap();
    let inner = Slow::default();
    let mut svc = RateLimitLayer::new(limiter).layer(inner.clone());
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<ripcord::RateLimited>());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
}
