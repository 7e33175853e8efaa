//! Integration tests against a real tonic server (the gRPC health service
//! from tonic-health, with behaviour chosen per request) on loopback.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ripcord::{Backoff, CircuitBreaker, RateLimiter, State as BreakerState};
use ripcord_tower::grpc::{DeadlineLayer, GrpcCircuitBreakerLayer};
use ripcord_tower::shed::ShedLayer;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::ServiceBuilder;

/// A health service whose answer is chosen by the request's `service` field.
#[derive(Clone, Default)]
struct Switch {
    runs: Arc<AtomicU32>,
}

#[allow(clippy::result_large_err)] // tonic::Status is what the handler returns
fn status_for(what: &str) -> Result<(), Status> {
    match what {
        "unavailable" => Err(Status::unavailable("down")),
        "internal" => Err(Status::internal("bug")),
        "unknown" => Err(Status::unknown("?")),
        "exhausted" => Err(Status::resource_exhausted("full")),
        "deadline" => Err(Status::deadline_exceeded("late")),
        "not_found" => Err(Status::not_found("no")),
        "invalid" => Err(Status::invalid_argument("bad")),
        "denied" => Err(Status::permission_denied("no")),
        "unauthenticated" => Err(Status::unauthenticated("who")),
        "exists" => Err(Status::already_exists("dup")),
        "precondition" => Err(Status::failed_precondition("not now")),
        _ => Ok(()),
    }
}

fn serving() -> HealthCheckResponse {
    HealthCheckResponse { status: 1 }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Switch {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let what = request.into_inner().service;
        if what == "slow" {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        status_for(&what)?;
        Ok(Response::new(serving()))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        // "stream-<code>": three messages, 20 ms apart, then that status.
        let what = request.into_inner().service;
        let end = status_for(what.trim_start_matches("stream-"));
        let stream = async_stream(end);
        Ok(Response::new(Box::pin(stream)))
    }
}

fn async_stream(
    end: Result<(), Status>,
) -> impl Stream<Item = Result<HealthCheckResponse, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if tx.send(Ok(serving())).await.is_err() {
                return;
            }
        }
        if let Err(status) = end {
            let _ = tx.send(Err(status)).await;
        }
    });
    ReceiverStream(rx)
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// Serves the switch (through axum's HTTP/2, so the server does not
/// enforce `grpc-timeout` itself), optionally behind a shedding layer.
async fn start(shed: Option<ShedLayer>) -> (SocketAddr, Arc<AtomicU32>) {
    let switch = Switch::default();
    let runs = switch.runs.clone();
    let mut router = tonic::service::Routes::new(HealthServer::new(switch)).into_axum_router();
    if let Some(shed) = shed {
        router = router.layer(shed);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, runs)
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn breaker(name: &str, failures: u32) -> CircuitBreaker {
    CircuitBreaker::builder(name)
        .consecutive_failures(failures)
        .open_for(Backoff::fixed(Duration::from_secs(60)))
        .build()
        .unwrap()
}

fn check(what: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: what.to_owned(),
    }
}

#[tokio::test]
async fn unary_trips_on_failure_codes_and_ignores_the_rest() {
    let (addr, runs) = start(None).await;
    let cb = breaker("grpc", 5);
    let svc = ServiceBuilder::new()
        .layer(GrpcCircuitBreakerLayer::new(cb.clone()))
        .service(channel(addr).await);
    let mut client = HealthClient::new(svc);

    for what in [
        "not_found",
        "invalid",
        "denied",
        "unauthenticated",
        "exists",
        "precondition",
    ] {
        let status = client.check(check(what)).await.unwrap_err();
        assert_ne!(status.code(), Code::Ok);
    }
    client.check(check("ok")).await.unwrap();
    assert_eq!(
        cb.consecutive_failures(),
        0,
        "client errors are not counted"
    );
    assert_eq!(cb.state(), BreakerState::Closed);

    for what in [
        "unavailable",
        "internal",
        "unknown",
        "exhausted",
        "deadline",
    ] {
        client.check(check(what)).await.unwrap_err();
    }
    assert_eq!(cb.state(), BreakerState::Open);

    let before = runs.load(Ordering::SeqCst);
    let status = client.check(check("ok")).await.unwrap_err();
    let source = std::error::Error::source(&status).expect("the middleware error");
    assert!(source.is::<ripcord::Rejected>(), "{status:?}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        before,
        "refused without a call"
    );
}

