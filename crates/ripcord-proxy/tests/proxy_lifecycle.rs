//! The proxy's lifecycle: the real `ripcord proxy` binary draining on SIGTERM
//! and reloading on SIGHUP, in-process reloads that keep breaker state, and
//! two proxies sharing their breakers through one Redis store.

mod proxy_support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proxy_support::{base, client, eventually, get, one_route, start, unique, Upstream};
use ripcord::State;
use ripcord_cli::proxy::config::ProxyConfig;

/// A running `ripcord proxy` child process and the lines it prints.
struct Binary {
    child: Child,
    lines: mpsc::Receiver<String>,
    errors: mpsc::Receiver<String>,
    dir: PathBuf,
}

impl Binary {
    fn start(toml: &str) -> (Binary, String) {
        let dir = std::env::temp_dir().join(format!("ripcord-proxy-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ripcord.toml"), toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ripcord"))
            .args(["proxy", "--config"])
            .arg(dir.join("ripcord.toml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let (tx, errors) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut b = Binary {
            child,
            lines,
            errors,
            dir,
        };
        let line = b.wait_line("listening on http://", Duration::from_secs(20));
        let addr = line.rsplit("http://").next().unwrap().trim().to_string();
        (b, format!("http://{addr}"))
    }

    fn wait_line(&mut self, needle: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => {
                    let errors: Vec<String> = self.errors.try_iter().collect();
                    panic!("no line with {needle:?} within {within:?}; stderr: {errors:?}");
                }
            }
        }
    }

    fn wait_error(&mut self, needle: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.errors.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("no stderr line with {needle:?} within {within:?}"),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    fn rewrite(&self, toml: &str) {
        std::fs::write(self.dir.join("ripcord.toml"), toml).unwrap();
    }

    /// Waits for the process to exit; kills it after `within`.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("the proxy did not exit within {within:?}");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One route `app` with a breaker that trips on two failures, plus `extra`.
fn app_route(upstream: &Upstream, extra: &str) -> String {
    let breaker = r#"pipeline.circuit_breaker = { consecutive_failures = 2, open_for = "60s" }"#;
    one_route(upstream, "", "app", &format!("{breaker}\n{extra}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_then_exits() {
    let up = Upstream::start().await;
    let (mut proxy, url) = Binary::start(&app_route(&up, ""));
    let c = client();
    let slow = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &format!("{url}/slow/1000")).await }
    });
    assert!(
        eventually(Duration::from_secs(5), || up.hits() == 1).await,
        "the slow request reached the upstream"
    );
    proxy.signal("TERM");
    proxy.wait_line("draining in-flight requests", Duration::from_secs(5));
    // While draining, new connections are refused.
    let addr = url.trim_start_matches("http://").to_string();
    assert!(
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(
            &addr
        )
        .is_err())
        .await,
        "the listener is closed while draining"
    );
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished");
    assert_eq!(r.body, "slow done");
    let code = tokio::task::spawn_blocking(move || {
        let code = proxy.wait_exit(Duration::from_secs(10));
        (code, proxy.wait_line("stopped", Duration::from_secs(1)))
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0));
    assert_eq!(code.1, "ripcord proxy: stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_keeps_an_open_breaker_open_and_adds_a_route() {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let (mut proxy, url) = Binary::start(&app_route(&up, ""));
    let c = client();
    up.set_status(500);
    for _ in 0..2 {
        assert_eq!(get(&c, &format!("{url}/a")).await.status, 500);
    }
    let r = get(&c, &format!("{url}/a")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-ripcord-policy"), Some("circuit_breaker"));
    up.set_status(200);

    let extra = format!(
        "[upstreams.other]\naddresses = [\"{}\"]\n[[routes]]\nname = \"extra\"\npath_prefix = \"/extra\"\nupstream = \"other\"\n",
        other.addr
    );
    proxy.rewrite(&app_route(&up, &extra));
    proxy.signal("HUP");
    let line = proxy.wait_line("reloaded", Duration::from_secs(5));
    assert!(line.contains("breakers kept: app"), "{line}");
    let r = get(&c, &format!("{url}/extra/1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, format!("upstream {}", other.addr.port()));
    let r = get(&c, &format!("{url}/a")).await;
    assert_eq!(r.status, 503, "the breaker stayed open across the reload");
    assert_eq!(r.header("x-ripcord-policy"), Some("circuit_breaker"));

    // A broken file is refused and the running configuration stays.
    proxy.rewrite("[[listeners]]\nlisten = \n");
    proxy.signal("HUP");
    let e = proxy.wait_error("reload refused", Duration::from_secs(5));
    assert!(e.contains("ripcord.toml:2:"), "{e}");
    assert_eq!(get(&c, &format!("{url}/extra/2")).await.status, 200);

    proxy.signal("TERM");
    let code = tokio::task::spawn_blocking(move || proxy.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

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
