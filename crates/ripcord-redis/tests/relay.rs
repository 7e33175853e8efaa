//! The store-fault relay in front of a `redis-server` this test owns, driven
//! with redis-rs and raw sockets over loopback.
//!
//! Time bounds are semantic: a latency must add at least itself per
//! direction, and a pipeline through a 200 ms relay must cost a few
//! latencies, not one latency per chunk (100 chunks each way here, so 20 s
//! serialized against under 1 s queued); the upper bounds are 10× a healthy
//! run.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use redis::aio::MultiplexedConnection;
use redis::RedisResult;
use ripcord_redis::relay::{Relay, CHUNK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(120);
/// Long enough for anything a healthy relay does here.
const PATIENT: Duration = Duration::from_secs(10);

fn upstream(server: &RedisServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port()))
}

async fn client(
    addr: SocketAddr,
    response_timeout: Duration,
) -> RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(PATIENT))
        .set_response_timeout(Some(response_timeout));
    redis::Client::open(format!("redis://{addr}"))?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn ping(c: &mut MultiplexedConnection) -> RedisResult<String> {
    redis::cmd("PING").query_async(c).await
}

/// Whether the peer closed `s` (EOF or reset) within [`PATIENT`].
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(PATIENT, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_goes_through() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let relay = Relay::start(upstream(&server)).expect("start relay");
        assert_eq!(relay.upstream(), upstream(&server));
        assert!(relay.addr().ip().is_loopback());
        let mut c = client(relay.addr(), PATIENT).await.expect("connect");
        assert_eq!(ping(&mut c).await.expect("PING"), "PONG");
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut c)
            .await
            .expect("SET");
        let v: String = redis::cmd("GET")
            .arg("k")
            .query_async(&mut c)
            .await
            .expect("GET");
        assert_eq!(v, "v");
        assert_eq!(relay.connections(), 1);
        // At least PING and +PONG, both ways.
        assert!(relay.bytes_forwarded() >= 14, "{}", relay.bytes_forwarded());
        relay.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_both_directions() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let relay = Relay::start(upstream(&server)).expect("start relay");
        let mut c = client(relay.addr(), PATIENT).await.expect("connect");
        ping(&mut c).await.expect("PING before the latency");
        let latency = Duration::from_millis(200);
        relay.set_latency(latency);
        assert_eq!(relay.latency(), latency);
        for _ in 0..3 {
            let t = Instant::now();
            ping(&mut c).await.expect("PING");
            let rtt = t.elapsed();
            println!("round trip with {latency:?} each way: {rtt:?}");
            assert!(rtt >= 2 * latency, "{rtt:?}");
            assert!(rtt < 20 * latency, "{rtt:?}");
        }
        relay.heal();
        assert_eq!(relay.latency(), Duration::ZERO);
        let t = Instant::now();
        ping(&mut c).await.expect("PING after heal");
        assert!(t.elapsed() < 2 * latency, "{:?}", t.elapsed());
        relay.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_costs_a_few_latencies_not_one_per_chunk() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let relay = Relay::start(upstream(&server)).expect("start relay");
        let mut c = client(relay.addr(), Duration::from_secs(60))
            .await
            .expect("connect");
        let latency = Duration::from_millis(200);
        relay.set_latency(latency);
        // 100 values of one chunk each: at least 100 chunks up (the SETs)
        // and 100 down (the GETs' replies).
        let value = |i: usize| vec![b'a' + (i % 26) as u8; CHUNK];
        let mut sets = redis::pipe();
        for i in 0..100 {
            sets.cmd("SET").arg(format!("k{i}")).arg(value(i)).ignore();
        }
        let t = Instant::now();
        let _: () = sets.query_async(&mut c).await.expect("100 SETs");
        let up = t.elapsed();
        let mut gets = redis::pipe();
        for i in 0..100 {
            gets.cmd("GET").arg(format!("k{i}"));
        }
        let t = Instant::now();
        let values: Vec<Vec<u8>> = gets.query_async(&mut c).await.expect("100 GETs");
        let down = t.elapsed();
        println!("100 SETs: {up:?}, 100 GETs: {down:?} with {latency:?} each way");
        assert_eq!(values.len(), 100);
        for (i, v) in values.iter().enumerate() {
            assert!(v == &value(i), "value {i} came back wrong");
        }
        for d in [up, down] {
            assert!(d >= 2 * latency, "{d:?}");
            // One latency per chunk would be 20 s.
            assert!(d < 20 * latency, "{d:?}");
        }
        assert!(relay.bytes_forwarded() >= 200 * CHUNK as u64);
        relay.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_is_a_partition_until_healed() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let relay = Relay::start(upstream(&server)).expect("start relay");
        let timeout = Duration::from_millis(500);
        let mut c = client(relay.addr(), timeout).await.expect("connect");
        ping(&mut c).await.expect("PING before dropping");
        relay.set_dropping(true);
        assert!(relay.is_dropping());
        let before = relay.bytes_forwarded();
        let t = Instant::now();
        let err = ping(&mut c).await.expect_err("PING through a blackhole");
        assert!(err.is_timeout(), "{err}");
        assert!(t.elapsed() >= timeout, "{:?}", t.elapsed());
        // Open, but nothing got through.
        assert_eq!(relay.connections(), 1);
        assert_eq!(relay.bytes_forwarded(), before);
        relay.heal();
        assert!(!relay.is_dropping());
        let mut fresh = client(relay.addr(), PATIENT).await.expect("reconnect");
        assert_eq!(ping(&mut fresh).await.expect("PING after heal"), "PONG");
        relay.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_resets_open_connections_and_accepts_new_ones() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let relay = Relay::start(upstream(&server)).expect("start relay");
        let mut c = client(relay.addr(), PATIENT).await.expect("connect");
        ping(&mut c).await.expect("PING before the cut");
        let mut raw = TcpStream::connect(relay.addr()).await.expect("raw connect");
        raw.write_all(b"PING\r\n").await.expect("raw PING");
        let mut pong = [0u8; 7];
        raw.read_exact(&mut pong).await.expect("raw PONG");
        assert_eq!(&pong, b"+PONG\r\n");
        assert!(eventually(PATIENT, || relay.connections() == 2).await);

        relay.cut();
        assert!(closed(&mut raw).await, "the raw connection stayed open");
        let err = ping(&mut c).await.expect_err("PING on a cut connection");
        // Reset, not stalled: the error comes before the response timeout.
        assert!(!err.is_timeout(), "{err}");
        assert!(
            eventually(PATIENT, || relay.connections() == 0).await,
            "{} connections left",
            relay.connections()
        );

        let mut fresh = client(relay.addr(), PATIENT).await.expect("reconnect");
        assert_eq!(ping(&mut fresh).await.expect("PING after the cut"), "PONG");
        assert_eq!(relay.connections(), 1);
        relay.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_closes_new_connections_and_keeps_open_ones() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let relay = Relay::start(upstream(&server)).expect("start relay");
        let mut kept = client(relay.addr(), PATIENT).await.expect("connect");
        ping(&mut kept).await.expect("PING");
        relay.set_refusing(true);
        assert!(relay.is_refusing());

        let mut raw = TcpStream::connect(relay.addr()).await.expect("TCP accept");
        assert!(closed(&mut raw).await, "a refused connection stayed open");
        let refused = async {
            let mut c = client(relay.addr(), Duration::from_secs(2)).await?;
            ping(&mut c).await
        };
        assert!(refused.await.is_err(), "a redis client got through");
        assert_eq!(ping(&mut kept).await.expect("PING on the kept one"), "PONG");
        assert_eq!(relay.connections(), 1);

        relay.heal();
        assert!(!relay.is_refusing());
        let mut fresh = client(relay.addr(), PATIENT).await.expect("reconnect");
        assert_eq!(ping(&mut fresh).await.expect("PING after heal"), "PONG");
        relay.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_connection_and_task() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let relay = Relay::start(upstream(&server)).expect("start relay");
        let steer = relay.clone();
        let mut raws = Vec::new();
        for _ in 0..3 {
            let mut s = TcpStream::connect(relay.addr()).await.expect("connect");
            s.write_all(b"PING\r\n").await.expect("PING");
            let mut pong = [0u8; 7];
            s.read_exact(&mut pong).await.expect("PONG");
            raws.push(s);
        }
        // One with bytes still queued behind a latency.
        steer.set_latency(Duration::from_secs(30));
        raws[0].write_all(b"PING\r\n").await.expect("PING");
        assert_eq!(relay.connections(), 3);

        relay.shutdown().await;
        // Every connection task has ended when shutdown returns.
        assert_eq!(relay.connections(), 0);
        assert_eq!(steer.connections(), 0);
        for s in &mut raws {
            assert!(closed(s).await, "a connection outlived the relay");
        }
        relay.shutdown().await; // idempotent
        let after = TcpStream::connect(relay.addr()).await;
        if let Ok(mut s) = after {
            assert!(closed(&mut s).await, "the relay still relays");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_stops_the_relay() {
    bounded(LIMIT, async {
        let server = RedisServer::spawn();
        let relay = Relay::start(upstream(&server)).expect("start relay");
        let addr = relay.addr();
        let clone = relay.clone();
        let mut c = client(addr, PATIENT).await.expect("connect");
        ping(&mut c).await.expect("PING");
        let mut raw = TcpStream::connect(addr).await.expect("raw connect");
        assert!(eventually(PATIENT, || relay.connections() == 2).await);
        drop(relay);
        // Still running while a handle is left.
        assert_eq!(ping(&mut c).await.expect("PING via the clone"), "PONG");
        assert_eq!(clone.connections(), 2);
        drop(clone);
        assert!(closed(&mut raw).await, "a connection outlived the relay");
        assert!(ping(&mut c).await.is_err(), "PING through a dropped relay");
    })
    .await;
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let err = Relay::start(SocketAddr::from(([127, 0, 0, 1], 1))).expect_err("no runtime");
    assert!(err.to_string().contains("Tokio runtime"), "{err}");
}
