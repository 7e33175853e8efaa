//! The proxy's front door: connections that send nothing or stall are
//! closed at their deadlines, connections past the caps are refused, and
//! the admin listener keeps answering while the proxy listener is full.
//! Raw sockets on loopback. (The file-descriptor limit, which needs a
//! process of its own, is tested in ripcord-cli's `tests/proxy_command.rs`.)

mod proxy_raw;
mod proxy_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_raw::{config, once, Answer, RawClient, Scripted, ALL};
use proxy_support::start;
use tokio::net::{TcpSocket, TcpStream};

/// What an upstream answers: `ok`.
async fn ok_upstream() -> Scripted {
    Scripted::start(|_| Answer::bytes(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..])).await
}

/// The HTTP/2 connection preface, and nothing after it.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Ten times a healthy close (a one-second deadline, reaped within a
/// second): the bound of every "closed in time" check below.
const CLOSED_WITHIN: Duration = Duration::from_secs(20);

/// Whether every client is closed by the peer within `within` (together).
async fn all_closed(clients: Vec<RawClient>, within: Duration) -> usize {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { c.closed_within(within).await }))
        .collect();
    let mut open = 0;
    for t in tasks {
        if !t.await.unwrap() {
            open += 1;
        }
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_preface_only_connections_are_closed_at_the_header_deadline() {
    let up = ok_upstream().await;
    let proxy = start(&config(up.addr, "header_read_timeout = \"1s\"", ALL)).await;
    let addr = proxy.listen_addrs()[0];
    let mut clients = Vec::new();
    for i in 0..60 {
        let mut c = RawClient::connect(addr).await;
        match i % 3 {
            0 => {}
            1 => c.send(PREFACE).await,
            // A part of the preface: protocol detection never ends.
            _ => c.send(&PREFACE[..10]).await,
        }
        clients.push(c);
    }
    let started = Instant::now();
    assert_eq!(
        all_closed(clients, CLOSED_WITHIN).await,
        0,
        "connections left open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed before the deadline"
    );
    // The proxy serves as before.
    let r = once(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.map(|r| r.status), Some(200));
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h1_and_h2_connections_are_closed_at_the_idle_deadline() {
    let up = ok_upstream().await;
    let proxy = start(&config(up.addr, "idle_timeout = \"1s\"", ALL)).await;
    let addr = proxy.listen_addrs()[0];
    // HTTP/1.1 keep-alive: one request, then nothing.
    let mut h1 = RawClient::connect(addr).await;
    h1.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(h1.response(false).await.map(|r| r.status), Some(200));
    // HTTP/2: one request, then nothing.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let h2 = tokio::spawn(conn);
    let req = Request::get(format!("http://{addr}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    assert!(
        h1.closed_within(CLOSED_WITHIN).await,
        "the idle HTTP/1.1 connection is open"
    );
    let ended = tokio::time::timeout(CLOSED_WITHIN, h2).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection is open");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_is_not_an_idle_connection() {
    let up = proxy_support::Upstream::start().await;
    let proxy = start(&proxy_support::one_route(
        &up,
        "[limits]\nidle_timeout = \"1s\"\nheader_read_timeout = \"1s\"",
        "app",
        "",
    ))
    .await;
    let addr = proxy.listen_addrs()[0];
    // Twelve chunks 250 ms apart: three seconds without a byte from the
    // client.
    let r = once(
        addr,
        b"GET /stream/12/250 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("the whole streaming answer");
    assert_eq!(r.status, 200);
    assert_eq!(r.text().lines().count(), 12, "{}", r.text());
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_cut_at_the_body_deadline() {
    let up = proxy_support::Upstream::start().await;
    let proxy = start(&proxy_support::one_route(
        &up,
        "[limits]\nbody_read_timeout = \"1s\"",
        "app",
        "",
    ))
    .await;
    let addr = proxy.listen_addrs()[0];
    let mut c = RawClient::connect(addr).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten..")
        .await;
    let started = Instant::now();
    let r = tokio::time::timeout(CLOSED_WITHIN, c.response(false))
        .await
        .expect("an answer or a close in time");
    if let Some(r) = r {
        assert!(
            r.status == 400 || r.status == 408,
            "{} {}",
            r.head,
            r.text()
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(500));
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// A connection from `source` (a loopback address) to `addr`.
async fn connect_from(source: &str, addr: SocketAddr) -> RawClient {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    RawClient::from_stream(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_caps_are_closed_and_the_admin_keeps_answering() {
    let up = ok_upstream().await;
    let proxy = start(&config(
        up.addr,
        "max_connections = 20\nmax_connections_per_peer = 12",
        ALL,
    ))
    .await;
    let (addr, admin) = (proxy.listen_addrs()[0], proxy.admin_addr());
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(connect_from("127.0.0.1", addr).await);
    }
    // The peer's cap: its next connection is closed at once.
    let mut over = connect_from("127.0.0.1", addr).await;
    assert!(
        over.closed_within(CLOSED_WITHIN).await,
        "past the per-peer cap"
    );
    // Another peer still gets in, up to the proxy's cap.
    for _ in 0..8 {
        held.push(connect_from("127.0.0.2", addr).await);
    }
    let mut over = connect_from("127.0.0.3", addr).await;
    assert!(
        over.closed_within(CLOSED_WITHIN).await,
        "past the proxy's cap"
    );
    // The admin listener answers meanwhile.
    let r = once(
        admin,
        format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.map(|r| r.status), Some(200));
    // The held connections are served; closing them frees their places.
    let mut first = held.remove(0);
    first.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(first.response(false).await.map(|r| r.status), Some(200));
    drop(held);
    drop(first);
    let end = Instant::now() + CLOSED_WITHIN;
    loop {
        let mut c = connect_from("127.0.0.1", addr).await;
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await;
        if c.response(false).await.is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < end,
            "closed connections did not free their places"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.shutdown(Duration::from_secs(1)).await;
}
