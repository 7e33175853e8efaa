//! The load generator against the flaky upstream, directly (each behaviour
//! seen as it should be), then the proxy under a minute of fixed-rate load
//! while its upstream flaps: every request is answered by the upstream or by a
//! policy with its documented status and header, none lost or hung, and the
//! process's memory and file descriptors stay flat.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Uri;
use ripcord_proxy::config::ProxyConfig;
use ripcord_proxy::loadgen::{self, ErrorKind, FixedRate, LoadClient, POLICY_HEADER};
use ripcord_proxy::server::Proxy;
use ripcord_proxy::upstream::{Behavior, Upstream};

/// The tests of this file measure the process's memory and descriptors: one
/// at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn uri(addr: std::net::SocketAddr, path: &str) -> Uri {
    format!("http://{addr}{path}").parse().expect("a URI")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_sees_every_upstream_behaviour() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let upstream = Upstream::bind(1).await.expect("binding the upstream");
        let target = uri(upstream.addr(), "/hello");

        // Healthy: 200 rps for 1 s, every one answered 200 by the upstream.
        let report =
            loadgen::fixed_rate(FixedRate::new(target.clone(), 200, Duration::from_secs(1)))
                .await
                .expect("a run");
        assert_eq!(report.sent, 200, "{}", report.summary());
        assert_eq!(report.skipped, 0, "{}", report.summary());
        assert_eq!(
            report.by_status.get(&200),
            Some(&200),
            "{}",
            report.summary()
        );
        assert_eq!(
            report.by_policy().get("-"),
            Some(&200),
            "{}",
            report.summary()
        );
        assert_eq!(report.latency.count(), 200);
        assert!(report.latency.percentile(0.5) > Duration::ZERO);
        assert_eq!(upstream.requests(), 200);

        // Failing a share of requests, seeded.
        upstream.set(Behavior::failing(503, 0.5));
        let client = LoadClient::new(target.clone(), false, None).expect("a client");
        let report = loadgen::closed_loop(&client, 8, 400, Duration::from_secs(5)).await;
        let failed = report.by_status.get(&503).copied().unwrap_or(0);
        assert_eq!(report.completed(), 400, "{}", report.summary());
        assert!((140..260).contains(&failed), "{}", report.summary());
        assert_eq!(upstream.failures(), failed);

        // Slow beyond the deadline: deadline errors, no response.
        upstream.set(Behavior::healthy().latency(Duration::from_millis(400)));
        let mut slow = FixedRate::new(target.clone(), 50, Duration::from_millis(200));
        slow.deadline = Duration::from_millis(100);
        let report = loadgen::fixed_rate(slow).await.expect("a run");
        assert_eq!(report.sent, 10, "{}", report.summary());
        assert_eq!(
            report.errors.get(&ErrorKind::Deadline),
            Some(&10),
            "{}",
            report.summary()
        );
        assert_eq!(report.completed(), 0, "{}", report.summary());

        // Closing mid-body: body errors.
        upstream.set(
            Behavior::healthy()
                .payload(vec![b'x'; 64 * 1024])
                .close_mid_body(),
        );
        let report = loadgen::closed_loop(&client, 2, 10, Duration::from_secs(5)).await;
        assert_eq!(
            report.errors.get(&ErrorKind::Body),
            Some(&10),
            "{}",
            report.summary()
        );

        // Streaming: complete bodies, as slow as the chunks.
        upstream.set(
            Behavior::healthy()
                .payload(vec![b'y'; 1000])
                .streaming(5, Duration::from_millis(20)),
        );
        let (parts, len) = client.get().await.expect("a streamed response");
        assert_eq!(parts.status, 200);
        assert_eq!(len, 1000);
        assert!(parts.headers.get("content-length").is_none());
        let report = loadgen::closed_loop(&client, 4, 8, Duration::from_secs(5)).await;
        assert_eq!(report.by_status.get(&200), Some(&8), "{}", report.summary());
        assert!(
            report.latency.percentile(0.5) >= Duration::from_millis(70),
            "{}",
            report.summary()
        );

        // A checker flags wrong answers.
        upstream.set(Behavior::healthy());
        let mut checked = FixedRate::new(target.clone(), 100, Duration::from_millis(300));
        checked.check = Some(std::sync::Arc::new(|parts: &http::response::Parts| {
            if parts.headers.contains_key("x-never-there") {
                Ok(())
            } else {
                Err(format!("{} without x-never-there", parts.status))
            }
        }));
        let report = loadgen::fixed_rate(checked).await.expect("a run");
        assert_eq!(report.wrong, 30, "{}", report.summary());
        assert_eq!(report.wrong_examples.len(), 10);

        // HTTP/2 with prior knowledge.
        let h2 = LoadClient::new(target.clone(), true, None).expect("an HTTP/2 client");
        let report = loadgen::closed_loop(&h2, 4, 100, Duration::from_secs(5)).await;
        assert_eq!(
            report.by_status.get(&200),
            Some(&100),
            "{}",
            report.summary()
        );
        let (parts, _) = h2.get().await.expect("an HTTP/2 response");
        assert_eq!(parts.version, http::Version::HTTP_2);

        // Nothing listening: connect errors.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let report = loadgen::fixed_rate(FixedRate::new(
            uri(closed, "/"),
            20,
            Duration::from_millis(250),
        ))
        .await
        .expect("a run");
        assert_eq!(
            report.errors.get(&ErrorKind::Connect),
            Some(&5),
            "{}",
            report.summary()
        );
    })
    .await
    .expect("the test took longer than its limit");
}

