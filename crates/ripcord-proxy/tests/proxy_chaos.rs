//! Drills on a running proxy: a route's `fault` table, and drills started,
//! changed and stopped through the admin API, against a real upstream on
//! loopback.

mod proxy_support;
#[path = "common/raw_http.rs"]
mod raw_http;

use std::time::{Duration, Instant};

use proxy_support::{base, client, get, start, Upstream};
use raw_http::request;
use ripcord_proxy::server::RunningProxy;

const TOKEN: &str = "drill-token-0123456789";

fn config(up: &Upstream, route: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.app]
addresses = ["{addr}"]

[[routes]]
name = "app"
path_prefix = "/"
upstream = "app"
{route}
"#,
        addr = up.addr
    )
}

async fn put_fault(
    proxy: &RunningProxy,
    route: &str,
    body: &str,
    token: Option<&str>,
) -> raw_http::Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    request(
        proxy.admin_addr(),
        "PUT",
        &format!("/api/faults/{route}"),
        &headers,
        body.as_bytes(),
    )
    .await
}

/// `DELETE /api/faults/app`, with the token if given.
async fn delete_fault(proxy: &RunningProxy, token: Option<&str>) -> raw_http::Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request(
        proxy.admin_addr(),
        "DELETE",
        "/api/faults/app",
        &headers,
        b"",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_fault_table_answers_for_the_upstream() {
    let up = Upstream::start().await;
    let proxy = start(&config(
        &up,
        "fault = { abort_rate = 1.0, abort_status = 429 }",
    ))
    .await;
    let c = client();
    for _ in 0..5 {
        let r = get(&c, &format!("{}/x", base(&proxy))).await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.header("x-ripcord-policy"), Some("chaos"));
        assert!(r.body.contains("drill on route `app`"), "{}", r.body);
    }
    assert_eq!(
        up.hits(),
        0,
        "an aborted request never reaches the upstream"
    );
    let list = raw_http::get(proxy.admin_addr(), "/api/faults").await;
    let list = list.json();
    assert_eq!(list[0]["route"], "app");
    assert_eq!(list[0]["active"], true);
    assert_eq!(list[0]["injected"], 5);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_started_through_the_admin_api_runs_until_its_expiry() {
    let up = Upstream::start().await;
    let proxy = start(&config(&up, "")).await;
    let c = client();
    let url = format!("{}/x", base(&proxy));
    assert_eq!(get(&c, &url).await.status, 200);
    let drill = r#"{"abort_rate": 1.0, "abort_status": 418, "expires_after": "1s"}"#;

    // No token, a wrong one: refused, nothing changes.
    let r = put_fault(&proxy, "app", drill, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = put_fault(&proxy, "app", drill, Some("wrong")).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(get(&c, &url).await.status, 200);

    // Bad drills: said what is wrong.
    let r = put_fault(&proxy, "app", r#"{"abort_rate": 1.0}"#, Some(TOKEN)).await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("expires_after"), "{}", r.body);
    let r = put_fault(
        &proxy,
        "app",
        r#"{"abort_rate": 3, "expires_after": "1s"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("abort_rate"), "{}", r.body);
    let r = put_fault(&proxy, "app", "not json", Some(TOKEN)).await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("fault table"), "{}", r.body);
    let r = put_fault(&proxy, "nope", drill, Some(TOKEN)).await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Started: every request answered 418, none reaches the upstream.
    let hits = up.hits();
    let started = Instant::now();
    let r = put_fault(&proxy, "app", drill, Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["active"], true);
    assert!(r.json()["expires_in_ms"]
        .as_u64()
        .is_some_and(|ms| ms <= 1000));
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(700) {
        let r = get(&c, &url).await;
        if r.status == 418 {
            answered += 1;
        } else {
            // Only possible once the expiry passed on a slow machine.
            assert!(started.elapsed() >= Duration::from_secs(1), "{}", r.status);
        }
    }
    assert!(answered > 0);
    assert_eq!(
        up.hits(),
        hits,
        "no request reached the upstream during the drill"
    );

    // It stops by itself, not before its expiry.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&c, &url).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 418);
        assert!(Instant::now() < end, "the drill did not lapse");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    let view = raw_http::get(proxy.admin_addr(), "/api/faults/app")
        .await
        .json();
    assert_eq!(view["active"], false, "{view}");

    // Changed and stopped by hand.
    let r = put_fault(
        &proxy,
        "app",
        r#"{"error_rate": 1.0, "expires_after": "10m"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(&c, &url).await.status, 500);
    let r = delete_fault(&proxy, None).await;
    assert_eq!(r.status, 401);
    let r = delete_fault(&proxy, Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["active"], false);
    assert_eq!(get(&c, &url).await.status, 200);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_breaker_trips_on_a_drill_and_closes_after_it() {
    let up = Upstream::start().await;
    let proxy = start(&config(
        &up,
        "pipeline = { circuit_breaker = { consecutive_failures = 3, open_for = \"300ms\" } }",
    ))
    .await;
    let c = client();
    let url = format!("{}/x", base(&proxy));
    let r = put_fault(
        &proxy,
        "app",
        r#"{"abort_rate": 1.0, "expires_after": "10m"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let policies: Vec<String> = policies_of(&c, &url, 5).await;
    // Three injected failures, then the breaker answers.
    assert_eq!(policies[..3], ["chaos", "chaos", "chaos"], "{policies:?}");
    assert_eq!(
        policies[3..],
        ["circuit_breaker", "circuit_breaker"],
        "{policies:?}"
    );

    let r = delete_fault(&proxy, Some(TOKEN)).await;
    assert_eq!(r.status, 200);
    // After its open time, a probe reaches the healthy upstream and closes it.
    let end = Instant::now() + Duration::from_secs(10);
    let (closed, last) = loop {
        let status = get(&c, &url).await.status;
        if status == 200 || Instant::now() > end {
            break (status == 200, status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(closed, "still {last}");
    proxy.shutdown(Duration::from_secs(5)).await;
}

/// The `x-ripcord-policy` of `n` requests to `url`, one after another.
async fn policies_of(c: &proxy_support::TestClient, url: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = get(c, url).await;
        out.push(r.header("x-ripcord-policy").unwrap_or("none").to_string());
    }
    out
}

/// Polls `url` until it answers `status`, within a bound ten times what a
/// healthy run needs (the proxies read the store's faults every second).
async fn answers(c: &proxy_support::TestClient, url: &str, status: u16) -> bool {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if get(c, url).await.status == status {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_fault_reaches_every_proxy_sharing_the_store_and_lapses() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let prefix = format!("ripcord-test-fleet-fault-{}", proxy_support::unique());
    let up = Upstream::start().await;
    let head = format!("store = \"{url}\"\nstore_prefix = \"{prefix}\"\n");
    let a = start(&format!("{head}{}", config(&up, ""))).await;
    let b = start(&format!("{head}{}", config(&up, ""))).await;
    let c = client();
    let (ua, ub) = (format!("{}/x", base(&a)), format!("{}/x", base(&b)));
    assert_eq!(get(&c, &ua).await.status, 200);
    assert_eq!(get(&c, &ub).await.status, 200);

    let store = ripcord_redis::RedisStore::builder(&url)
        .key_prefix(&prefix)
        .pubsub(false)
        .build()
        .await
        .expect("the test's store");
    let drill = ripcord::ChaosConfig {
        abort_rate: 1.0,
        abort_status: Some(418),
        ..ripcord::ChaosConfig::default()
    };
    store
        .set_fault("app", &drill, Duration::from_secs(600), "test")
        .await
        .expect("set");
    assert!(
        answers(&c, &ua, 418).await,
        "proxy a never saw the fleet's fault"
    );
    assert!(
        answers(&c, &ub, 418).await,
        "proxy b never saw the fleet's fault"
    );
    let view = raw_http::get(a.admin_addr(), "/api/faults/app")
        .await
        .json();
    assert_eq!(view["active"], true, "{view}");

    // Cleared in the store: stopped everywhere.
    assert!(store.clear_fault("app", "test").await.expect("clear"));
    assert!(answers(&c, &ua, 200).await, "proxy a kept the fault");
    assert!(answers(&c, &ub, 200).await, "proxy b kept the fault");

    // Set for ten seconds (ten times the one-second poll): seen, then it
    // lapses by itself (with no clear).
    store
        .set_fault("app", &drill, Duration::from_secs(10), "test")
        .await
        .expect("set");
    assert!(
        answers(&c, &ua, 418).await,
        "proxy a never saw the second fault"
    );
    assert!(answers(&c, &ua, 200).await, "the fault did not lapse on a");
    assert!(answers(&c, &ub, 200).await, "the fault did not lapse on b");
    let audit = store.fault_audit(10).await.expect("audit");
    assert_eq!(audit.len(), 3, "{audit:?}");
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}
