//! Integration tests against real HTTP servers on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
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
use ripcord::{Backoff, CircuitBreaker, Pipeline, Registry, Retry, State as BreakerState};
use ripcord_tower::http::{
    response_retry_after, retry_rules, HostKey, HttpCircuitBreakerLayer, HttpClassifier, HttpReplay,
};
use ripcord_tower::shed::{ShedLayer, POLICY_HEADER};
use ripcord_tower::{
    CircuitBreakerLayer, KeyedCircuitBreakerLayer, KeyedPipelineLayer, PipelineLayer,
};
use tower::{BoxError, Layer, ServiceExt};

const OK: u8 = 0;
const UNAVAILABLE: u8 = 1;
const TOO_MANY: u8 = 2;
const NOT_FOUND: u8 = 3;
const SLOW: u8 = 4;

/// An upstream whose behaviour the test switches.
struct Upstream {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicU32>,
}

#[derive(Clone)]
struct Shared {
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicU32>,
}

async fn upstream_handler(State(s): State<Shared>) -> (StatusCode, HeaderMap, &'static str) {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let mut headers = HeaderMap::new();
    match s.mode.load(Ordering::SeqCst) {
        UNAVAILABLE => (StatusCode::SERVICE_UNAVAILABLE, headers, "down"),
        TOO_MANY => {
            headers.insert(http::header::RETRY_AFTER, "1".parse().unwrap());
            (StatusCode::TOO_MANY_REQUESTS, headers, "slow down")
        }
        NOT_FOUND => (StatusCode::NOT_FOUND, headers, "no such thing"),
        SLOW => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            (StatusCode::OK, headers, "late")
        }
        _ => (StatusCode::OK, headers, "ok"),
    }
}

impl Upstream {
    async fn start() -> Upstream {
        let mode = Arc::new(AtomicU8::new(OK));
        let hits = Arc::new(AtomicU32::new(0));
        let app = Router::new()
            .fallback(any(upstream_handler))
            .with_state(Shared {
                mode: mode.clone(),
                hits: hits.clone(),
            });
        let addr = serve(app).await;
        Upstream { addr, mode, hits }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client() -> Client<HttpConnector, String> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: &str) -> Request<String> {
    Request::get(url).body(String::new()).unwrap()
}

fn breaker(name: &str, failures: u32) -> CircuitBreaker {
    CircuitBreaker::builder(name)
        .consecutive_failures(failures)
        .open_for(Backoff::fixed(Duration::from_secs(60)))
        .build()
        .unwrap()
}

#[tokio::test]
async fn breaker_trips_on_5xx_and_429_and_ignores_404() {
    let up = Upstream::start().await;
    let cb = breaker("upstream", 3);
    let svc = CircuitBreakerLayer::new(cb.clone())
        .classifier(HttpClassifier::new())
        .layer(client());

    up.set(NOT_FOUND);
    for _ in 0..5 {
        let res = svc.clone().oneshot(get(&up.url())).await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(
        cb.state(),
        BreakerState::Closed,
        "404 is not the dependency's fault"
    );
    assert_eq!(cb.consecutive_failures(), 0);

    up.set(UNAVAILABLE);
    svc.clone().oneshot(get(&up.url())).await.unwrap();
    svc.clone().oneshot(get(&up.url())).await.unwrap();
    up.set(TOO_MANY);
    let res = svc.clone().oneshot(get(&up.url())).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response_retry_after(&res),
        Some(Duration::from_secs(1)),
        "Retry-After parsed"
    );
    assert_eq!(cb.state(), BreakerState::Open);

    up.set(OK);
    let before = up.hits();
    let err = svc.oneshot(get(&up.url())).await.unwrap_err();
    let rejected = err.downcast_ref::<ripcord::Rejected>().expect("Rejected");
    assert_eq!(rejected.name(), "upstream");
    assert!(rejected.retry_after() > Duration::from_secs(50));
    assert_eq!(
        up.hits(),
        before,
        "a refused call never reaches the upstream"
    );
}

#[tokio::test]
async fn connection_refused_counts_as_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let cb = breaker("refused", 2);
    let svc = CircuitBreakerLayer::new(cb.clone())
        .classifier(HttpClassifier::new())
        .layer(client());
    let url = format!("http://{addr}/");
    for _ in 0..2 {
        let err = svc.clone().oneshot(get(&url)).await.unwrap_err();
        assert!(err.downcast_ref::<ripcord::Rejected>().is_none());
        assert!(err
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some());
    }
    assert_eq!(cb.state(), BreakerState::Open);
    let err = svc.oneshot(get(&url)).await.unwrap_err();
    assert!(err.is::<ripcord::Rejected>());
}

