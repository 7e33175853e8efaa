//! The reqwest-middleware adapter against real HTTP servers on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::any;
use axum::Router;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use ripcord::{Backoff, CircuitBreaker, Pipeline, Retry, State as BreakerState};
use ripcord_tower::reqwest::{classify, HostPipelines, PipelineMiddleware};

#[derive(Clone, Default)]
struct Upstream {
    status: Arc<AtomicU16>,
    hits: Arc<AtomicU32>,
}

async fn handler(State(u): State<Upstream>) -> StatusCode {
    u.hits.fetch_add(1, Ordering::SeqCst);
    StatusCode::from_u16(u.status.load(Ordering::SeqCst)).unwrap()
}

async fn upstream(status: u16) -> (SocketAddr, Upstream) {
    let u = Upstream::default();
    u.status.store(status, Ordering::SeqCst);
    let app = Router::new().fallback(any(handler)).with_state(u.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, u)
}

/// A client with, per host, a retry (3 attempts) around a breaker that
/// opens after 4 failures in a row; requests that cannot be replayed go
/// through the same breaker without the retry.
fn client(middleware: PipelineMiddleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

fn per_host() -> PipelineMiddleware {
    PipelineMiddleware::per_host(|host| {
        let breaker = CircuitBreaker::builder(host)
            .consecutive_failures(4)
            .open_for(Backoff::fixed(Duration::from_secs(60)))
            .build()?;
        let main = Pipeline::builder()
            .retry(
                Retry::builder(host)
                    .max_attempts(3)
                    // An open breaker's rejection asks the retry to wait for
                    // the next probe (60 s here): give up instead.
                    .max_total_time(Duration::from_secs(1))
                    .backoff(Backoff::fixed(Duration::from_millis(1)))
                    .classify(classify),
            )
            .circuit_breaker(breaker.clone())
            .classify(classify)
            .build_named(host)?;
        let once = Pipeline::builder()
            .circuit_breaker(breaker)
            .classify(classify)
            .build_named(host)?;
        Ok(HostPipelines::new(main).non_replayable(once))
    })
    .unwrap()
}

#[tokio::test]
async fn per_host_pipelines_isolate_hosts_and_obey_idempotency() {
    let (bad, bad_state) = upstream(503).await;
    let (good, good_state) = upstream(200).await;
    let middleware = per_host();
    let registry = middleware.registry().clone();
    let client = client(middleware);

    // A POST is sent once, a GET retried: 1 + 3 = 4 failures open the breaker.
    let res = client
        .post(format!("http://{bad}/"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(bad_state.hits.load(Ordering::SeqCst), 1);
    let res = client.get(format!("http://{bad}/")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(bad_state.hits.load(Ordering::SeqCst), 4);

    let err = client
        .get(format!("http://{bad}/"))
        .send()
        .await
        .unwrap_err();
    match &err {
        reqwest_middleware::Error::Middleware(e) => {
            assert!(e.downcast_ref::<ripcord::Rejected>().is_some(), "{e:?}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(bad_state.hits.load(Ordering::SeqCst), 4);

    for _ in 0..5 {
        let res = client.get(format!("http://{good}/")).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(good_state.hits.load(Ordering::SeqCst), 5);

    let bad_key = format!("http://{bad}");
    let good_key = format!("http://{good}");
    let state = |key: &String| {
        registry
            .peek(key)
            .unwrap()
            .main()
            .circuit_breakers()
            .next()
            .unwrap()
            .state()
    };
    assert_eq!(state(&bad_key), BreakerState::Open);
    assert_eq!(state(&good_key), BreakerState::Closed);
}

#[tokio::test]
async fn client_errors_are_not_retried_or_counted() {
    let (addr, state) = upstream(404).await;
    let middleware = per_host();
    let registry = middleware.registry().clone();
    let client = client(middleware);
    for _ in 0..6 {
        let res = client.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(res.status(), 404);
    }
    assert_eq!(state.hits.load(Ordering::SeqCst), 6, "404 is not retried");
    let pipelines = registry.peek(&format!("http://{addr}")).unwrap();
    let breaker = pipelines.main().circuit_breakers().next().unwrap().clone();
    assert_eq!(breaker.state(), BreakerState::Closed);
}
