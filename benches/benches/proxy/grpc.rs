//! The gRPC comparison of the proxy bench: unary calls (the health
//! service's `Check`, answered by tonic's own server) straight to the
//! upstream and through `ripcord proxy` (an `h2c` upstream, a route with a
//! circuit breaker and a 2 s timeout), in one run.
//!
//! The load comes from tonic clients on the bench's client runtime:
//! [`CHANNELS`] channels (one HTTP/2 connection each) carrying
//! [`CONCURRENCY`](super::CONCURRENCY) calls at a time between them in the
//! closed-loop runs, and one channel one call at a time in the others. Every
//! call must return `SERVING`, or the bench fails.
//!
//! - criterion (`proxy_grpc/<target>`): closed loop, time per call = 1 /
//!   throughput;
//! - the table after it: calls/s (median of [`ROUNDS`] rounds of
//!   [`CALLS`] calls) with p50/p99 and the proxy's CPU per call, and p50/p99
//!   one call at a time ([`TURNS`] turns of [`PER_TURN`] calls), with the p99
//!   added over direct and the throughput as a share of direct's; the
//!   targets are taken in turn, [`SETTLE`](super::SETTLE) apart, as in the
//!   HTTP table.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ripcord_proxy::loadgen::LatencyHistogram;
use tokio::runtime::Runtime;
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::{median, process_cpu, settle, us, ChildProxy, CONCURRENCY, DEADLINE};

/// The path prefix of the proxy's gRPC route: the health service.
pub(super) const ROUTE: &str = "/grpc.health.v1.Health";
/// Channels (HTTP/2 connections) of a closed-loop run.
const CHANNELS: usize = 4;
/// Rounds of the table's closed-loop runs.
const ROUNDS: usize = 10;
/// Calls of each closed-loop round.
const CALLS: u64 = 10_000;
/// Turns of the table's one-at-a-time runs.
const TURNS: usize = 30;
/// Calls of each target in one turn of the one-at-a-time runs.
const PER_TURN: u64 = 100;
/// Calls made, and not recorded, at the start of each one-at-a-time turn
/// (see the HTTP table's `SEQUENTIAL_WARM_UP`).
const WARM_UP: u64 = 3;

/// The health service, always `SERVING`.
#[derive(Clone, Copy, Default)]
struct Serving;

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Serving {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse { status: 1 }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        Err(Status::unimplemented("only Check is benchmarked"))
    }
}

/// Starts tonic's server with the health service on `rt`.
pub(super) fn upstream(rt: &Runtime) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listener for the gRPC upstream");
        let addr = listener.local_addr().expect("its address");
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(
            Server::builder()
                .add_service(HealthServer::new(Serving))
                .serve_with_incoming(incoming),
        );
        addr
    })
}

/// One target: its channels and the proxy's process (`None` for direct).
struct Target {
    name: &'static str,
    clients: Vec<HealthClient<Channel>>,
    process: Option<u32>,
}

fn target(name: &'static str, addr: SocketAddr, process: Option<u32>, rt: &Runtime) -> Target {
    let clients = (0..CHANNELS)
        .map(|_| {
            let channel = rt
                .block_on(
                    Endpoint::from_shared(format!("http://{addr}"))
                        .expect("an endpoint")
                        .tcp_nodelay(true)
                        .connect(),
                )
                .unwrap_or_else(|e| panic!("{name}: cannot connect to {addr}: {e}"));
            HealthClient::new(channel)
        })
        .collect();
    Target {
        name,
        clients,
        process,
    }
}

/// `calls` calls, `concurrency` at a time over the target's channels (over
/// its first channel only for one at a time): the time they took and their
/// latencies. Fails the bench if any call does not return `SERVING` within
/// the deadline.
fn closed_loop(
    rt: &Runtime,
    t: &Target,
    concurrency: usize,
    calls: u64,
) -> (Duration, Arc<LatencyHistogram>) {
    let latency = Arc::new(LatencyHistogram::new());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let mut client = t.clients[i % t.clients.len()].clone();
                let (latency, next, name) = (Arc::clone(&latency), Arc::clone(&next), t.name);
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < calls {
                        let sent = Instant::now();
                        let request = Request::new(HealthCheckRequest::default());
                        let answer =
                            match tokio::time::timeout(DEADLINE, client.check(request)).await {
                                Ok(Ok(answer)) => answer,
                                Ok(Err(status)) => panic!("{name}: {status}"),
                                Err(_) => panic!("{name}: no answer within {DEADLINE:?}"),
                            };
                        assert_eq!(answer.into_inner().status, 1, "{name}: not SERVING");
                        latency.record(sent.elapsed());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a load task");
        }
    });
    (started.elapsed(), latency)
}

