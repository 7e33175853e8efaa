//! gRPC through the proxy: a real tonic server (the gRPC health service,
//! its answers chosen per request) behind an HTTP/2 upstream and a tonic
//! client in front, on loopback. Unary and server-streaming calls, breakers
//! judging `grpc-status` (in the head or at the stream's end), the proxy's
//! own answers as gRPC statuses, and `grpc-timeout`.

mod proxy_support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_support::{eventually, start};
use ripcord::State;
use ripcord_proxy::server::RunningProxy;
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// A health service whose answer is chosen by the request's `service`
/// field; it counts its calls and keeps the last `grpc-timeout` it got.
#[derive(Clone, Default)]
struct Switch {
    runs: Arc<AtomicU32>,
    timeout: Arc<Mutex<Option<String>>>,
}

#[allow(clippy::result_large_err)] // tonic::Status is what the handler returns
fn status_for(what: &str) -> Result<(), Status> {
    match what {
        "unavailable" => Err(Status::unavailable("down")),
        "internal" => Err(Status::internal("bug")),
        "not_found" => Err(Status::not_found("no")),
        "detailed" => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert("x-detail", "why".parse().unwrap());
            Err(Status::with_metadata(Code::Aborted, "gave up", metadata))
        }
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
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        *self.timeout.lock().unwrap() = timeout;
        let what = request.into_inner().service;
        if what == "slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        status_for(&what)?;
        let mut response = Response::new(serving());
        response
            .metadata_mut()
            .insert("x-upstream", "switch".parse().unwrap());
        Ok(response)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        // "stream-<what>": three messages, 20 ms apart, then that status.
        let what = request.into_inner().service;
        let end = status_for(what.trim_start_matches("stream-"));
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
        Ok(Response::new(Box::pin(ReceiverStream(rx))))
    }
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

/// Serves a switch through axum's HTTP/2 (h2c; axum does not enforce
/// `grpc-timeout` itself, so a cut call is the proxy's doing).
async fn upstream() -> (SocketAddr, Switch) {
    let switch = Switch::default();
    let router = tonic::service::Routes::new(HealthServer::new(switch.clone())).into_axum_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, switch)
}

/// A proxy with one upstream `grpc` at `addr` (`upstream` lines added to
/// its table) and one route `health` on `/` (`route` lines added).
async fn proxy(addr: SocketAddr, upstream: &str, route: &str) -> RunningProxy {
    start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.grpc]
addresses = ["{addr}"]
{upstream}

[[routes]]
name = "health"
path_prefix = "/"
upstream = "grpc"
{route}
"#
    ))
    .await
}

async fn client(proxy: &RunningProxy) -> HealthClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{}", proxy.listen_addrs()[0]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

/// A tonic client over hyper's HTTP/2 client rather than tonic's channel:
/// the channel enforces a request's `grpc-timeout` itself, and would race
/// the proxy to cut a late call.
type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    tonic::body::Body,
>;

fn hyper_client(proxy: &RunningProxy) -> HealthClient<HyperClient> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin = format!("http://{}", proxy.listen_addrs()[0])
        .parse()
        .unwrap();
    HealthClient::with_origin(client, origin)
}

fn ask(service: &str) -> Request<HealthCheckRequest> {
    Request::new(HealthCheckRequest {
        service: service.into(),
    })
}

/// Within 10 s, or the test fails.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("answered within 10 s")
}

/// The messages of a `Watch` stream and how it ended.
async fn watch(client: &mut HealthClient<Channel>, service: &str) -> (usize, Result<(), Status>) {
    let mut stream = match bounded(client.watch(ask(service))).await {
        Ok(r) => r.into_inner(),
        Err(status) => return (0, Err(status)),
    };
    let mut n = 0;
    loop {
        match bounded(stream.message()).await {
            Ok(Some(_)) => n += 1,
            Ok(None) => return (n, Ok(())),
            Err(status) => return (n, Err(status)),
        }
    }
}

