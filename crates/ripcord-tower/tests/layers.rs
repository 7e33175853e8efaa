//! The standalone per-policy layers (timeout, retry, bulkhead, rate
//! limiter) around a hyper client, against an axum upstream on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ripcord::{Backoff, Bulkhead, RateLimiter, Retry, TimeoutPolicy};
use ripcord_tower::http::{retry_rules, HttpReplay, Retryable};
use ripcord_tower::{BulkheadLayer, RateLimitLayer, RetryLayer, TimeoutLayer};
use tower::{Layer, Service, ServiceExt};

/// An upstream: `/slow` answers after 300 ms, `/busy` answers 429 with
/// `Retry-After: 1`, `/flaky` answers 503 to the first two calls and then
/// 200, `/down` always 503, anything else 200 at once. Counts its calls.
async fn upstream() -> (SocketAddr, Arc<AtomicU32>) {
    async fn handler(
        State(hits): State<Arc<AtomicU32>>,
        uri: http::Uri,
    ) -> (StatusCode, HeaderMap, &'static str) {
        let n = hits.fetch_add(1, Ordering::SeqCst);
        let mut headers = HeaderMap::new();
        match uri.path() {
            "/slow" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                (StatusCode::OK, headers, "late")
            }
            "/busy" => {
                headers.insert(http::header::RETRY_AFTER, "1".parse().unwrap());
                (StatusCode::TOO_MANY_REQUESTS, headers, "slow down")
            }
            "/flaky" if n < 2 => (StatusCode::SERVICE_UNAVAILABLE, headers, "down"),
            "/down" => (StatusCode::SERVICE_UNAVAILABLE, headers, "down"),
            _ => (StatusCode::OK, headers, "ok"),
        }
    }
    let hits = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .fallback(any(handler))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

fn client() -> Client<HttpConnector, String> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(addr: SocketAddr, path: &str) -> Request<String> {
    Request::get(format!("http://{addr}{path}"))
        .body(String::new())
        .unwrap()
}

#[tokio::test]
async fn timeout_layer_cuts_a_slow_call_with_a_typed_error() {
    let (addr, _) = upstream().await;
    let policy = TimeoutPolicy::builder("upstream")
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let svc = TimeoutLayer::new(policy).layer(client());

    let res = svc.clone().oneshot(get(addr, "/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let started = Instant::now();
    let err = svc.oneshot(get(addr, "/slow")).await.unwrap_err();
    // Semantic: cut before the upstream's answer (300 ms) would have come.
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let timeout = err.downcast_ref::<ripcord::Timeout>().expect("a Timeout");
    assert_eq!(timeout.name(), "upstream");
    assert_eq!(timeout.elapsed(), Duration::from_millis(50));
}

#[tokio::test]
async fn timeout_layer_passes_inner_errors_through() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let policy = TimeoutPolicy::builder("t")
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = TimeoutLayer::new(policy)
        .layer(client())
        .oneshot(get(addr, "/"))
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<ripcord::Timeout>().is_none());
    assert!(err
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some());
}

fn retry(attempts: u32) -> Retry {
    retry_rules::<Incoming>(
        Retry::builder("upstream")
            .max_attempts(attempts)
            .backoff(Backoff::fixed(Duration::from_millis(1))),
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn retry_layer_retries_idempotent_requests_until_success() {
    let (addr, hits) = upstream().await;
    let svc = RetryLayer::new(retry(3)).replay(HttpReplay).layer(client());
    let res: Response<Incoming> = svc.oneshot(get(addr, "/flaky")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the third attempt succeeded");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retry_layer_obeys_idempotency() {
    let (addr, hits) = upstream().await;
    let svc = RetryLayer::new(retry(3)).replay(HttpReplay).layer(client());

    let res = svc.clone().oneshot(get(addr, "/down")).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the last answer"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "GET retried up to max_attempts"
    );

    let post = Request::post(format!("http://{addr}/down"))
        .body("pay".to_owned())
        .unwrap();
    svc.clone().oneshot(post).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 4, "POST sent once");

    let mut post = Request::post(format!("http://{addr}/down"))
        .body("pay".to_owned())
        .unwrap();
    post.extensions_mut().insert(Retryable);
    svc.oneshot(post).await.unwrap();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        7,
        "a Retryable POST is retried"
    );
}

