//! The proxy's lifecycle: in-process reloads that keep breaker state, and two
//! proxies sharing their breakers through one Redis store. (The `ripcord
//! proxy` binary draining on SIGTERM and reloading on SIGHUP is tested in
//! ripcord-cli's `tests/proxy_command.rs`.)

mod proxy_support;

use std::time::Duration;

use proxy_support::{base, client, eventually, get, one_route, start, unique, Upstream};
use ripcord::State;
use ripcord_proxy::config::ProxyConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reuses_unchanged_breakers_and_rebuilds_changed_ones() {
    let up = Upstream::start().await;
    let text = format!(
        r#"
admin.listen = "127.0.0.1:0"
[[listeners]]
listen = "127.0.0.1:0"
[upstreams.app]
addresses = ["{}"]
pipeline.circuit_breaker = {{ consecutive_failures = 2, open_for = "60s" }}
[[routes]]
name = "a"
path_prefix = "/a"
upstream = "app"
pipeline.circuit_breaker = {{ consecutive_failures = 2, open_for = "60s" }}
[[routes]]
name = "b"
path_prefix = "/b"
upstream = "app"
pipeline.circuit_breaker = {{ consecutive_failures = 2, open_for = "60s" }}
"#,
        up.addr
    );
    let proxy = start(&text).await;
    let a = proxy.breaker("a").unwrap();
    a.force_open();
    let b = proxy.breaker("b").unwrap();
    let changed = text.replacen(
        "name = \"b\"\npath_prefix = \"/b\"\nupstream = \"app\"\npipeline.circuit_breaker = { consecutive_failures = 2,",
        "name = \"b\"\npath_prefix = \"/b\"\nupstream = \"app\"\npipeline.circuit_breaker = { consecutive_failures = 3,",
        1,
    );
    assert_ne!(changed, text);
    let changed = changed.replace(
        "[[routes]]\nname = \"b\"",
        "[[routes]]\nname = \"c\"\npath_prefix = \"/c\"\nupstream = \"app\"\n[[routes]]\nname = \"b\"",
    );
    let summary = proxy
        .reload(ProxyConfig::parse(&changed, "changed.toml").unwrap())
        .await
        .unwrap();
    assert_eq!(summary.kept_breakers, ["app", "a"]);
    assert_eq!(summary.new_breakers, ["b"]);
    assert!(summary.restart_needed.is_empty());
    assert!(proxy.breaker("a").unwrap().same_as(&a), "same object kept");
    assert_eq!(proxy.breaker("a").unwrap().state(), State::ForcedOpen);
    assert!(!proxy.breaker("b").unwrap().same_as(&b));
    let names: Vec<String> = proxy
        .state()
        .breakers()
        .iter()
        .map(|e| format!("{}={}", e.scope, e.breaker.name()))
        .collect();
    assert_eq!(names, ["upstream:app=app", "route:a=a", "route:b=b"]);
    // The metrics follow the table: one series per breaker in force.
    let text = proxy.metrics().render();
    let series = |name: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "ripcord_breaker_state{{name=\"{name}\",state=\"closed\"}}"
                ))
            })
            .count()
    };
    assert_eq!(
        (series("app"), series("a"), series("b")),
        (1, 1, 1),
        "{text}"
    );
    let c = client();
    assert_eq!(get(&c, &format!("{}/a", base(&proxy))).await.status, 503);
    assert_eq!(get(&c, &format!("{}/c", base(&proxy))).await.status, 200);
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// A proxy configuration on the test's Redis (`REDIS_URL`) under a fresh key
/// prefix, with one route `name` to `up` carrying `pipeline`.
fn shared_store_config(up: &Upstream, name: &str, pipeline: &str) -> String {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("ripcord-proxy-test-{}", unique());
    let head = format!("store = \"{url}\"\nstore_prefix = \"{prefix}\"");
    one_route(up, &head, name, pipeline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_sharing_a_redis_store_trip_together() {
    let up = Upstream::start().await;
    up.set_status(500);
    let text = shared_store_config(
        &up,
        "shared",
        r#"pipeline.circuit_breaker = { consecutive_failures = 3, open_for = "30s" }"#,
    );
    let one = start(&text).await;
    let two = start(&text).await;
    assert!(one.state().fleet().is_some());
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, &format!("{}/x", base(&one))).await.status, 500);
    }
    assert_eq!(one.breaker("shared").unwrap().state(), State::Open);
    let b2 = two.breaker("shared").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || b2.state() == State::Open).await,
        "instance 2 learned of the trip; it is {}",
        b2.state()
    );
    let hits = up.hits();
    let r = get(&c, &format!("{}/x", base(&two))).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-ripcord-policy"), Some("circuit_breaker"));
    assert_eq!(up.hits(), hits, "instance 2 did not call the upstream");
    one.shutdown(Duration::from_secs(1)).await;
    two.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_sharing_a_redis_store_share_a_rate_limit() {
    let up = Upstream::start().await;
    let text = shared_store_config(
        &up,
        "limited",
        r#"pipeline.rate_limiter = { rate = 3, period = "60s" }"#,
    );
    let one = start(&text).await;
    let two = start(&text).await;
    let c = client();
    assert_eq!(get(&c, &format!("{}/1", base(&one))).await.status, 200);
    assert_eq!(get(&c, &format!("{}/2", base(&two))).await.status, 200);
    assert_eq!(get(&c, &format!("{}/3", base(&one))).await.status, 200);
    for proxy in [&one, &two] {
        let r = get(&c, &format!("{}/4", base(proxy))).await;
        assert_eq!(r.status, 429, "the fleet used up the three permits");
        assert_eq!(r.header("x-ripcord-policy"), Some("rate_limiter"));
    }
    assert_eq!(up.hits(), 3);
    one.shutdown(Duration::from_secs(1)).await;
    two.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_unchanged_rate_limiters_and_bulkheads() {
    let up = Upstream::start().await;
    let text = |rate: u32| {
        format!(
            r#"
admin.listen = "127.0.0.1:0"
[[listeners]]
listen = "127.0.0.1:0"
[upstreams.app]
addresses = ["{}"]
[[routes]]
name = "r"
upstream = "app"
pipeline = {{ rate_limiter = {{ rate = {rate}, period = "60s" }}, bulkhead = {{ max_concurrent = 4 }} }}
"#,
            up.addr
        )
    };
    let proxy = start(&text(2)).await;
    let c = client();
    assert_eq!(get(&c, &format!("{}/1", base(&proxy))).await.status, 200);
    assert_eq!(get(&c, &format!("{}/2", base(&proxy))).await.status, 200);
    proxy
        .reload(ProxyConfig::parse(&text(2), "same.toml").unwrap())
        .await
        .unwrap();
    let r = get(&c, &format!("{}/3", base(&proxy))).await;
    assert_eq!(
        r.status, 429,
        "the limiter kept its state across the reload"
    );
    // A changed rate is a new limiter, with a full bucket.
    proxy
        .reload(ProxyConfig::parse(&text(3), "changed.toml").unwrap())
        .await
        .unwrap();
    assert_eq!(get(&c, &format!("{}/4", base(&proxy))).await.status, 200);
    proxy.shutdown(Duration::from_secs(1)).await;
}