const BREAKER: &str =
    r#"pipeline.circuit_breaker = { consecutive_failures = 2, open_for = "60s" }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_server_streaming_calls_pass_over_h2c() {
    let (addr, switch) = upstream().await;
    let proxy = proxy(addr, &format!("protocol = \"h2c\"\n{BREAKER}"), "").await;
    let mut c = client(&proxy).await;

    let r = bounded(c.check(ask(""))).await.expect("a healthy answer");
    assert_eq!(r.metadata().get("x-upstream").unwrap(), "switch");
    assert_eq!(r.into_inner().status, 1);
    // The upstream's own statuses pass, message included.
    let e = bounded(c.check(ask("not_found"))).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "no"));
    assert!(e.metadata().get("x-ripcord-policy").is_none());

    let (n, end) = watch(&mut c, "stream-ok").await;
    assert_eq!(n, 3);
    end.expect("the stream ends with OK");
    // The trailers after the messages pass whole: status, message and
    // the service's own metadata.
    let (n, end) = watch(&mut c, "stream-detailed").await;
    assert_eq!(n, 3);
    let e = end.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Aborted, "gave up"));
    assert_eq!(e.metadata().get("x-detail").unwrap(), "why");
    assert_eq!(switch.runs.load(Ordering::SeqCst), 4);
    // NOT_FOUND is ignored, OK a success: the breaker stays closed.
    assert_eq!(proxy.breaker("grpc").unwrap().state(), State::Closed);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_speaks_h2_to_the_upstream_for_grpc_over_h2() {
    let (addr, _switch) = upstream().await;
    let proxy = proxy(addr, "protocol = \"auto\"", "").await;
    let mut c = client(&proxy).await;
    for _ in 0..3 {
        bounded(c.check(ask(""))).await.expect("a healthy answer");
    }
    let (n, end) = watch(&mut c, "stream-ok").await;
    assert_eq!(n, 3);
    end.expect("the stream ends with OK");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_upstream_trips_the_breaker_and_the_proxy_answers_unavailable() {
    let (addr, switch) = upstream().await;
    let proxy = proxy(addr, &format!("protocol = \"h2c\"\n{BREAKER}"), "").await;
    let mut c = client(&proxy).await;
    for _ in 0..2 {
        let e = bounded(c.check(ask("unavailable"))).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::Unavailable, "down"));
    }
    let breaker = proxy.breaker("grpc").unwrap();
    assert_eq!(breaker.state(), State::Open);

    let runs = switch.runs.load(Ordering::SeqCst);
    let started = Instant::now();
    let e = bounded(c.check(ask(""))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(
        e.metadata().get("x-ripcord-policy").unwrap(),
        "circuit_breaker"
    );
    let pushback: u64 = e
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("a pushback")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=60_000).contains(&pushback),
        "the time to the probe: {pushback}"
    );
    // Answered by the proxy, at once: the upstream is not called.
    assert_eq!(switch.runs.load(Ordering::SeqCst), runs);
    assert!(started.elapsed() < Duration::from_secs(5));
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_judged_when_it_ends() {
    let (addr, _switch) = upstream().await;
    let proxy = proxy(addr, &format!("protocol = \"h2c\"\n{BREAKER}"), "").await;
    let mut c = client(&proxy).await;
    let breaker = proxy.breaker("grpc").unwrap();
    // Three messages and UNAVAILABLE in the trailers, twice: the head said
    // nothing, the ends are two failures.
    for _ in 0..2 {
        assert_eq!(breaker.state(), State::Closed);
        let (n, end) = watch(&mut c, "stream-unavailable").await;
        assert_eq!(n, 3);
        assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    }
    assert!(
        eventually(Duration::from_secs(5), || breaker.state() == State::Open).await,
        "two streams ending UNAVAILABLE open the breaker"
    );
    let (n, end) = watch(&mut c, "stream-ok").await;
    assert_eq!(n, 0);
    let e = end.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(
        e.metadata().get("x-ripcord-policy").unwrap(),
        "circuit_breaker"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_codes_are_configurable() {
    let (addr, _switch) = upstream().await;
    let upstream_lines =
        format!("protocol = \"h2c\"\ngrpc.failure_codes = [\"NOT_FOUND\"]\n{BREAKER}");
    let proxy = proxy(addr, &upstream_lines, "").await;
    let mut c = client(&proxy).await;
    let breaker = proxy.breaker("grpc").unwrap();
    for _ in 0..4 {
        let e = bounded(c.check(ask("unavailable"))).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
    }
    assert_eq!(
        breaker.state(),
        State::Closed,
        "UNAVAILABLE is ignored here"
    );
    for _ in 0..2 {
        let e = bounded(c.check(ask("not_found"))).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    }
    assert_eq!(breaker.state(), State::Open, "NOT_FOUND is a failure here");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_cuts_a_slow_call_with_deadline_exceeded() {
    let (addr, switch) = upstream().await;
    let proxy = proxy(addr, &format!("protocol = \"h2c\"\n{BREAKER}"), "").await;
    let mut c = hyper_client(&proxy);
    let mut req = ask("slow");
    req.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let e = bounded(c.check(req)).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert_eq!(e.metadata().get("x-ripcord-policy").unwrap(), "timeout");
    // The upstream would have answered after 5 s.
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    // The upstream got what was left of the budget.
    let forwarded = switch
        .timeout
        .lock()
        .unwrap()
        .clone()
        .expect("a grpc-timeout");
    let left = ripcord_tower::grpc::parse_grpc_timeout(&forwarded.parse().unwrap())
        .expect("a valid grpc-timeout");
    assert!(
        left <= Duration::from_millis(300) && !left.is_zero(),
        "{forwarded}"
    );
    // DEADLINE_EXCEEDED is a failure.
    let mut req = ask("slow");
    req.set_timeout(Duration::from_millis(50));
    let e = bounded(c.check(req)).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert_eq!(proxy.breaker("grpc").unwrap().state(), State::Open);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_resource_exhausted() {
    let (addr, switch) = upstream().await;
    let proxy = proxy(
        addr,
        "protocol = \"h2c\"",
        r#"pipeline = { rate_limiter = { rate = 1, period = "60s" } }"#,
    )
    .await;
    let mut c = client(&proxy).await;
    bounded(c.check(ask("")))
        .await
        .expect("the first call passes");
    let e = bounded(c.check(ask(""))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(
        e.metadata().get("x-ripcord-policy").unwrap(),
        "rate_limiter"
    );
    assert!(e.metadata().get("grpc-retry-pushback-ms").is_some());
    assert_eq!(switch.runs.load(Ordering::SeqCst), 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// An h2c upstream that reads the request body to its end and answers with
/// the value of its `x-trailer` trailer (or `none`) as a header.
async fn trailer_echo() -> SocketAddr {
    use http_body_util::BodyExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let collected = req.into_body().collect().await?;
                        let got = collected
                            .trailers()
                            .and_then(|t| t.get("x-trailer"))
                            .map_or("none".to_string(), |v| v.to_str().unwrap().to_string());
                        let mut r =
                            http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                        r.headers_mut()
                            .insert("x-got-trailer", got.parse().unwrap());
                        Ok::<_, hyper::Error>(r)
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_reach_an_h2c_upstream() {
    use http_body_util::StreamBody;

    let addr = trailer_echo().await;
    let proxy = proxy(addr, "protocol = \"h2c\"", "").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-trailer", "sent".parse().unwrap());
    let frames = vec![
        Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from_static(b"body"))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let req = http::Request::post(format!("http://{}/up", proxy.listen_addrs()[0]))
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let r = bounded(client.request(req)).await.expect("a response");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-got-trailer"], "sent");
    proxy.shutdown(Duration::from_secs(1)).await;
}
