//! A hyper client with one circuit breaker per upstream host.
//!
//! Run with `cargo run -p ripcord-tower --example per_host_client`. It starts
//! two upstreams on loopback — one healthy, one answering 503 — and calls
//! both through a [`KeyedCircuitBreakerLayer`] keyed by scheme + authority:
//! the failing host's breaker opens and its calls are refused at once, while
//! the healthy host keeps being served.

use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ripcord::{Backoff, CircuitBreaker, Registry};
use ripcord_tower::http::{HostKey, HttpClassifier};
use ripcord_tower::KeyedCircuitBreakerLayer;
use tower::{Layer, ServiceExt};

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
    let failing = upstream(StatusCode::SERVICE_UNAVAILABLE).await?;

    // One breaker per host, built lazily from this template.
    let registry: Registry<String> = Registry::builder(
        CircuitBreaker::builder("hosts")
            .consecutive_failures(3)
            .open_for(Backoff::fixed(Duration::from_secs(30))),
    )
    .build()?;
    let client = KeyedCircuitBreakerLayer::new(registry.clone(), HostKey)
        .classifier(HttpClassifier::new())
        .layer(Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>());

    for round in 1..=5 {
        for addr in [healthy, failing] {
            let req = http::Request::get(format!("http://{addr}/")).body(Empty::new())?;
            match client.clone().oneshot(req).await {
                Ok(res) => println!("round {round} {addr}: {}", res.status()),
                Err(e) => match e.downcast_ref::<ripcord::Rejected>() {
                    Some(r) => println!("round {round} {addr}: refused ({r})"),
                    None => println!("round {round} {addr}: error {e}"),
                },
            }
        }
    }
    for (host, breaker) in registry.entries() {
        println!("{host}: {}", breaker.state());
    }
    Ok(())
}