#[tokio::test]
async fn slow_upstream_times_out_through_a_pipeline() {
    let up = Upstream::start().await;
    up.set(SLOW);
    let cb = breaker("slow", 2);
    let pipeline: Pipeline<Response<Incoming>, BoxError> = Pipeline::builder()
        .timeout(Duration::from_millis(50))
        .circuit_breaker(cb.clone())
        .classify(HttpClassifier::new())
        .build()
        .unwrap();
    let svc = PipelineLayer::new(pipeline)
        .replay(HttpReplay)
        .layer(client());
    for _ in 0..2 {
        let started = Instant::now();
        let err = svc.clone().oneshot(get(&up.url())).await.unwrap_err();
        assert!(err.is::<ripcord::Timeout>(), "{err}");
        // Cut before the upstream's answer (500 ms) would have come.
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    assert_eq!(cb.state(), BreakerState::Open, "timeouts are failures");
    let err = svc.oneshot(get(&up.url())).await.unwrap_err();
    assert!(err.is::<ripcord::Rejected>());
}

#[tokio::test]
async fn one_failing_host_does_not_affect_another() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    a.set(UNAVAILABLE);
    let template = CircuitBreaker::builder("hosts")
        .consecutive_failures(2)
        .open_for(Backoff::fixed(Duration::from_secs(60)));
    let registry: Registry<String> = Registry::builder(template).build().unwrap();
    let svc = KeyedCircuitBreakerLayer::new(registry.clone(), HostKey)
        .classifier(HttpClassifier::new())
        .layer(client());

    for _ in 0..2 {
        svc.clone().oneshot(get(&a.url())).await.unwrap();
    }
    let err = svc.clone().oneshot(get(&a.url())).await.unwrap_err();
    assert!(err.is::<ripcord::Rejected>());
    assert_eq!(a.hits(), 2);

    for _ in 0..5 {
        let res = svc.clone().oneshot(get(&b.url())).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(b.hits(), 5);
    let key_a = format!("http://{}", a.addr);
    let key_b = format!("http://{}", b.addr);
    assert_eq!(registry.peek(&key_a).unwrap().state(), BreakerState::Open);
    assert_eq!(registry.peek(&key_b).unwrap().state(), BreakerState::Closed);
}

fn retrying_pipeline(cb: &CircuitBreaker, retry: bool) -> Pipeline<Response<Incoming>, BoxError> {
    let mut builder = Pipeline::builder();
    if retry {
        builder = builder.retry(retry_rules::<Incoming>(
            Retry::builder("upstream")
                .max_attempts(3)
                .backoff(Backoff::fixed(Duration::from_millis(1))),
        ));
    }
    builder
        .circuit_breaker(cb.clone())
        .classify(HttpClassifier::new())
        .build()
        .unwrap()
}

#[tokio::test]
async fn retries_obey_idempotency() {
    let up = Upstream::start().await;
    up.set(UNAVAILABLE);
    let cb = breaker("retry", 100);
    let svc = PipelineLayer::new(retrying_pipeline(&cb, true))
        .replay(HttpReplay)
        .non_replayable(retrying_pipeline(&cb, false))
        .layer(client());

    let res = svc.clone().oneshot(get(&up.url())).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(up.hits(), 3, "GET is retried up to max_attempts");

    let post = Request::post(up.url()).body("pay".to_owned()).unwrap();
    let res = svc.clone().oneshot(post).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(up.hits(), 4, "POST is sent once");

    let mut post = Request::post(up.url()).body("pay".to_owned()).unwrap();
    post.extensions_mut().insert(ripcord_tower::http::Retryable);
    svc.clone().oneshot(post).await.unwrap();
    assert_eq!(up.hits(), 7, "a POST marked Retryable is retried");
    assert_eq!(
        cb.consecutive_failures(),
        7,
        "every attempt counted by the shared breaker"
    );
}

#[tokio::test]
async fn retries_honour_retry_after() {
    let up = Upstream::start().await;
    up.set(TOO_MANY);
    let cb = breaker("retry-after", 100);
    let svc = PipelineLayer::new(retrying_pipeline(&cb, true))
        .replay(HttpReplay)
        .layer(client());
    let started = Instant::now();
    let res = svc.oneshot(get(&up.url())).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(up.hits(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two waits of Retry-After: 1, not the 1 ms backoff: {:?}",
        started.elapsed()
    );
}

/// A server whose handler counts its runs and answers with `status`.
async fn shedding_server(layer: ShedLayer, status: Arc<AtomicU32>) -> (SocketAddr, Arc<AtomicU32>) {
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let app = Router::new()
        .fallback(any(move || {
            let counter = counter.clone();
            let status = status.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let code = status.load(Ordering::SeqCst) as u16;
                if code == 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return StatusCode::OK;
                }
                StatusCode::from_u16(code).unwrap()
            }
        }))
        .layer(layer);
    (serve(app).await, runs)
}

