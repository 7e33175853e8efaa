//! Sends GETs over loopback through one middleware, for profiling its cost
//! per request with a deterministic tool such as callgrind.
//!
//! `cargo run --release -p ripcord-tower --example overhead -- <layer> [n]`
//! sends `n` (default 2000) sequential GETs from a hyper client to an axum
//! server in the same current-thread runtime, through `<layer>`: `none`,
//! `breaker` (`CircuitBreakerLayer`, HTTP classifier), `http-breaker`
//! (`HttpCircuitBreakerLayer`), `keyed` (`KeyedCircuitBreakerLayer` by
//! host), `bulkhead`, `rate-limit`, `timeout`, `pipeline` (timeout +
//! breaker) or `pipeline-breaker` (a pipeline with a breaker only). Under
//! `valgrind --tool=callgrind`, the difference in instructions between
//! `none` and a layer, divided by `n`, is the layer's cost per request:
//!
//! ```sh
//! cargo build --release -p ripcord-tower --example overhead
//! valgrind --tool=callgrind target/release/examples/overhead pipeline 2000
//! ```

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ripcord::{CircuitBreaker, Pipeline, TimeoutPolicy};
use ripcord_tower::http::HttpClassifier;
use ripcord_tower::pipeline::NoReplay;
use ripcord_tower::{CircuitBreakerLayer, PipelineLayer, TimeoutLayer};
use tower::{BoxError, Layer, Service, ServiceExt};

type Body = Empty<Bytes>;

async fn run<S, B>(svc: S, url: &str, n: u32) -> Result<(), BoxError>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    for _ in 0..n {
        let req = Request::get(url).body(Empty::new())?;
        let res = svc.clone().oneshot(req).await.map_err(Into::into)?;
        res.into_body().collect().await.map_err(Into::into)?;
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let layer = args.next().unwrap_or_else(|| "none".to_owned());
    let n: u32 = match args.next() {
        Some(n) => n.parse()?,
        None => 2000,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let app = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
        let breaker = CircuitBreaker::builder("overhead").build()?;
        match layer.as_str() {
            "none" => run(client, &url, n).await,
            "breaker" => {
                let layer = CircuitBreakerLayer::new(breaker).classifier(HttpClassifier::new());
                run(layer.layer(client), &url, n).await
            }
            "timeout" => {
                let policy = TimeoutPolicy::builder("overhead")
                    .timeout(Duration::from_secs(5))
                    .build()?;
                run(TimeoutLayer::new(policy).layer(client), &url, n).await
            }
            "pipeline" => {
                let pipeline: Pipeline<Response<hyper::body::Incoming>, BoxError> =
                    Pipeline::builder()
                        .timeout(Duration::from_secs(5))
                        .circuit_breaker(breaker)
                        .classify(HttpClassifier::new())
                        .build()?;
                let layer = PipelineLayer::new(pipeline).replay(NoReplay);
                run(layer.layer(client), &url, n).await
            }
            "http-breaker" => {
                let layer = ripcord_tower::http::HttpCircuitBreakerLayer::new(breaker);
                run(layer.layer(client), &url, n).await
            }
            "keyed" => {
                let registry: ripcord::Registry<String> =
                    ripcord::Registry::builder(CircuitBreaker::builder("hosts")).build()?;
                let layer = ripcord_tower::KeyedCircuitBreakerLayer::new(
                    registry,
                    ripcord_tower::http::HostKey,
                )
                .classifier(HttpClassifier::new());
                run(layer.layer(client), &url, n).await
            }
            "bulkhead" => {
                let bulkhead = ripcord::Bulkhead::builder("overhead")
                    .max_concurrent(64)
                    .build()?;
                run(ripcord_tower::BulkheadLayer::new(bulkhead).layer(client), &url, n).await
            }
            "rate-limit" => {
                let limiter = ripcord::RateLimiter::builder("overhead")
                    .rate(1_000_000_000, Duration::from_secs(1))
                    .burst(1_000_000)
                    .build()?;
                run(ripcord_tower::RateLimitLayer::new(limiter).layer(client), &url, n).await
            }
            "pipeline-breaker" => {
                let pipeline: Pipeline<Response<hyper::body::Incoming>, BoxError> =
                    Pipeline::builder()
                        .circuit_breaker(breaker)
                        .classify(HttpClassifier::new())
                        .build()?;
                let layer = PipelineLayer::new(pipeline).replay(NoReplay);
                run(layer.layer(client), &url, n).await
            }
            other => Err(format!(
                "unknown layer `{other}`: expected none, breaker, http-breaker, keyed, bulkhead, rate-limit, timeout, pipeline or pipeline-breaker"
            )
            .into()),
        }
    })
}
