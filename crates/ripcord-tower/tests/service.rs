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