#[tokio::test]
async fn shed_rate_limited_answers_429_without_running_the_handler() {
    let limiter = ripcord::RateLimiter::builder("server")
        .rate(1, Duration::from_secs(30))
        .burst(1)
        .build()
        .unwrap();
    let (addr, runs) = shedding_server(
        ShedLayer::new().rate_limiter(limiter),
        Arc::new(AtomicU32::new(200)),
    )
    .await;
    let url = format!("http://{addr}/");
    let first = client().request(get(&url)).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = client()
        .request(Request::post(&url).body("x".repeat(1 << 16)).unwrap())
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers()[POLICY_HEADER], "rate_limiter");
    let wait = ripcord_tower::http::retry_after(second.headers()).unwrap();
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the handler never ran for the shed request"
    );
}

#[tokio::test]
async fn shed_breaker_opens_on_the_handlers_own_5xx() {
    let cb = breaker("handler", 2);
    let status = Arc::new(AtomicU32::new(500));
    let (addr, runs) =
        shedding_server(ShedLayer::new().circuit_breaker(cb.clone()), status.clone()).await;
    let url = format!("http://{addr}/");
    for _ in 0..2 {
        let res = client().request(get(&url)).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(cb.state(), BreakerState::Open);
    status.store(200, Ordering::SeqCst);
    let res = client().request(get(&url)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[POLICY_HEADER], "circuit_breaker");
    let wait = ripcord_tower::http::retry_after(res.headers()).unwrap();
    assert!(wait > Duration::from_secs(50), "{wait:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn shed_bulkhead_full_answers_503() {
    let bulkhead = ripcord::Bulkhead::builder("server")
        .max_concurrent(1)
        .build()
        .unwrap();
    let (addr, runs) = shedding_server(
        ShedLayer::new().bulkhead(bulkhead),
        Arc::new(AtomicU32::new(0)),
    )
    .await;
    let url = format!("http://{addr}/");
    let slow = tokio::spawn(client().request(get(&url)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let res = client().request(get(&url)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[POLICY_HEADER], "bulkhead");
    assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_pipeline_per_host_isolates_hosts() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    a.set(UNAVAILABLE);
    let registry: Registry<String, Pipeline<Response<Incoming>, BoxError>> =
        Registry::with_factory(|host: &String| {
            Pipeline::builder()
                .timeout(Duration::from_secs(2))
                .circuit_breaker(
                    CircuitBreaker::builder(host)
                        .consecutive_failures(2)
                        .open_for(Backoff::fixed(Duration::from_secs(60))),
                )
                .classify(HttpClassifier::new())
                .build_named(host)
        })
        .build()
        .unwrap();
    let svc = KeyedPipelineLayer::new(registry, HostKey)
        .replay(HttpReplay)
        .layer(client());
    for _ in 0..2 {
        let res = svc.clone().oneshot(get(&a.url())).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let err = svc.clone().oneshot(get(&a.url())).await.unwrap_err();
    assert!(err.is::<ripcord::Rejected>());
    for _ in 0..3 {
        let res = svc.clone().oneshot(get(&b.url())).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!((a.hits(), b.hits()), (2, 3));
}

#[tokio::test]
async fn body_errors_count_as_failures() {
    use http_body_util::BodyExt;
    let app = Router::new()
        .route(
            "/broken",
            axum::routing::get(|| async {
                // A first chunk, then the body fails after the head is out.
                let (tx, rx) =
                    tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(2);
                tokio::spawn(async move {
                    let _ = tx.send(Ok(bytes::Bytes::from_static(b"partial"))).await;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let _ = tx.send(Err(std::io::Error::other("died mid-body"))).await;
                });
                axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            }),
        )
        .route("/fine", axum::routing::get(|| async { "fine" }));
    let addr = serve(app).await;
    let cb = breaker("body", 2);
    let svc = HttpCircuitBreakerLayer::new(cb.clone()).layer(client());

    // A good body read to the end, and one dropped unread: successes.
    let res = svc
        .clone()
        .oneshot(get(&format!("http://{addr}/fine")))
        .await
        .unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "fine");
    drop(
        svc.clone()
            .oneshot(get(&format!("http://{addr}/fine")))
            .await
            .unwrap(),
    );
    assert_eq!(cb.consecutive_failures(), 0);

    for _ in 0..2 {
        let res = svc
            .clone()
            .oneshot(get(&format!("http://{addr}/broken")))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "the head looked fine");
        assert!(res.into_body().collect().await.is_err());
    }
    assert_eq!(cb.state(), BreakerState::Open, "the body errors counted");
    let err = svc
        .oneshot(get(&format!("http://{addr}/fine")))
        .await
        .unwrap_err();
    assert!(err.is::<ripcord::Rejected>());
}

#[tokio::test]
async fn route_keys_isolate_routes_and_bound_the_number_of_breakers() {
    use ripcord_tower::http::RouteKey;
    use std::sync::Arc as StdArc;

    let app = Router::new()
        .route(
            "/users/{id}",
            axum::routing::get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route(
            "/orders/{id}/items",
            axum::routing::get(|| async { "items" }),
        )
        .fallback(any(|| async { "elsewhere" }));
    let addr = serve(app).await;
    let registry: Registry<StdArc<str>> = Registry::builder(
        CircuitBreaker::builder("routes")
            .consecutive_failures(3)
            .open_for(Backoff::fixed(Duration::from_secs(60))),
    )
    .build()
    .unwrap();
    let routes = RouteKey::new(["/users/{id}", "/orders/{id}/items"]);
    let svc = KeyedCircuitBreakerLayer::new(registry.clone(), routes)
        .classifier(HttpClassifier::new())
        .layer(client());
    let url = |path: String| format!("http://{addr}{path}");

    // Three different users, one route: its breaker opens.
    for id in 1..=3 {
        let res = svc
            .clone()
            .oneshot(get(&url(format!("/users/{id}"))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let err = svc
        .clone()
        .oneshot(get(&url("/users/99".into())))
        .await
        .unwrap_err();
    assert!(err.is::<ripcord::Rejected>());

    // Another route, and unmatched paths, are unaffected.
    for id in 0..50 {
        let res = svc
            .clone()
            .oneshot(get(&url(format!("/orders/{id}/items"))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = svc
            .clone()
            .oneshot(get(&url(format!("/misc/{id}"))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(registry.len(), 3, "one breaker per template, plus `other`");
    let state = |key: &str| registry.peek(&StdArc::from(key)).unwrap().state();
    assert_eq!(state("/users/{id}"), BreakerState::Open);
    assert_eq!(state("/orders/{id}/items"), BreakerState::Closed);
    assert_eq!(state("other"), BreakerState::Closed);
}

#[tokio::test]
async fn keyed_http_breaker_judges_each_host_with_its_own_breaker() {
    use http_body_util::BodyExt;
    use ripcord_tower::http::KeyedHttpCircuitBreakerLayer;

    let a = Upstream::start().await;
    let b = Upstream::start().await;
    a.set(UNAVAILABLE);
    let registry: Registry<String> = Registry::builder(
        CircuitBreaker::builder("hosts")
            .consecutive_failures(2)
            .open_for(Backoff::fixed(Duration::from_secs(60))),
    )
    .build()
    .unwrap();
    let svc = KeyedHttpCircuitBreakerLayer::keyed(registry.clone(), HostKey).layer(client());
    for _ in 0..2 {
        let res = svc.clone().oneshot(get(&a.url())).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let err = svc.clone().oneshot(get(&a.url())).await.unwrap_err();
    assert!(err.is::<ripcord::Rejected>());
    for _ in 0..3 {
        let res = svc.clone().oneshot(get(&b.url())).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    assert_eq!((a.hits(), b.hits()), (2, 3));
    let key_b = format!("http://{}", b.addr);
    assert_eq!(registry.peek(&key_b).unwrap().state(), BreakerState::Closed);
}
