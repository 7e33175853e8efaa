//! A real Prometheus server scrapes a running proxy's `/metrics`, and
//! PromQL over its HTTP API answers the two questions an operator asks
//! first: which breakers are open, and how fast calls are being refused.
//!
//! Needs Debian's `prometheus`: `scripts/test.sh` provisions it
//! (`scripts/ensure-prometheus.sh`, as root), and this test runs that script
//! itself when none is found. Without one it fails; it never skips. Set
//! `RIPCORD_PROMETHEUS` to use a specific binary.

mod proxy_support;
#[path = "common/tool.rs"]
mod tool;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proxy_support::{client, get, start, TestClient, Upstream};
use serde_json::Value;

/// A Prometheus server on a free loopback port with its own data
/// directory; killed, and the directory removed, when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    /// Starts `binary`, scraping `target` (`host:port`, path `/metrics`)
    /// every second.
    fn start(binary: &Path, target: &str) -> Prometheus {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("ripcord-prometheus-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: ripcord\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus.yml");
        // A free port: bound by the OS, released for Prometheus to take.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Prometheus { child, dir, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query; the `data.result` array, or `None` while the
    /// server is not up or answers with an error.
    async fn query(&self, c: &TestClient, promql: &str) -> Option<Vec<Value>> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            self.port,
            percent_encode(promql)
        );
        let req = http::Request::get(url)
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .ok()?;
        let answer = tokio::time::timeout(Duration::from_secs(5), c.request(req))
            .await
            .ok()?
            .ok()?;
        if answer.status() != 200 {
            return None;
        }
        let body = http_body_util::BodyExt::collect(answer.into_body())
            .await
            .ok()?
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).ok()?;
        (v["status"] == "success").then(|| v["data"]["result"].as_array().cloned())?
    }

    /// Polls `promql` until `accept` takes its result, for up to `within`;
    /// the accepted result, or a panic with the last one and the server log.
    async fn wait_for(
        &mut self,
        c: &TestClient,
        promql: &str,
        within: Duration,
        accept: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let end = Instant::now() + within;
        let mut last = None;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            if let Some(result) = self.query(c, promql).await {
                if accept(&result) {
                    return result;
                }
                last = Some(result);
            }
            if Instant::now() > end {
                panic!(
                    "`{promql}` did not give the expected answer within {within:?}; \
                     last answer {last:?}\nprometheus log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes everything but unreserved characters, for a query
/// string.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of a one-sample vector result.
fn sample(result: &[Value]) -> Option<f64> {
    match result {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_proxy_and_promql_gives_breaker_state_and_rejection_rate() {
    let Some(binary) = tokio::task::spawn_blocking(|| {
        tool::find_or_install(
            "RIPCORD_PROMETHEUS",
            &["prometheus"],
            "ensure-prometheus.sh",
        )
    })
    .await
    .expect("search for prometheus") else {
        panic!(
            "this test needs a Prometheus server: none was found and \
             scripts/ensure-prometheus.sh could not install one (it needs root and apt-get). \
             Install Debian's `prometheus` (or run scripts/ensure-prometheus.sh as root), \
             or set RIPCORD_PROMETHEUS to a prometheus binary."
        );
    };

    let up = Upstream::start().await;
    let proxy = start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.app]
addresses = ["{addr}"]
pipeline.circuit_breaker = {{ consecutive_failures = 3, open_for = "10m" }}

[[routes]]
name = "api"
upstream = "app"
"#,
        addr = up.addr
    ))
    .await;
    let c = client();
    let base = format!("http://{}", proxy.listen_addrs()[0]);
    let admin = proxy.admin_addr().to_string();
    let breaker = "app";

    // The series exist before any call, so the first scrape sees the
    // breaker closed.
    let exposition = get(&c, &format!("http://{admin}/metrics")).await;
    let closed = format!(r#"ripcord_breaker_state{{name="{breaker}",state="closed"}} 1"#);
    assert!(
        exposition.body.contains(&closed),
        "no `{closed}` in\n{}",
        exposition.body
    );

    let mut prometheus = Prometheus::start(&binary, &admin);
    let state_query = format!(r#"ripcord_breaker_state{{name="{breaker}"}} == 1"#);
    let state_of = |result: &[Value]| -> Option<String> {
        match result {
            [one] => one["metric"]["state"].as_str().map(str::to_string),
            _ => None,
        }
    };
    let result = prometheus
        .wait_for(&c, &state_query, Duration::from_secs(120), |r| {
            state_of(r).is_some()
        })
        .await;
    assert_eq!(state_of(&result).as_deref(), Some("closed"), "{result:?}");

    // Three failures trip the breaker; from then on every call is refused.
    up.set_status(500);
    for _ in 0..3 {
        assert_eq!(get(&c, &format!("{base}/x")).await.status, 500);
    }
    assert_eq!(get(&c, &format!("{base}/x")).await.status, 503);

    // Refused calls keep coming, about 20 a second, while Prometheus is
    // asked.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let stop = stop.clone();
        let c = c.clone();
        let url = format!("{base}/x");
        async move {
            let mut refused = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if get(&c, &url).await.status == 503 {
                    refused += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            refused
        }
    });

    let result = prometheus
        .wait_for(&c, &state_query, Duration::from_secs(120), |r| {
            state_of(r).as_deref() == Some("open")
        })
        .await;
    assert_eq!(result.len(), 1, "exactly one state is 1: {result:?}");

    let rate_query = format!(
        r#"sum(rate(ripcord_calls_total{{policy="circuit_breaker",name="{breaker}",outcome="rejected"}}[10s]))"#
    );
    let result = prometheus
        .wait_for(&c, &rate_query, Duration::from_secs(120), |r| {
            sample(r).is_some_and(|v| v > 0.0)
        })
        .await;
    let rate = sample(&result).expect("one sample");
    // About 20 refusals a second are sent; on a loaded machine fewer. The
    // rate is real (above zero) and not more than what was sent.
    assert!(rate > 0.0 && rate < 100.0, "rejection rate {rate}/s");

    stop.store(true, Ordering::Relaxed);
    let refused = load.await.expect("load task");
    assert!(refused > 0);
    proxy.shutdown(Duration::from_secs(1)).await;
}