#[tokio::test]
async fn streaming_calls_are_recorded_when_the_stream_ends() {
    let (addr, _) = start(None).await;
    let cb = breaker("stream", 1);
    let svc = ServiceBuilder::new()
        .layer(GrpcCircuitBreakerLayer::new(cb.clone()))
        .service(channel(addr).await);
    let mut client = HealthClient::new(svc);

    // A stream that ends OK: a success, recorded at its end.
    let mut stream = client.watch(check("stream-ok")).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(msg) = stream.message().await.unwrap() {
        assert_eq!(msg.status, 1);
        n += 1;
    }
    assert_eq!(n, 3);
    assert_eq!(cb.state(), BreakerState::Closed);

    // A stream that fails after three messages: the headers were fine, the
    // breaker stays closed until the trailers say UNAVAILABLE.
    let mut stream = client
        .watch(check("stream-unavailable"))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert_eq!(
        cb.state(),
        BreakerState::Closed,
        "not judged at the headers"
    );
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream should fail"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable);
    eprintln!("{:?} {}", cb.stats(), cb.consecutive_failures());
    assert_eq!(
        cb.state(),
        BreakerState::Open,
        "judged at the end of the stream"
    );
}

#[tokio::test]
async fn a_stream_ending_with_a_client_error_is_ignored() {
    let (addr, _) = start(None).await;
    let cb = breaker("stream-ignored", 1);
    let svc = ServiceBuilder::new()
        .layer(GrpcCircuitBreakerLayer::new(cb.clone()))
        .service(channel(addr).await);
    let mut client = HealthClient::new(svc);
    let mut stream = client
        .watch(check("stream-not_found"))
        .await
        .unwrap()
        .into_inner();
    while let Ok(Some(_)) = stream.message().await {}
    assert_eq!(cb.state(), BreakerState::Closed);
}

#[tokio::test]
async fn grpc_timeout_cuts_the_call_and_counts_as_a_failure() {
    let (addr, _) = start(None).await;
    let cb = breaker("deadline", 1);
    let svc = ServiceBuilder::new()
        .layer(GrpcCircuitBreakerLayer::new(cb.clone()))
        .layer(DeadlineLayer::new())
        .service(channel(addr).await);
    let mut client = HealthClient::new(svc);
    let mut request = Request::new(check("slow"));
    request.set_timeout(Duration::from_millis(50));
    let started = Instant::now();
    let status = client.check(request).await.unwrap_err();
    // Semantic: cut before the server's answer (500 ms) would have come.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // tonic's channel honours grpc-timeout too: whichever timer fires first
    // cuts the call, and either way the breaker counts a failure.
    let source = std::error::Error::source(&status).expect("the middleware error");
    assert!(
        source.is::<ripcord::Timeout>() || status.message().contains("Timeout"),
        "{status:?}"
    );
    assert_eq!(cb.state(), BreakerState::Open);
}

#[tokio::test]
async fn deadline_layer_honours_grpc_timeout_on_any_http_client() {
    use tower::{service_fn, ServiceExt};
    let slow = service_fn(|_: http::Request<()>| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    });
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new())
        .service(slow);
    let req = http::Request::get("/")
        .header("grpc-timeout", "30m")
        .body(())
        .unwrap();
    let started = Instant::now();
    let err = svc.clone().oneshot(req).await.unwrap_err();
    // Cut before the service's answer (500 ms) would have come.
    assert!(started.elapsed() < Duration::from_millis(500));
    let timeout = err.downcast_ref::<ripcord::Timeout>().expect("a Timeout");
    assert_eq!(timeout.elapsed(), Duration::from_millis(30));
    // No header, no deadline.
    let req = http::Request::get("/").body(()).unwrap();
    assert!(svc.oneshot(req).await.is_ok());
}