/// What the table gathers of one target.
#[derive(Default)]
struct Row {
    throughput: Vec<f64>,
    cpu: Duration,
    calls: u64,
    saturated: LatencyHistogram,
    sequential: LatencyHistogram,
}

/// Runs the comparison: direct, then each proxy of `proxies` (its process
/// and the target's name) on its `grpc` route.
pub(super) fn comparison(
    c: &mut Criterion,
    client_rt: &Runtime,
    upstream: SocketAddr,
    proxies: [(&ChildProxy, &'static str); 2],
) {
    let mut targets = vec![target("direct", upstream, None, client_rt)];
    for (proxy, name) in proxies {
        targets.push(target(name, proxy.addr, Some(proxy.child.id()), client_rt));
    }
    // Warm every channel and check every target answers.
    for t in &targets {
        closed_loop(client_rt, t, CONCURRENCY, 2_000);
    }

    let mut group = c.benchmark_group("proxy_grpc");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for t in &targets {
        group.bench_function(t.name, |b| {
            b.iter_custom(|iters| closed_loop(client_rt, t, CONCURRENCY, iters).0)
        });
    }
    group.finish();

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\ngRPC unary calls on loopback, targets interleaved (load average before: {})\n",
        load.trim()
    );
    let mut rows: Vec<Row> = targets.iter().map(|_| Row::default()).collect();
    for _ in 0..ROUNDS {
        for (t, row) in targets.iter().zip(&mut rows) {
            let before = t.process.map(process_cpu);
            let (elapsed, latency) = closed_loop(client_rt, t, CONCURRENCY, CALLS);
            if let (Some(pid), Some(before)) = (t.process, before) {
                row.cpu += process_cpu(pid).saturating_sub(before);
            }
            row.calls += CALLS;
            row.throughput.push(CALLS as f64 / elapsed.as_secs_f64());
            row.saturated.merge(&latency);
            settle();
        }
    }
    for _ in 0..TURNS {
        for (t, row) in targets.iter().zip(&mut rows) {
            closed_loop(client_rt, t, 1, WARM_UP);
            let (_, latency) = closed_loop(client_rt, t, 1, PER_TURN);
            row.sequential.merge(&latency);
            settle();
        }
    }
    println!(
        "| target | calls/s at {CONCURRENCY} concurrent | share of direct | p50 | p99 | proxy CPU per call | one at a time: p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let p99 = |h: &LatencyHistogram| h.percentile(0.99);
    let direct_rate = median(&rows[0].throughput);
    for (i, (t, row)) in targets.iter().zip(&rows).enumerate() {
        let with_added = |h: &LatencyHistogram, base: &LatencyHistogram| {
            if i == 0 {
                us(p99(h))
            } else {
                let added = p99(h).as_secs_f64() - p99(base).as_secs_f64();
                format!("{} ({:+.0} µs)", us(p99(h)), added * 1e6)
            }
        };
        let cpu = match t.process {
            Some(_) => format!(
                "{:.1} µs",
                row.cpu.as_secs_f64() * 1e6 / row.calls.max(1) as f64
            ),
            None => "–".to_string(),
        };
        let rate = median(&row.throughput);
        println!(
            "| {} | {:.0} | {:.0} % | {} | {} | {} | {} | {} |",
            t.name,
            rate,
            rate / direct_rate * 100.0,
            us(row.saturated.percentile(0.5)),
            with_added(&row.saturated, &rows[0].saturated),
            cpu,
            us(row.sequential.percentile(0.5)),
            with_added(&row.sequential, &rows[0].sequential),
        );
    }
    println!(
        "\n(calls/s: median of {ROUNDS} closed-loop rounds of {CALLS} calls, {CONCURRENCY} at a time \
         over {CHANNELS} channels; proxy CPU: user + system time of the proxy's process over those \
         rounds, per call; one at a time: {TURNS} turns of {PER_TURN} calls on one channel)\n"
    );
}
