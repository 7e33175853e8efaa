//! The Grafana dashboard in `docs/grafana/ripcord.json`: it parses, and every
//! series its queries use is in a real exposition — the `/metrics` of a proxy
//! whose routes saw successes, failures, retries, timeouts, a trip and
//! refusals.

mod proxy_support;

use std::collections::BTreeSet;
use std::time::Duration;

use proxy_support::{client, get, start, Upstream};

const DASHBOARD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/grafana/ripcord.json"
));

/// Every `ripcord_…` name in a PromQL expression.
fn series_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("ripcord_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    assert_eq!(dashboard["uid"], "ripcord");
    let mut queried = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{} panels", panels.len());
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("an expression");
            let names = series_in(expr);
            assert!(!names.is_empty(), "{expr}");
            queried.extend(names);
        }
    }

    let up = Upstream::start().await;
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.app]
addresses = ["{addr}"]

[[routes]]
name = "api"
upstream = "app"
pipeline = {{ retry = {{ max_attempts = 2, backoff = "5ms" }}, circuit_breaker = {{ consecutive_failures = 4, open_for = "60s" }}, bulkhead = {{ max_concurrent = 8 }}, timeout = "250ms" }}

[[routes]]
name = "quota"
host = "quota.test"
upstream = "app"
pipeline = {{ rate_limiter = {{ rate = 1, period = "60s", burst = 1 }} }}
"#,
        addr = up.addr
    );
    let proxy = start(&text).await;
    let c = client();
    let base = format!("http://{}", proxy.listen_addrs()[0]);
    assert_eq!(get(&c, &format!("{base}/ok")).await.status, 200);
    // A timeout, retried once: two failures.
    assert_eq!(get(&c, &format!("{base}/slow/3000")).await.status, 504);
    // Two more failures trip the breaker; the next call is rejected.
    assert_eq!(get(&c, &format!("{base}/status/500")).await.status, 500);
    assert_eq!(get(&c, &format!("{base}/x")).await.status, 503);
    // The quota route: one permit, then a refusal.
    for expected in [200, 429] {
        let req = http::Request::get(format!("{base}/q"))
            .header("host", "quota.test")
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap();
        assert_eq!(proxy_support::send(&c, req).await.status, expected);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let exposition = get(&c, &format!("http://{}/metrics", proxy.admin_addr())).await;
    assert_eq!(exposition.status, 200);
    let exported: BTreeSet<String> = exposition
        .body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = queried.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "queried by the dashboard but not exported: {missing:?}\n{}",
        exposition.body
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}
