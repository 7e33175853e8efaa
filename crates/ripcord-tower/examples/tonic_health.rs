//! A tonic server with gRPC load shedding, and a tonic client with a gRPC
//! circuit breaker per method and `grpc-timeout` deadlines — on
//! tonic-health's generated code, so no `protoc` is needed.
//!
//! Run with `cargo run -p ripcord-tower --features grpc --example tonic_health`.
//! The server allows 3 calls a second; the client sends 6 at once and prints
//! each answer (`RESOURCE_EXHAUSTED` once the limiter sheds), then asks about
//! an unknown service (`NOT_FOUND`: not counted against the server) and shows
//! the state of the client's breaker for the `Check` method.

use std::time::Duration;

use ripcord::{CircuitBreaker, RateLimiter, Registry};
use ripcord_tower::grpc::{DeadlineLayer, KeyedGrpcCircuitBreakerLayer, MethodKey};
use ripcord_tower::shed::ShedLayer;
use tonic::transport::Endpoint;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Server: tonic-health's service, behind a gRPC-flavoured shedding layer.
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let shed = ShedLayer::new().grpc().rate_limiter(
        RateLimiter::builder("health")
            .rate(3, Duration::from_secs(1))
            .burst(3)
            .build()?,
    );
    let router = tonic::service::Routes::new(health)
        .into_axum_router()
        .layer(shed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });

    // Client: a breaker per method (`/package.Service/Method`) judging gRPC
    // status codes, under it a deadline layer.
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let breakers: Registry<String> =
        Registry::builder(CircuitBreaker::builder("health-client")).build()?;
    let svc = ServiceBuilder::new()
        .layer(KeyedGrpcCircuitBreakerLayer::keyed(
            breakers.clone(),
            MethodKey,
        ))
        .layer(DeadlineLayer::new().max(Duration::from_secs(2)))
        .service(channel);
    let mut client = HealthClient::new(svc);

    for i in 1..=6 {
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        request.set_timeout(Duration::from_millis(500)); // sent as grpc-timeout
        match client.check(request).await {
            Ok(res) => println!("call {i}: status {:?}", res.into_inner().status()),
            Err(status) => println!(
                "call {i}: {:?} ({}), shed by {:?}",
                status.code(),
                status.message(),
                status.metadata().get("x-ripcord-policy")
            ),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let unknown = HealthCheckRequest {
        service: "no.such.Service".into(),
    };
    let status = client.check(unknown).await.unwrap_err();
    println!(
        "unknown service: {:?} (ignored by the breaker)",
        status.code()
    );
    let check = "/grpc.health.v1.Health/Check".to_owned();
    if let Some(breaker) = breakers.peek(&check) {
        println!(
            "{check} breaker: {}, {:?}",
            breaker.state(),
            breaker.stats()
        );
    }
    Ok(())
}
