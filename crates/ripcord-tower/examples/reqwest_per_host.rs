//! A reqwest client with a pipeline (retry + circuit breaker) per host, in
//! one `.with(..)` line, through the reqwest-middleware adapter.
//!
//! Run with `cargo run -p ripcord-tower --features reqwest --example reqwest_per_host`.
//! It starts a healthy and a failing upstream on loopback; the failing
//! host's GETs are retried, then its breaker opens and refuses at once,
//! while the healthy host is unaffected.

use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use reqwest_middleware::ClientBuilder;
use ripcord::{Backoff, CircuitBreaker, Pipeline, Retry};
use ripcord_tower::reqwest::{classify, HostPipelines, PipelineMiddleware};

async fn upstream(status: StatusCode) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/", get(move || async move { status }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let healthy = upstream(StatusCode::OK).await?;
    let failing = upstream(StatusCode::BAD_GATEWAY).await?;

    let client = ClientBuilder::new(reqwest::Client::new())
        .with(PipelineMiddleware::per_host(|host| {
            Ok(HostPipelines::new(
                Pipeline::builder()
                    .timeout(Duration::from_secs(2))
                    .retry(
                        Retry::builder(host)
                            .max_attempts(2)
                            .max_total_time(Duration::from_secs(1))
                            .backoff(Backoff::fixed(Duration::from_millis(10)))
                            .classify(classify),
                    )
                    .circuit_breaker(
                        CircuitBreaker::builder(host)
                            .consecutive_failures(4)
                            .open_for(Backoff::fixed(Duration::from_secs(30))),
                    )
                    .classify(classify)
                    .build_named(host)?,
            ))
        })?)
        .build();

    for round in 1..=4 {
        for addr in [healthy, failing] {
            match client.get(format!("http://{addr}/")).send().await {
                Ok(res) => println!("round {round} {addr}: {}", res.status()),
                Err(reqwest_middleware::Error::Middleware(e)) => {
                    match e.downcast_ref::<ripcord::Rejected>() {
                        Some(r) => println!("round {round} {addr}: refused: {r}"),
                        None => println!("round {round} {addr}: {e}"),
                    }
                }
                Err(e) => println!("round {round} {addr}: {e}"),
            }
        }
    }
    Ok(())
}
