//! Added latency of ripcord-tower per request, on a hyper client/server pair
//! over loopback: the same GET with no middleware and through each layer —
//! the breaker layers (`CircuitBreakerLayer` with the HTTP classifier, the
//! body-aware `HttpCircuitBreakerLayer`, a per-host
//! `KeyedCircuitBreakerLayer`), the standalone `BulkheadLayer`,
//! `RateLimitLayer` and `TimeoutLayer` (beside tower's own
//! `tower::timeout::TimeoutLayer`), and `PipelineLayer` (a breaker only, and
//! timeout + breaker). `tower/in_process` runs the same layers around a
//! `service_fn` that answers at once: the layers' own cost per request.
//! Run: `cargo bench -p ripcord-benches --bench tower`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use criterion::{criterion_main, BenchmarkGroup, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ripcord::{Bulkhead, CircuitBreaker, Pipeline, RateLimiter, Registry, TimeoutPolicy};
use ripcord_tower::http::{HostKey, HttpCircuitBreakerLayer, HttpClassifier};
use ripcord_tower::pipeline::NoReplay;
use ripcord_tower::{
    BulkheadLayer, CircuitBreakerLayer, KeyedCircuitBreakerLayer, PipelineLayer, RateLimitLayer,
    TimeoutLayer,
};
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

/// Benches every layer around `inner` (responses with body `B`) in `group`.
fn cases<S, B>(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    inner: S,
    baseline: &str,
) where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: std::fmt::Debug + Into<BoxError>,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Error: std::fmt::Debug,
{
    g.bench_function(baseline, |b| {
        b.iter_custom(|iters| rt.block_on(run(&inner, addr, iters)))
    });

    let breaker = CircuitBreaker::builder("bench").build().unwrap();
    let svc = CircuitBreakerLayer::new(breaker)
        .classifier(HttpClassifier::new())
        .layer(inner.clone());
    g.bench_function("CircuitBreakerLayer", |b| {
        b.iter_custom(|iters| rt.block_on(run(&svc, addr, iters)))
    });

    let breaker = CircuitBreaker::builder("bench-body").build().unwrap();
    let svc = HttpCircuitBreakerLayer::new(breaker).layer(inner.clone());
    g.bench_function("HttpCircuitBreakerLayer", |b| {
        b.iter_custom(|iters| rt.block_on(run(&svc, addr, iters)))
    });

    let registry: Registry<String> = Registry::builder(CircuitBreaker::builder("hosts"))
        .build()
        .unwrap();
    let svc = KeyedCircuitBreakerLayer::new(registry, HostKey)
        .classifier(HttpClassifier::new())
        .layer(inner.clone());
    g.bench_function("KeyedCircuitBreakerLayer (HostKey)", |b| {
        b.iter_custom(|iters| rt.block_on(run(&svc, addr, iters)))
    });

    let bulkhead = Bulkhead::builder("bench")
        .max_concurrent(64)
        .build()
        .unwrap();
    let svc = BulkheadLayer::new(bulkhead).layer(inner.clone());
    g.bench_function("BulkheadLayer", |b| {
        b.iter_custom(|iters| rt.block_on(run(&svc, addr, iters)))
    });

    let limiter = RateLimiter::builder("bench")
        .rate(1_000_000_000, Duration::from_secs(1))
        .burst(1_000_000)
        .build()
        .unwrap();
    let svc = RateLimitLayer::new(limiter).layer(inner.clone());
    g.bench_function("RateLimitLayer", |b| {
        b.iter_custom(|iters| rt.block_on(run(&svc, addr, iters)))
    });

    let policy = TimeoutPolicy::builder("bench")
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = TimeoutLayer::new(policy).layer(inner.clone());
    g.bench_function("TimeoutLayer", |b| {
        b.iter_custom(|iters| rt.block_on(run(&svc, addr, iters)))
    });

    let svc = tower::timeout::TimeoutLayer::new(Duration::from_secs(5)).layer(inner.clone());
    g.bench_function("tower::timeout::TimeoutLayer (reference)", |b| {
        b.iter_custom(|iters| rt.block_on(run(&svc, addr, iters)))
    });

    let pipeline: Pipeline<Response<B>, BoxError> = Pipeline::builder()
        .circuit_breaker(CircuitBreaker::builder("bench-pipeline-breaker"))
        .classify(HttpClassifier::new())
        .build()
        .unwrap();
    let svc = PipelineLayer::new(pipeline)
        .replay(NoReplay)
        .layer(inner.clone());
    g.bench_function("PipelineLayer (breaker)", |b| {
        b.iter_custom(|iters| rt.block_on(run(&svc, addr, iters)))
    });

    let pipeline: Pipeline<Response<B>, BoxError> = Pipeline::builder()
        .timeout(Duration::from_secs(5))
        .circuit_breaker(CircuitBreaker::builder("bench-pipeline"))
        .classify(HttpClassifier::new())
        .build()
        .unwrap();
    let svc = PipelineLayer::new(pipeline).replay(NoReplay).layer(inner);
    g.bench_function("PipelineLayer (timeout + breaker)", |b| {
        b.iter_custom(|iters| rt.block_on(run(&svc, addr, iters)))
    });
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
    let mut g = c.benchmark_group("tower/loopback_get");
    cases(&mut g, &rt, addr, client, "hyper (no middleware)");
    g.finish();

    // The middleware alone: the same layers around an inner service that
    // answers at once, so the figure is the layer's own cost per request.
    let instant = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
    });
    let mut g = c.benchmark_group("tower/in_process");
    cases(&mut g, &rt, addr, instant, "service_fn (no middleware)");
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
