//! An axum server that sheds load before its handlers run.
//!
//! Run with `cargo run -p ripcord-tower --example axum_shed`. It starts the
//! server on loopback, fires a burst of requests at it and prints what each
//! got back — `200`, or `429`/`503` with `Retry-After` and the policy that
//! shed it — then exits. Pass `--serve` to keep serving on 127.0.0.1:3000.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ripcord::{Bulkhead, CircuitBreaker, RateLimiter};
use ripcord_tower::shed::{ShedLayer, POLICY_HEADER};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let shed = ShedLayer::new()
        // 5 requests a second, bursts of 5: the rest get 429.
        .rate_limiter(
            RateLimiter::builder("api")
                .rate(5, Duration::from_secs(1))
                .burst(5)
                .build()?,
        )
        // The handler's own 5xx open this breaker: then 503 without running it.
        .circuit_breaker(CircuitBreaker::builder("api").failure_rate(0.5).build()?)
        // At most 64 handlers at once: the rest get 503.
        .bulkhead(Bulkhead::builder("api").max_concurrent(64).build()?);

    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .layer(shed);

    let serve = std::env::args().any(|a| a == "--serve");
    let listener = tokio::net::TcpListener::bind(if serve {
        "127.0.0.1:3000"
    } else {
        "127.0.0.1:0"
    })
    .await?;
    let addr = listener.local_addr()?;
    if serve {
        println!("serving on http://{addr}/");
        axum::serve(listener, app).await?;
        return Ok(());
    }
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    for i in 1..=8 {
        let res = client.get(format!("http://{addr}/").parse()?).await?;
        let retry_after = res.headers().get(http::header::RETRY_AFTER);
        let policy = res.headers().get(POLICY_HEADER);
        println!(
            "request {i}: {} retry-after={:?} policy={:?}",
            res.status(),
            retry_after,
            policy
        );
    }
    Ok(())
}