/// The process's resident memory in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a VmRSS line")
}

/// The process's open file descriptors (entries of /proc/self/fd).
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64
}

/// What the upstream does, phase by phase, over and over.
fn flap(phase: u64) -> (&'static str, Behavior) {
    match phase % 4 {
        0 | 2 => (
            "healthy",
            Behavior::healthy().latency(Duration::from_millis(2)),
        ),
        1 => ("failing", Behavior::failing(503, 0.8)),
        _ => (
            "slow",
            Behavior::healthy().latency(Duration::from_millis(800)),
        ),
    }
}

/// Whether a response is one the proxy may give: the upstream's own (200,
/// or its 503, with its `x-upstream` header and no policy header), or a
/// policy's with the documented status and headers.
fn documented(parts: &http::response::Parts) -> Result<(), String> {
    let policy = parts
        .headers
        .get(POLICY_HEADER)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string());
    let from_upstream = parts.headers.get("x-upstream").is_some();
    let retry_after = parts
        .headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let status = parts.status.as_u16();
    match (policy.as_deref(), status) {
        (None, 200 | 503) if from_upstream => Ok(()),
        (Some("circuit_breaker"), 503) if !from_upstream && retry_after.is_some_and(|s| s >= 1) => {
            Ok(())
        }
        (Some("timeout"), 504) if !from_upstream => Ok(()),
        _ => Err(format!(
            "status {status}, policy {policy:?}, from upstream {from_upstream}, retry-after {retry_after:?}"
        )),
    }
}