#[tokio::test]
async fn retry_layer_honours_retry_after() {
    let (addr, hits) = upstream().await;
    let svc = RetryLayer::new(retry(2)).replay(HttpReplay).layer(client());
    let started = Instant::now();
    let res = svc.oneshot(get(addr, "/busy")).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited Retry-After: 1, not the 1 ms backoff: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retry_layer_retries_connection_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let counted = tower::service_fn(move |req: Request<String>| {
        counter.fetch_add(1, Ordering::SeqCst);
        client().oneshot(req)
    });
    let svc = RetryLayer::new(retry(3)).replay(HttpReplay).layer(counted);
    let err = svc.oneshot(get(addr, "/")).await.unwrap_err();
    assert!(err
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn bulkhead_layer_refuses_fast_when_full_and_never_holds_readiness() {
    let (addr, hits) = upstream().await;
    let bulkhead = Bulkhead::builder("upstream")
        .max_concurrent(1)
        .build()
        .unwrap();
    let svc = BulkheadLayer::new(bulkhead.clone()).layer(client());

    let slow = tokio::spawn(svc.clone().oneshot(get(addr, "/slow")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bulkhead.in_use(), 1);

    let mut other = svc.clone();
    let ready = tokio::time::timeout(Duration::from_secs(1), other.ready())
        .await
        .expect("ready although the bulkhead is full")
        .unwrap();
    let err = ready.call(get(addr, "/")).await.unwrap_err();
    let full = err
        .downcast_ref::<ripcord::BulkheadFull>()
        .expect("BulkheadFull");
    assert_eq!(full.name(), "upstream");
    // Refused at once: it did not wait, and the slow call still holds the slot.
    assert_eq!(full.waited(), Duration::ZERO);
    assert!(!slow.is_finished());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the refused call never left"
    );

    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(bulkhead.in_use(), 0, "the slot came back");
    let res = svc.oneshot(get(addr, "/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn bulkhead_layer_with_a_queue_waits_for_a_slot() {
    let (addr, hits) = upstream().await;
    let bulkhead = Bulkhead::builder("queued")
        .max_concurrent(1)
        .max_queued(1)
        .max_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = BulkheadLayer::new(bulkhead.clone()).layer(client());
    let slow = tokio::spawn(svc.clone().oneshot(get(addr, "/slow")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let queued = tokio::spawn(svc.clone().oneshot(get(addr, "/")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(bulkhead.queued(), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the queued call waits");
    // The queue is full too: a third call is refused at once.
    let err = svc.clone().oneshot(get(addr, "/")).await.unwrap_err();
    assert!(err.is::<ripcord::BulkheadFull>());
    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(queued.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn rate_limit_layer_refuses_over_the_rate_with_the_time_to_wait() {
    let (addr, hits) = upstream().await;
    let limiter = RateLimiter::builder("upstream")
        .rate(1, Duration::from_secs(30))
        .burst(1)
        .build()
        .unwrap();
    let svc = RateLimitLayer::new(limiter).layer(client());
    let res = svc.clone().oneshot(get(addr, "/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let mut other = svc.clone(); // clones share the limiter
    let ready = tokio::time::timeout(Duration::from_secs(1), other.ready())
        .await
        .expect("ready although over the rate")
        .unwrap();
    let err = ready.call(get(addr, "/")).await.unwrap_err();
    let limited = err
        .downcast_ref::<ripcord::RateLimited>()
        .expect("RateLimited");
    assert!(
        limited.retry_after() > Duration::from_secs(20),
        "{limited:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn rate_limit_layer_with_max_wait_waits_for_the_next_permit() {
    let (addr, hits) = upstream().await;
    let limiter = RateLimiter::builder("paced")
        .rate(10, Duration::from_secs(1))
        .burst(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = RateLimitLayer::new(limiter).layer(client());
    let started = Instant::now();
    for _ in 0..3 {
        let res = svc.clone().oneshot(get(addr, "/")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(180),
        "paced at 10/s: {:?}",
        started.elapsed()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn layers_compose_in_a_service_builder() {
    let (addr, hits) = upstream().await;
    let svc = tower::ServiceBuilder::new()
        .layer(TimeoutLayer::new(
            TimeoutPolicy::builder("all")
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        ))
        .layer(RetryLayer::new(retry(3)).replay(HttpReplay))
        .layer(BulkheadLayer::new(
            Bulkhead::builder("b").max_concurrent(4).build().unwrap(),
        ))
        .service(client());
    let res = svc.oneshot(get(addr, "/flaky")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}
