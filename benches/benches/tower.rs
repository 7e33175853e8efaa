//! Added latency of ripcord-tower per request, on a hyper client/server pair
//! over loopback: the same GET with no middleware, through a
//! `CircuitBreakerLayer` (HTTP classifier), through a per-host
//! `KeyedCircuitBreakerLayer`, and through a `PipelineLayer` (timeout +
//! breaker). `tower/in_process` runs the same layers around a `service_fn`
//! that answers at once: the layers' own cost per request. Run:
//! `cargo bench -p ripcord-benches --bench tower`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use criterion::{criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ripcord::{CircuitBreaker, Pipeline, Registry};
use ripcord_tower::http::{HostKey, HttpClassifier};
use ripcord_tower::{CircuitBreakerLayer, KeyedCircuitBreakerLayer, PipelineLayer};
use tower::{BoxError, Layer, Service, ServiceExt};

type Body = Empty<Bytes>;

fn request(addr: SocketAddr) -> Request<Body> {
    Request::get(format!("http://{addr}/"))
        .body(Empty::new())
        .unwrap()
}

/// Runs `iters` sequential requests through `svc` and returns the time taken.
async fn run<S, B>(svc: &S, addr: SocketAddr, iters: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..iters {
        let res = svc.clone().oneshot(request(addr)).await.unwrap();
        black_box(res.into_body().collect().await.unwrap());
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    // One thread for client, server and connection tasks: no cross-thread
    // wake-ups, whose cost varies by tens of microseconds on a busy machine.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();

    let breaker = CircuitBreaker::builder("bench").build().unwrap();
    let with_breaker = CircuitBreakerLayer::new(breaker)
        .classifier(HttpClassifier::new())
        .layer(client.clone());
    let registry: Registry<String> = Registry::builder(CircuitBreaker::builder("hosts"))
        .build()
        .unwrap();
    let keyed = KeyedCircuitBreakerLayer::new(registry, HostKey)
        .classifier(HttpClassifier::new())
        .layer(client.clone());
    let pipeline: Pipeline<Response<hyper::body::Incoming>, BoxError> = Pipeline::builder()
        .timeout(Duration::from_secs(5))
        .circuit_breaker(CircuitBreaker::builder("bench-pipeline"))
        .classify(HttpClassifier::new())
        .build()
        .unwrap();
    let with_pipeline = PipelineLayer::new(pipeline)
        .replay(ripcord_tower::pipeline::NoReplay)
        .layer(client.clone());

    let mut g = c.benchmark_group("tower/loopback_get");
    g.bench_function("hyper (no middleware)", |b| {
        b.iter_custom(|iters| rt.block_on(run(&client, addr, iters)))
    });
    g.bench_function("CircuitBreakerLayer", |b| {
        b.iter_custom(|iters| rt.block_on(run(&with_breaker, addr, iters)))
    });
    g.bench_function("KeyedCircuitBreakerLayer (HostKey)", |b| {
        b.iter_custom(|iters| rt.block_on(run(&keyed, addr, iters)))
    });
    g.bench_function("PipelineLayer (timeout + breaker)", |b| {
        b.iter_custom(|iters| rt.block_on(run(&with_pipeline, addr, iters)))
    });
    g.finish();

    // The middleware alone: the same layers around an inner service that
    // answers at once, so the figure is the layer's own cost per request.
    let instant = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
    });
    let breaker = CircuitBreaker::builder("bench-inproc").build().unwrap();
    let with_breaker = CircuitBreakerLayer::new(breaker)
        .classifier(HttpClassifier::new())
        .layer(instant);
    let registry: Registry<String> = Registry::builder(CircuitBreaker::builder("hosts"))
        .build()
        .unwrap();
    let keyed = KeyedCircuitBreakerLayer::new(registry, HostKey)
        .classifier(HttpClassifier::new())
        .layer(instant);
    let pipeline: Pipeline<Response<Body>, BoxError> = Pipeline::builder()
        .timeout(Duration::from_secs(5))
        .circuit_breaker(CircuitBreaker::builder("bench-inproc-pipeline"))
        .classify(HttpClassifier::new())
        .build()
        .unwrap();
    let with_pipeline = PipelineLayer::new(pipeline)
        .replay(ripcord_tower::pipeline::NoReplay)
        .layer(instant);
    let mut g = c.benchmark_group("tower/in_process");
    g.bench_function("service_fn (no middleware)", |b| {
        b.iter_custom(|iters| rt.block_on(run(&instant, addr, iters)))
    });
    g.bench_function("CircuitBreakerLayer", |b| {
        b.iter_custom(|iters| rt.block_on(run(&with_breaker, addr, iters)))
    });
    g.bench_function("KeyedCircuitBreakerLayer (HostKey)", |b| {
        b.iter_custom(|iters| rt.block_on(run(&keyed, addr, iters)))
    });
    g.bench_function("PipelineLayer (timeout + breaker)", |b| {
        b.iter_custom(|iters| rt.block_on(run(&with_pipeline, addr, iters)))
    });
    g.finish();
}

/// The criterion group; a module so its generated function needs no doc comment.
mod group {
    use std::time::Duration;

    use criterion::{criterion_group, Criterion};

    fn config() -> Criterion {
        Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .sample_size(40)
    }

    criterion_group! {
        name = benches;
        config = config();
        targets = super::bench
    }
}

criterion_main!(group::benches);