/// A minute at 300 requests per second through the proxy while the upstream
/// flaps between healthy, failing (80 % 503) and slow (beyond the route's
/// timeout) every 3 s: every request gets a documented answer, none is lost
/// or hangs, and memory and descriptors stay flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_load_with_a_flapping_upstream() {
    let _serial = SERIAL.lock().await;
    const RATE: u32 = 300;
    const DURATION: Duration = Duration::from_secs(60);
    const PHASE: Duration = Duration::from_secs(3);
    tokio::time::timeout(Duration::from_secs(150), async {
        let upstream = Arc::new(Upstream::bind(11).await.expect("binding the upstream"));
        let config = ProxyConfig::parse(
            &format!(
                r#"
[admin]
listen = "127.0.0.1:0"

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.flaky]
addresses = ["{}"]

[[routes]]
name = "load"
path_prefix = "/"
upstream = "flaky"

[routes.pipeline]
timeout = "300ms"
circuit_breaker = {{ failure_rate = 0.5, minimum_calls = 20, window = {{ time = "2s" }}, open_for = "1s", half_open_calls = 3 }}
"#,
                upstream.addr()
            ),
            "load test",
        )
        .expect("a valid configuration");
        let proxy = Proxy::start(config).await.expect("starting the proxy");
        let target = uri(proxy.listen_addrs()[0], "/load");

        // Flap the upstream.
        let flapper = tokio::spawn({
            let upstream = Arc::clone(&upstream);
            async move {
                for phase in 0.. {
                    upstream.set(flap(phase).1);
                    tokio::time::sleep(PHASE).await;
                }
            }
        });
        // Sample memory and descriptors once a second.
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sampler = tokio::spawn({
            let samples = Arc::clone(&samples);
            async move {
                let started = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let s = (started.elapsed(), rss_kib(), open_fds());
                    samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                }
            }
        });

        let mut run = FixedRate::new(target, RATE, DURATION);
        run.deadline = Duration::from_secs(5);
        run.check = Some(Arc::new(documented));
        let report = loadgen::fixed_rate(run).await.expect("a run");
        flapper.abort();
        sampler.abort();
        let summary = report.summary();
        println!("{summary}");

        // Every request sent, answered, and answered as documented.
        let expected = u64::from(RATE) * DURATION.as_secs();
        assert_eq!(report.sent, expected, "{summary}");
        assert_eq!(report.skipped, 0, "{summary}");
        assert_eq!(report.failed(), 0, "lost or hung requests:\n{summary}");
        assert_eq!(report.completed(), expected, "{summary}");
        assert_eq!(report.wrong, 0, "undocumented answers:\n{summary}");
        // Each kind of answer happened: the test saw the breaker work.
        let count = |status: u16, policy: &str| {
            report
                .by_status_and_policy
                .get(&(status, policy.to_string()))
                .copied()
                .unwrap_or(0)
        };
        assert!(count(200, "-") > expected / 4, "{summary}");
        assert!(count(503, "-") > 0, "the upstream's own 503s:\n{summary}");
        assert!(count(503, "circuit_breaker") > 0, "breaker rejections:\n{summary}");
        assert!(count(504, "timeout") > 0, "timeouts:\n{summary}");

        // Memory and descriptors: the second half no higher than the first,
        // within generous bounds (warm-up excluded).
        let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let warm: Vec<_> = samples
            .iter()
            .filter(|(at, _, _)| *at >= Duration::from_secs(5))
            .collect();
        assert!(warm.len() >= 40, "only {} samples", warm.len());
        let (first, second) = warm.split_at(warm.len() / 2);
        let max = |xs: &[&(Duration, u64, u64)], f: fn(&(Duration, u64, u64)) -> u64| {
            xs.iter().map(|x| f(x)).max().unwrap_or(0)
        };
        let (rss1, rss2) = (max(first, |s| s.1), max(second, |s| s.1));
        let (fd1, fd2) = (max(first, |s| s.2), max(second, |s| s.2));
        println!("peak RSS {rss1} KiB then {rss2} KiB; peak fds {fd1} then {fd2}");
        assert!(
            rss2 <= rss1 + rss1 / 2 + 16 * 1024,
            "memory grew: peak {rss1} KiB in the first half, {rss2} KiB in the second"
        );
        assert!(
            fd2 <= fd1 + 64,
            "descriptors grew: peak {fd1} in the first half, {fd2} in the second"
        );

        proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await
    .expect("the load test took longer than its limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_on_reuses_the_clients_open_connections() {
    let _serial = SERIAL.lock().await;
    // An upstream that counts the connections it accepts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let ok = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"ok\n")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), ok)
                    .await;
            });
        }
    });
    let target = uri(addr, "/");
    let client = LoadClient::new(target.clone(), false, None).expect("a client");
    // 100 requests per second: one every 10 ms, so one connection suffices.
    let run = FixedRate::new(target, 100, Duration::from_millis(500));
    let first = loadgen::fixed_rate_on(&client, &run).await.expect("a run");
    assert_eq!(first.by_status.get(&200), Some(&50), "{}", first.summary());
    let opened = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(opened >= 1);
    let second = loadgen::fixed_rate_on(&client, &run).await.expect("a run");
    assert_eq!(
        second.by_status.get(&200),
        Some(&50),
        "{}",
        second.summary()
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        opened,
        "the second run opened connections of its own instead of the client's"
    );
    server.abort();
}
