//! A route's policies are a ripcord pipeline: either file form, any order,
//! the route's pipeline composed around the upstream's, fallbacks with
//! triggers, and policies that wait (a bulkhead's queue).

mod proxy_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use proxy_support::{base, client, eventually, get, one_route, send, start, Upstream};
use ripcord_proxy::config::ProxyConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_timeout_outside_the_retry_bounds_the_whole_request() {
    let up = Upstream::start().await;
    // Each attempt takes 150 ms; the outer 400 ms cut off the third.
    let proxy = start(&one_route(
        &up,
        "",
        "app",
        r#"pipeline = { policy = [
    { kind = "timeout", timeout = "400ms" },
    { kind = "retry", max_attempts = 5, backoff = "10ms" },
    { kind = "timeout", timeout = "100ms" },
] }"#,
    ))
    .await;
    let c = client();
    let started = Instant::now();
    let r = get(&c, &format!("{}/slow/150", base(&proxy))).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.header("x-ripcord-policy"), Some("timeout"));
    // Attempts at about 0, 110, 220 and 330 ms, each cut at 100 ms, the
    // last by the outer deadline: never the five the retry allows.
    let hits = up.hits();
    assert!((1..=4).contains(&hits), "{hits} attempts in {took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_answers_only_on_its_triggers() {
    let up = Upstream::start().await;
    up.set_status(503);
    let proxy = start(&one_route(
        &up,
        "",
        "app",
        r#"pipeline = { fallback = { status = 200, body = "cached", on_rejected = false }, circuit_breaker = { consecutive_failures = 1, open_for = "60s" } }"#,
    ))
    .await;
    let c = client();
    // The upstream's own 503 passes unchanged (it trips the breaker).
    let r = get(&c, &format!("{}/x", base(&proxy))).await;
    assert_eq!((r.status, r.header("x-ripcord-policy")), (503, None));
    // The open breaker's refusal is not a trigger: the proxy's own 503.
    let r = get(&c, &format!("{}/x", base(&proxy))).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-ripcord-policy"), Some("circuit_breaker"));
    assert_eq!(up.hits(), 1);
    proxy.shutdown(Duration::from_secs(1)).await;

    // A timeout is (on_failure): the fallback answers, naming it.
    let proxy = start(&one_route(
        &up,
        "",
        "app",
        r#"pipeline = { fallback = { status = 200, body = "cached", on_rejected = false }, timeout = "50ms" }"#,
    ))
    .await;
    let r = get(&c, &format!("{}/slow/500", base(&proxy))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "cached"));
    assert_eq!(r.header("x-ripcord-policy"), Some("fallback"));
    assert_eq!(r.header("x-ripcord-fallback-for"), Some("timeout"));
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_bulkhead_holds_a_request_until_a_slot_frees() {
    let up = Upstream::start().await;
    let proxy = start(&one_route(
        &up,
        "",
        "app",
        r#"pipeline = { bulkhead = { max_concurrent = 1, max_queued = 1 } }"#,
    ))
    .await;
    let c = client();
    // The slot is held while this body streams (4 chunks 100 ms apart).
    let req = Request::get(format!("{}/stream/4/100", base(&proxy)))
        .body(Full::<Bytes>::default())
        .unwrap();
    let streaming = c.request(req).await.unwrap();
    assert_eq!(streaming.status(), 200);
    // The second waits in the queue (seen in the bulkhead's gauge); a third
    // then finds the queue full.
    let (c2, url) = (c.clone(), format!("{}/queued", base(&proxy)));
    let queued = tokio::spawn(async move { get(&c2, &url).await });
    let metrics = proxy.state().metrics().clone();
    let in_queue = eventually(Duration::from_secs(10), || {
        metrics
            .render()
            .contains("ripcord_bulkhead_queued{name=\"app\"} 1")
    })
    .await;
    assert!(in_queue, "the second request waits in the queue");
    let third = get(&c, &format!("{}/third", base(&proxy))).await;
    assert_eq!(third.status, 503);
    assert_eq!(third.header("x-ripcord-policy"), Some("bulkhead"));
    assert!(
        !queued.is_finished(),
        "the queued request waits for the slot"
    );
    streaming.into_body().collect().await.unwrap();
    let queued = queued.await.unwrap();
    assert_eq!(queued.status, 200, "served once the body ended");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_timeout_replaces_the_upstreams_and_both_breakers_apply() {
    let up = Upstream::start().await;
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.app]
addresses = ["{addr}"]
pipeline = {{ timeout = "50ms", circuit_breaker = {{ consecutive_failures = 2, open_for = "60s" }} }}

[[routes]]
name = "patient"
host = "patient.test"
upstream = "app"
pipeline = {{ timeout = "2s" }}

[[routes]]
name = "hasty"
upstream = "app"
"#,
        addr = up.addr
    );
    let proxy = start(&text).await;
    let c = client();
    let patient = |path: &str| {
        Request::get(format!("{}{path}", base(&proxy)))
            .header("host", "patient.test")
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    // The route's 2 s wins over the upstream's 50 ms.
    let r = send(&c, patient("/slow/200")).await;
    assert_eq!(r.status, 200);
    // The other route has only the upstream's: cut at 50 ms, twice, which
    // trips the upstream's breaker for both routes.
    for _ in 0..2 {
        let r = get(&c, &format!("{}/slow/200", base(&proxy))).await;
        assert_eq!(r.status, 504);
    }
    let r = send(&c, patient("/x")).await;
    assert_eq!(r.status, 503);
    assert!(
        r.body.contains("circuit breaker `app` is open"),
        "{}",
        r.body
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

fn error_of(route_pipeline: &str) -> String {
    let text = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[upstreams.app]
addresses = ["127.0.0.1:3000"]
[[routes]]
name = "r"
upstream = "app"
{route_pipeline}
"#
    );
    ProxyConfig::parse(&text, "p.toml")
        .expect_err("refused")
        .to_string()
}

#[test]
fn list_form_problems_name_the_policy_by_its_place() {
    let e = error_of(
        r#"pipeline = { policy = [ { kind = "timeout", timeout = "1s" }, { kind = "retry", max_attempts = 0 } ] }"#,
    );
    assert!(
        e.contains("`routes[0].pipeline.policy[1].max_attempts`: 0: expected 1 to 1000"),
        "{e}"
    );
    let e = error_of(
        r#"pipeline = { policy = [ { kind = "circuit_breaker" }, { kind = "circuit_breaker" } ] }"#,
    );
    assert!(e.contains("`routes[0].pipeline.policy[1]`"), "{e}");
    assert!(e.contains("a second `circuit_breaker`"), "{e}");
    let e = error_of(
        r#"pipeline = { fallback = { status = 200, on_rejected = false, on_refused = false, on_failure = false } }"#,
    );
    assert!(
        e.contains("`routes[0].pipeline.fallback.on_failure`"),
        "{e}"
    );
}

#[test]
fn an_explicit_order_is_kept_and_summarized() {
    let text = r#"
[[listeners]]
listen = "127.0.0.1:0"
[upstreams.app]
addresses = ["127.0.0.1:3000"]
[[routes]]
name = "r"
upstream = "app"
pipeline = { order = ["timeout", "retry", "circuit_breaker"], timeout = "3s", retry = { max_attempts = 2 } }
"#;
    let c = ProxyConfig::parse(text, "p.toml").unwrap();
    assert!(
        c.summary()
            .contains("r: host * prefix / -> app [timeout 3s, retry x2, circuit_breaker]"),
        "{}",
        c.summary()
    );
}