#[tokio::test]
async fn server_shed_answers_resource_exhausted_without_running_the_handler() {
    let limiter = RateLimiter::builder("server")
        .rate(1, Duration::from_secs(30))
        .burst(1)
        .build()
        .unwrap();
    let (addr, runs) = start(Some(ShedLayer::new().grpc().rate_limiter(limiter))).await;
    let mut client = HealthClient::new(channel(addr).await);
    client.check(check("ok")).await.unwrap();
    let status = client.check(check("ok")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.metadata().get("x-ripcord-policy").unwrap(),
        "rate_limiter"
    );
    assert!(status.metadata().get("retry-after").is_some());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_shed_answers_unavailable_when_the_handler_breaker_opens() {
    let cb = breaker("handler", 2);
    let (addr, runs) = start(Some(ShedLayer::new().grpc().circuit_breaker(cb.clone()))).await;
    let mut client = HealthClient::new(channel(addr).await);
    client.check(check("not_found")).await.unwrap_err();
    for _ in 0..2 {
        let status = client.check(check("internal")).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal);
    }
    assert_eq!(cb.state(), BreakerState::Open);
    let status = client.check(check("ok")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.metadata().get("x-ripcord-policy").unwrap(),
        "circuit_breaker"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

/// Serves the switch with tonic's own server, behind `layer`.
async fn start_tonic<L, ResBody>(layer: L) -> (SocketAddr, Arc<AtomicU32>)
where
    L: tower::Layer<tonic::service::Routes> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<tower::BoxError> + Send,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    let switch = Switch::default();
    let runs = switch.runs.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(HealthServer::new(switch))
            .serve_with_incoming(incoming)
            .await
            .unwrap()
    });
    (addr, runs)
}

/// Reads a stream to its end; the status it ended with.
async fn drain(mut stream: tonic::Streaming<HealthCheckResponse>) -> Code {
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => return Code::Ok,
            Err(status) => return status.code(),
        }
    }
}

