//! End-to-end forwarding through `Proxy::start` against loopback upstreams:
//! trips, refusals, recovery, timeouts, rate limits, streaming, isolation,
//! proxy headers, oversized heads and upstreams that fail mid-body.

mod proxy_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use proxy_support::{base, client, get, one_route, send, start, Upstream};
use ripcord::State;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(upstream: &Upstream, route_pipeline: &str) -> String {
    one_route(upstream, "", "app", &format!("pipeline = {route_pipeline}"))
}

const BREAKER: &str = r#"{ circuit_breaker = { consecutive_failures = 3, open_for = "300ms", half_open_calls = 1 } }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trips_rejects_probes_and_recovers() {
    let up = Upstream::start().await;
    let proxy = start(&config(&up, BREAKER)).await;
    let c = client();
    let url = format!("{}/work", base(&proxy));

    assert_eq!(get(&c, &url).await.status, 200);
    up.set_status(500);
    for _ in 0..3 {
        let r = get(&c, &url).await;
        assert_eq!(r.status, 500, "the upstream's own 500 passes through");
        assert!(r.header("x-ripcord-policy").is_none());
    }
    assert_eq!(proxy.breaker("app").unwrap().state(), State::Open);
    let hits = up.hits();
    let r = get(&c, &url).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-ripcord-policy"), Some("circuit_breaker"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.body.contains("circuit breaker `app`"), "{}", r.body);
    assert_eq!(
        up.hits(),
        hits,
        "an open breaker does not call the upstream"
    );

    // After the open time, one probe passes; the upstream has recovered.
    up.set_status(200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = get(&c, &url).await;
    assert_eq!(r.status, 200, "the half-open probe reaches the upstream");
    assert_eq!(up.hits(), hits + 1);
    assert_eq!(proxy.breaker("app").unwrap().state(), State::Closed);
    assert_eq!(get(&c, &url).await.status, 200);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_opens_again() {
    let up = Upstream::start().await;
    let proxy = start(&config(&up, BREAKER)).await;
    let c = client();
    let url = format!("{}/x", base(&proxy));
    up.set_status(503);
    for _ in 0..3 {
        get(&c, &url).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&c, &url).await.status, 503, "the probe's own 503");
    let r = get(&c, &url).await;
    assert_eq!(r.header("x-ripcord-policy"), Some("circuit_breaker"));
    assert_eq!(proxy.breaker("app").unwrap().state(), State::Open);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_gets_504_and_counts_as_a_failure() {
    let up = Upstream::start().await;
    let proxy = start(&config(
        &up,
        r#"{ timeout = "100ms", circuit_breaker = { consecutive_failures = 2, open_for = "10s" } }"#,
    ))
    .await;
    let c = client();
    let started = Instant::now();
    let r = get(&c, &format!("{}/slow/2000", base(&proxy))).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.header("x-ripcord-policy"), Some("timeout"));
    // Before the upstream's answer (2000 ms) would have come.
    assert!(started.elapsed() < Duration::from_millis(2000));
    get(&c, &format!("{}/slow/2000", base(&proxy))).await;
    assert_eq!(proxy.breaker("app").unwrap().state(), State::Open);
    assert_eq!(get(&c, &format!("{}/fast", base(&proxy))).await.status, 503);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_answers_429_with_retry_after() {
    let up = Upstream::start().await;
    let proxy = start(&config(
        &up,
        r#"{ rate_limiter = { rate = 2, period = "10s" } }"#,
    ))
    .await;
    let c = client();
    let url = format!("{}/limited", base(&proxy));
    assert_eq!(get(&c, &url).await.status, 200);
    assert_eq!(get(&c, &url).await.status, 200);
    let r = get(&c, &url).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ripcord-policy"), Some("rate_limiter"));
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&wait), "retry-after {wait}");
    assert_eq!(up.hits(), 2);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_gets_502_or_the_fallback() {
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let toml = format!(
        r#"
admin.listen = "127.0.0.1:0"
[[listeners]]
listen = "127.0.0.1:0"
[upstreams.gone]
addresses = ["{addr}"]
[[routes]]
name = "plain"
path_prefix = "/plain"
upstream = "gone"
[[routes]]
name = "kind"
path_prefix = "/kind"
upstream = "gone"
pipeline.fallback = {{ status = 200, body = "{{\"items\": []}}", content_type = "application/json" }}
"#
    );
    let proxy = start(&toml).await;
    let c = client();
    let r = get(&c, &format!("{}/plain", base(&proxy))).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-ripcord-policy"), Some("upstream"));
    assert!(r.body.contains("upstream `gone` is unreachable"));
    let r = get(&c, &format!("{}/kind/list", base(&proxy))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "{\"items\": []}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-ripcord-policy"), Some("fallback"));
    assert_eq!(r.header("x-ripcord-fallback-for"), Some("upstream"));
    let r = get(&c, &format!("{}/elsewhere", base(&proxy))).await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("no route"), "{}", r.body);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_chunks_arrive_before_the_upstream_finishes() {
    let up = Upstream::start().await;
    let proxy = start(&config(&up, BREAKER)).await;
    let c = client();
    // 6 chunks 200 ms apart: the upstream finishes after about 1 s.
    let req = Request::get(format!("{}/stream/6/200", base(&proxy)))
        .body(Full::<Bytes>::default())
        .unwrap();
    let r = c.request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.into_body();
    let first = body.frame().await.unwrap().unwrap();
    let first_at = Instant::now();
    assert_eq!(first.data_ref().unwrap().as_ref(), b"chunk 0\n");
    let mut rest = Vec::new();
    while let Some(f) = body.frame().await {
        rest.extend_from_slice(f.unwrap().data_ref().unwrap());
    }
    let done = up
        .seen
        .stream_done
        .lock()
        .unwrap()
        .expect("the upstream finished");
    assert!(
        done.duration_since(first_at) > Duration::from_millis(500),
        "the first chunk came {:?} before the upstream's end",
        done.duration_since(first_at)
    );
    assert_eq!(String::from_utf8(rest).unwrap().lines().count(), 5);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_body_streams_up() {
    let up = Upstream::start().await;
    let proxy = start(&config(&up, BREAKER)).await;
    let addr = proxy.listen_addrs()[0];
    // 8 MiB sent chunked in 64 KiB pieces over a raw connection.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let piece = vec![b'x'; 64 * 1024];
    for _ in 0..128 {
        s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(&piece).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with(&(8 * 1024 * 1024).to_string()), "{out}");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_routes_failures_do_not_trip_another() {
    let good = Upstream::start().await;
    let bad = Upstream::start().await;
    bad.set_status(500);
    let toml = format!(
        r#"
admin.listen = "127.0.0.1:0"
[[listeners]]
listen = "127.0.0.1:0"
[upstreams.good]
addresses = ["{}"]
[upstreams.bad]
addresses = ["{}"]
[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "good"
pipeline.circuit_breaker = {{ consecutive_failures = 2, open_for = "10s" }}
[[routes]]
name = "payments"
path_prefix = "/payments"
upstream = "bad"
pipeline.circuit_breaker = {{ consecutive_failures = 2, open_for = "10s" }}
"#,
        good.addr, bad.addr
    );
    let proxy = start(&toml).await;
    let c = client();
    for _ in 0..3 {
        get(&c, &format!("{}/payments/1", base(&proxy))).await;
    }
    assert_eq!(proxy.breaker("payments").unwrap().state(), State::Open);
    assert_eq!(
        get(&c, &format!("{}/payments/1", base(&proxy)))
            .await
            .status,
        503
    );
    for _ in 0..5 {
        assert_eq!(
            get(&c, &format!("{}/orders/1", base(&proxy))).await.status,
            200
        );
    }
    assert_eq!(proxy.breaker("orders").unwrap().state(), State::Closed);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_stripped_and_forwarding_headers_added() {
    let up = Upstream::start().await;
    let proxy = start(&config(&up, BREAKER)).await;
    let c = client();
    let req = Request::get(format!("{}/headers", base(&proxy)))
        .header("host", "shop.example")
        .header("connection", "keep-alive, x-secret-hop")
        .header("x-secret-hop", "drop me")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("upgrade", "websocket")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-kept", "yes")
        .body(Full::<Bytes>::default())
        .unwrap();
    let r = send(&c, req).await;
    assert_eq!(r.status, 200);
    let seen: Vec<(String, String)> = r
        .body
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let value = |k: &str| seen.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    for gone in [
        "x-secret-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert_eq!(value(gone), None, "{gone} was forwarded: {}", r.body);
    }
    assert_eq!(value("x-kept"), Some("yes"));
    assert_eq!(value("host"), Some("shop.example"), "Host passes through");
    assert_eq!(value("x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(value("x-forwarded-proto"), Some("http"));
    assert_eq!(value("x-forwarded-host"), Some("shop.example"));
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_gets_431_and_the_proxy_keeps_serving() {
    let up = Upstream::start().await;
    let proxy = start(&format!(
        "[limits]\nmax_header_bytes = 16384\n{}",
        config(&up, BREAKER)
    ))
    .await;
    let addr = proxy.listen_addrs()[0];
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let big = "a".repeat(40 * 1024);
    s.write_all(format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap_or(()); // the proxy may close while we still write
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(up.hits(), 0);
    let c = client();
    assert_eq!(
        get(&c, &format!("{}/after", base(&proxy))).await.status,
        200
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failing_mid_body_aborts_the_response_and_counts() {
    let up = Upstream::start().await;
    let proxy = start(&config(
        &up,
        r#"{ circuit_breaker = { consecutive_failures = 2, open_for = "10s" } }"#,
    ))
    .await;
    let c = client();
    for _ in 0..2 {
        let req = Request::get(format!("{}/abort", base(&proxy)))
            .body(Full::<Bytes>::default())
            .unwrap();
        let r = c.request(req).await.unwrap();
        assert_eq!(r.status(), 200, "the head was sent before the body failed");
        let body = tokio::time::timeout(Duration::from_secs(5), r.into_body().collect())
            .await
            .unwrap();
        assert!(body.is_err(), "the client sees the body fail");
    }
    assert_eq!(proxy.breaker("app").unwrap().state(), State::Open);
    proxy.breaker("app").unwrap().reset();
    assert_eq!(get(&c, &format!("{}/fine", base(&proxy))).await.status, 200);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_bodiless_requests_are_retried_others_are_not() {
    let up = Upstream::start().await;
    up.set_status(503);
    let proxy = start(&config(
        &up,
        r#"{ retry = { max_attempts = 3, backoff = "10ms" } }"#,
    ))
    .await;
    let c = client();
    let r = get(&c, &format!("{}/x", base(&proxy))).await;
    assert_eq!(r.status, 503);
    assert_eq!(up.hits(), 3, "GET: three attempts");
    let post = Request::post(format!("{}/x", base(&proxy)))
        .body(Full::new(Bytes::from_static(b"pay")))
        .unwrap();
    assert_eq!(send(&c, post).await.status, 503);
    assert_eq!(up.hits(), 4, "POST: one attempt");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_are_forwarded() {
    let up = Upstream::start().await;
    let proxy = start(&config(&up, BREAKER)).await;
    let c: proxy_support::TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let r = get(&c, &format!("{}/headers", base(&proxy))).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("host: 127.0.0.1:"), "{}", r.body);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_does_not_wait_for_an_open_breaker() {
    let up = Upstream::start().await;
    up.set_status(503);
    let proxy = start(&config(
        &up,
        r#"{ retry = { max_attempts = 3, backoff = "10ms" }, circuit_breaker = { consecutive_failures = 1, open_for = "60s" } }"#,
    ))
    .await;
    let c = client();
    // The first attempt trips the breaker; the second is refused at once
    // (rather than waiting a minute for the probe): 503 from the breaker.
    let r = get(&c, &format!("{}/x", base(&proxy))).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-ripcord-policy"), Some("circuit_breaker"));
    assert_eq!(up.hits(), 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_exports_the_proxys_breakers() {
    let up = Upstream::start().await;
    let proxy = start(&config(&up, BREAKER)).await;
    let c = client();
    up.set_status(500);
    for _ in 0..3 {
        get(&c, &format!("{}/x", base(&proxy))).await;
    }
    let r = get(&c, &format!("http://{}/metrics", proxy.admin_addr())).await;
    assert_eq!(r.status, 200);
    let open_line = r
        .body
        .lines()
        .find(|l| l.starts_with("ripcord_breaker_state{name=\"app\",state=\"open\"}"));
    assert_eq!(
        open_line.map(|l| l.ends_with(" 1")),
        Some(true),
        "{}",
        r.body
    );
    let r = get(&c, &format!("http://{}/api/breakers", proxy.admin_addr())).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("\"app\""), "{}", r.body);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_by_host_then_longest_prefix_and_upstreams_rotate() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let c_up = Upstream::start().await;
    let toml = format!(
        r#"
admin.listen = "127.0.0.1:0"
[[listeners]]
listen = "127.0.0.1:0"
[upstreams.a]
addresses = ["{}"]
[upstreams.b]
addresses = ["{}"]
[upstreams.pair]
addresses = ["{}", "{}"]
[[routes]]
name = "root"
upstream = "a"
[[routes]]
name = "api"
path_prefix = "/api/"
upstream = "b"
[[routes]]
name = "shop"
host = "Shop.Example"
upstream = "pair"
"#,
        a.addr, b.addr, c_up.addr, a.addr
    );
    let proxy = start(&toml).await;
    let c = client();
    let body = |r: proxy_support::Got| r.body;
    let port = |u: &Upstream| format!("upstream {}", u.addr.port());
    assert_eq!(body(get(&c, &format!("{}/", base(&proxy))).await), port(&a));
    assert_eq!(
        body(get(&c, &format!("{}/apix", base(&proxy))).await),
        port(&a)
    );
    assert_eq!(
        body(get(&c, &format!("{}/api", base(&proxy))).await),
        port(&b)
    );
    assert_eq!(
        body(get(&c, &format!("{}/api/v1?q=1", base(&proxy))).await),
        port(&b)
    );
    let shop = |path: &str| {
        Request::get(format!("{}{path}", base(&proxy)))
            .header("host", "shop.example:8080")
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let first = body(send(&c, shop("/api/x")).await);
    let second = body(send(&c, shop("/api/x")).await);
    let mut got = [first, second];
    got.sort();
    let mut want = [port(&a), port(&c_up)];
    want.sort();
    assert_eq!(
        got, want,
        "the host route wins and its two addresses take turns"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_breaking_off_its_upload_does_not_count_against_the_upstream() {
    let up = Upstream::start().await;
    let proxy = start(&config(
        &up,
        r#"{ circuit_breaker = { consecutive_failures = 2, open_for = "60s" } }"#,
    ))
    .await;
    let addr = proxy.listen_addrs()[0];
    for i in 1..=3 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly half")
            .await
            .unwrap();
        assert!(
            proxy_support::eventually(Duration::from_secs(5), || up.hits() == i).await,
            "the upload reached the upstream"
        );
        drop(s);
    }
    // Give the proxy time to see each broken upload end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let breaker = proxy.breaker("app").unwrap();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.stats().failures(), 0, "{:?}", breaker.stats());
    assert_eq!(
        get(&client(), &format!("{}/ok", base(&proxy))).await.status,
        200
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_ends_the_retries_instead_of_holding_the_client() {
    let up = Upstream::start().await;
    let proxy = start(&config(
        &up,
        r#"{ timeout = "200ms", retry = { max_attempts = 3, backoff = "10ms" } }"#,
    ))
    .await;
    let c = client();
    // 429 asks for no retry before an hour: beyond the retry's budget
    // (3 × 200 ms), so the upstream's answer comes back at once.
    let r = get(&c, &format!("{}/status/429", base(&proxy))).await;
    assert_eq!(r.status, 429);
    assert!(
        r.header("x-ripcord-policy").is_none(),
        "the upstream's own answer"
    );
    assert_eq!(up.hits(), 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bulkhead_answers_503_until_the_streaming_body_ends() {
    let up = Upstream::start().await;
    let proxy = start(&config(&up, r#"{ bulkhead = { max_concurrent = 1 } }"#)).await;
    let c = client();
    // The slot is held while the body streams (5 chunks 150 ms apart).
    let req = Request::get(format!("{}/stream/5/150", base(&proxy)))
        .body(Full::<Bytes>::default())
        .unwrap();
    let streaming = c.request(req).await.unwrap();
    assert_eq!(streaming.status(), 200);
    let r = get(&c, &format!("{}/other", base(&proxy))).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-ripcord-policy"), Some("bulkhead"));
    assert_eq!(r.header("retry-after"), Some("1"));
    // The body's end gives the slot back.
    streaming.into_body().collect().await.unwrap();
    assert_eq!(
        get(&c, &format!("{}/other", base(&proxy))).await.status,
        200
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}
