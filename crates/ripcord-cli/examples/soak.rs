//! A long soak of `ripcord proxy` (run by `scripts/soak.sh`, not in CI):
//! the proxy binary, with its breaker and rate limiter shared through its own
//! Redis, under a fixed request rate while the upstream flaps between
//! healthy, failing and slow and the Redis server is stopped and started
//! again twice. At the end: every request answered by the upstream or by a
//! policy (none lost, none hung), and the proxy's resident memory flat.
//!
//! ```text
//! soak PROXY_BINARY REDIS_SERVER_BINARY [SECONDS] [RATE]
//! ```

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ripcord_proxy::loadgen::{self, FixedRate, POLICY_HEADER};
use ripcord_proxy::upstream::{Behavior, Upstream};

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn redis(binary: &str, port: u16) -> Child {
    Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Whether an answer came from the upstream (its `x-upstream` header) or
/// from a policy of the proxy (`x-ripcord-policy`).
fn accounted(parts: &http::response::Parts) -> Result<(), String> {
    let policy = parts.headers.contains_key(POLICY_HEADER);
    let upstream = parts.headers.contains_key("x-upstream");
    if policy != upstream {
        Ok(())
    } else {
        Err(format!(
            "status {} with policy header {policy} and upstream header {upstream}",
            parts.status
        ))
    }
}

fn flap(phase: u64) -> Behavior {
    match phase % 4 {
        0 | 2 => Behavior::healthy().latency(Duration::from_millis(2)),
        1 => Behavior::failing(503, 0.8),
        _ => Behavior::healthy().latency(Duration::from_millis(800)),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (proxy_bin, redis_bin) = (args[1].clone(), args[2].clone());
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(600);
    let rate: u32 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(200);
    let duration = Duration::from_secs(seconds);

    let redis_port = free_port();
    let redis_child = redis(&redis_bin, redis_port);
    let upstream = Arc::new(Upstream::bind(7).await.expect("an upstream"));
    let (listen, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("ripcord-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let config = dir.join("ripcord.toml");
    std::fs::write(
        &config,
        format!(
            r#"store = "redis://127.0.0.1:{redis_port}"
store_prefix = "soak-{pid}"

[admin]
listen = "127.0.0.1:{admin}"

[[listeners]]
listen = "127.0.0.1:{listen}"

[upstreams.flaky]
addresses = ["{up}"]

[[routes]]
name = "soak"
path_prefix = "/"
upstream = "flaky"

[routes.pipeline]
timeout = "300ms"
circuit_breaker = {{ failure_rate = 0.5, minimum_calls = 20, window = {{ time = "2s" }}, open_for = "1s", half_open_calls = 3 }}
rate_limiter = {{ rate = {limit}, period = "1s" }}
"#,
            pid = std::process::id(),
            up = upstream.addr(),
            limit = rate * 9 / 10,
        ),
    )
    .expect("the configuration");
    let mut proxy = Command::new(&proxy_bin)
        .args(["proxy", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the proxy starts");
    let pid = proxy.id();
    // Wait for the listener.
    let ready = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(20),
            "the proxy did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let flapper = tokio::spawn({
        let upstream = Arc::clone(&upstream);
        async move {
            for phase in 0.. {
                upstream.set(flap(phase));
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }
    });
    let samples = Arc::new(Mutex::new(Vec::new()));
    // Redis stopped for 10 s twice: a third into the run, and again a third
    // after it is back.
    let sampler = tokio::spawn({
        let samples = Arc::clone(&samples);
        async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let s = (started.elapsed().as_secs(), rss_kib(pid));
                samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
            }
        }
    });
    let restarts = tokio::spawn(async move {
        let mut child = redis_child;
        for _ in 0..2 {
            tokio::time::sleep(duration / 3).await;
            let _ = child.kill();
            let _ = child.wait();
            println!("soak: redis stopped");
            tokio::time::sleep(Duration::from_secs(10)).await;
            child = redis(&redis_bin, redis_port);
            println!("soak: redis started again");
        }
        child
    });

    let target: http::Uri = format!("http://127.0.0.1:{listen}/soak").parse().unwrap();
    let mut run = FixedRate::new(target, rate, duration);
    run.deadline = Duration::from_secs(5);
    run.check = Some(Arc::new(accounted));
    let report = loadgen::fixed_rate(run).await.expect("a run");
    flapper.abort();
    sampler.abort();
    let mut redis_child = restarts.await.expect("the restarts");
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = redis_child.kill();
    let _ = redis_child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    println!("{}", report.summary());
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let warm: Vec<u64> = samples
        .iter()
        .filter(|(at, _)| *at >= 30)
        .map(|(_, kib)| *kib)
        .collect();
    let (first, second) = warm.split_at(warm.len() / 2);
    let peak = |xs: &[u64]| xs.iter().copied().max().unwrap_or(0);
    let (rss1, rss2) = (peak(first), peak(second));
    println!(
        "soak: {seconds} s at {rate}/s: sent {}, answered {}, lost or hung {}, unaccounted {}, skipped {}",
        report.sent,
        report.completed(),
        report.failed(),
        report.wrong,
        report.skipped
    );
    println!(
        "soak: proxy RSS peak {rss1} KiB in the first half, {rss2} KiB in the second; samples (s, KiB): {:?}",
        samples
    );
    let expected = u64::from(rate) * seconds;
    let ok = report.sent == expected
        && report.completed() == expected
        && report.failed() == 0
        && report.wrong == 0
        && rss2 <= rss1 + rss1 / 4 + 8 * 1024;
    println!("soak: {}", if ok { "PASS" } else { "FAIL" });
    std::process::exit(if ok { 0 } else { 1 });
}