#[tokio::test]
async fn server_side_breaker_reads_the_status_from_the_trailers_of_a_stream() {
    let cb = breaker("server-stream", 2);
    let (addr, _) = start_tonic(GrpcCircuitBreakerLayer::new(cb.clone())).await;
    let mut client = HealthClient::new(channel(addr).await);

    // Normal responses: the headers say nothing, the trailers carry the status.
    let stream = client.watch(check("stream-ok")).await.unwrap().into_inner();
    assert_eq!(drain(stream).await, Code::Ok);
    let stream = client
        .watch(check("stream-not_found"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(drain(stream).await, Code::NotFound);
    assert_eq!(
        cb.consecutive_failures(),
        0,
        "OK and NOT_FOUND do not count"
    );

    let mut stream = client
        .watch(check("stream-unavailable"))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert_eq!(cb.consecutive_failures(), 0, "not judged at the headers");
    assert_eq!(drain(stream).await, Code::Unavailable);
    // The server records when its response stream has been sent; the client
    // may see the trailers a moment before that.
    wait_for(|| cb.consecutive_failures() == 1).await;

    // A unary failure is a trailers-only response: judged at its head.
    client.check(check("internal")).await.unwrap_err();
    wait_for(|| cb.state() == BreakerState::Open).await;
}

#[tokio::test]
async fn server_shed_breaker_judges_streams_at_their_end_on_a_tonic_server() {
    let cb = breaker("shed-stream", 1);
    let (addr, runs) = start_tonic(ShedLayer::new().grpc().circuit_breaker(cb.clone())).await;
    let mut client = HealthClient::new(channel(addr).await);

    let stream = client
        .watch(check("stream-precondition"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(drain(stream).await, Code::FailedPrecondition);
    let mut stream = client
        .watch(check("stream-exhausted"))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert_eq!(
        cb.state(),
        BreakerState::Closed,
        "not judged at the headers"
    );
    assert_eq!(drain(stream).await, Code::ResourceExhausted);
    wait_for(|| cb.state() == BreakerState::Open).await;

    // Open: the next call is shed with UNAVAILABLE, the handler never runs.
    let before = runs.load(Ordering::SeqCst);
    let status = client.check(check("ok")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.metadata().get("x-ripcord-policy").unwrap(),
        "circuit_breaker"
    );
    assert_eq!(runs.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn one_failing_method_does_not_trip_another() {
    use ripcord::Registry;
    use ripcord_tower::grpc::{KeyedGrpcCircuitBreakerLayer, MethodKey};

    let (addr, runs) = start(None).await;
    let registry: Registry<String> = Registry::builder(
        CircuitBreaker::builder("methods")
            .consecutive_failures(2)
            .open_for(Backoff::fixed(Duration::from_secs(60))),
    )
    .build()
    .unwrap();
    let svc = ServiceBuilder::new()
        .layer(KeyedGrpcCircuitBreakerLayer::keyed(
            registry.clone(),
            MethodKey,
        ))
        .service(channel(addr).await);
    let mut client = HealthClient::new(svc);

    for _ in 0..2 {
        let status = client.check(check("unavailable")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    let before = runs.load(Ordering::SeqCst);
    let status = client.check(check("ok")).await.unwrap_err();
    let source = std::error::Error::source(&status).expect("the middleware error");
    assert!(source.is::<ripcord::Rejected>(), "{status:?}");
    assert_eq!(runs.load(Ordering::SeqCst), before, "Check is refused");

    // Watch has its own breaker, still closed.
    let stream = client.watch(check("stream-ok")).await.unwrap().into_inner();
    assert_eq!(drain(stream).await, Code::Ok);
    let check_key = "/grpc.health.v1.Health/Check".to_owned();
    let watch_key = "/grpc.health.v1.Health/Watch".to_owned();
    assert_eq!(
        registry.peek(&check_key).unwrap().state(),
        BreakerState::Open
    );
    assert_eq!(
        registry.peek(&watch_key).unwrap().state(),
        BreakerState::Closed
    );
}

#[tokio::test]
async fn one_failing_host_does_not_trip_another_grpc_host() {
    use ripcord::Registry;
    use ripcord_tower::grpc::KeyedGrpcCircuitBreakerLayer;
    use ripcord_tower::http::HostKey;

    // Two servers; the per-host layer sits over one lazily connecting
    // channel per host, chosen by the request's authority.
    let (a, runs_a) = start(None).await;
    let (b, runs_b) = start(None).await;
    let registry: Registry<String> = Registry::builder(
        CircuitBreaker::builder("hosts")
            .consecutive_failures(1)
            .open_for(Backoff::fixed(Duration::from_secs(60))),
    )
    .build()
    .unwrap();
    let (chan_a, chan_b) = (channel(a).await, channel(b).await);
    let route = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let chan = if req.uri().authority().map(|x| x.as_str()) == Some(&a.to_string()) {
            chan_a.clone()
        } else {
            chan_b.clone()
        };
        tower::ServiceExt::oneshot(chan, req)
    });
    let svc = ServiceBuilder::new()
        .layer(KeyedGrpcCircuitBreakerLayer::keyed(
            registry.clone(),
            HostKey,
        ))
        .service(route);
    let mut client_a =
        HealthClient::with_origin(svc.clone(), format!("http://{a}").parse().unwrap());
    let mut client_b = HealthClient::with_origin(svc, format!("http://{b}").parse().unwrap());

    client_a.check(check("unavailable")).await.unwrap_err();
    let status = client_a.check(check("ok")).await.unwrap_err();
    assert!(std::error::Error::source(&status)
        .unwrap()
        .is::<ripcord::Rejected>());
    client_b.check(check("ok")).await.unwrap();
    assert_eq!(
        (runs_a.load(Ordering::SeqCst), runs_b.load(Ordering::SeqCst)),
        (1, 1)
    );
    assert_eq!(
        registry.peek(&format!("http://{a}")).unwrap().state(),
        BreakerState::Open
    );
    assert_eq!(
        registry.peek(&format!("http://{b}")).unwrap().state(),
        BreakerState::Closed
    );
}

/// Waits (at most 2 s) for a condition the server side sets a moment after
/// the client has seen the response.
async fn wait_for(cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cond(), "condition not met within 2 s");
}
