//! Runs the real `ripcord demo` binary and checks the story it tells: the breaker
//! in the proxy opens while the upstream misbehaves, rejects calls, and is
//! closed again at the end; the dashboard and `/metrics` answer while it runs;
//! and with `--store` two proxies share the breaker and trip together.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The value of the summary line `key: value`, as a string.
fn value<'a>(output: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}:");
    output
        .lines()
        .map(str::trim_start)
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `{key}:` line in the output:\n{output}"))
}

/// The value of the summary line `key: value`, as a number.
fn number(output: &str, key: &str) -> u64 {
    let v = value(output, key);
    v.parse()
        .unwrap_or_else(|e| panic!("`{key}: {v}` is not a number ({e}) in:\n{output}"))
}

/// A plain HTTP/1.1 GET on loopback: the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("sending the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// Runs `ripcord demo <args>`; while it runs, fetches `/metrics` and the
/// dashboard from the first admin address it prints. Returns stdout.
/// Held while a demo runs: each is a proxy, an upstream and a load generator
/// at full speed, and two at once on a small machine skew each other.
static ONE_DEMO_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_demo(args: &[&str]) -> String {
    let _turn = ONE_DEMO_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .arg("demo")
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running `ripcord demo`");
    let stdout = child.stdout.take().expect("the demo's stdout");
    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut output = String::new();
    let mut dashboard = None;
    // Read the intro up to the dashboard line.
    while dashboard.is_none() {
        let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(20)) else {
            // Ended early (or stuck): say what it printed on stderr.
            let _ = child.kill();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            let status = child.wait().expect("the demo's exit status");
            panic!("no dashboard line ({status}):\n{output}\n{stderr}");
        };
        output.push_str(&line);
        output.push('\n');
        if let Some(rest) = line.trim_start().strip_prefix("dashboard") {
            let url = rest.split_whitespace().next().unwrap_or_default();
            dashboard = url
                .strip_prefix("http://")
                .map(|a| a.trim_end_matches('/').to_string());
        }
    }
    let admin = dashboard.expect("the dashboard's address");
    let (status, metrics) = get(&admin, "/metrics");
    assert!(status.contains(" 200"), "/metrics: {status}");
    assert!(
        metrics.contains("dependency"),
        "/metrics does not mention the breaker:\n{metrics}"
    );
    let (status, page) = get(&admin, "/");
    assert!(status.contains(" 200"), "dashboard: {status}");
    assert!(
        page.to_lowercase().contains("<html"),
        "dashboard page:\n{page}"
    );

    for line in lines_rx.iter() {
        output.push_str(&line);
        output.push('\n');
    }
    reader.join().expect("the reader thread");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().expect("the demo's exit status");
    let elapsed = started.elapsed();
    assert!(
        status.success(),
        "`ripcord demo` failed ({status}):\n{output}\n{stderr}"
    );
    // Ten times the longest --duration given here (6 s): it ends by itself.
    assert!(
        elapsed < Duration::from_secs(60),
        "the demo should end by itself soon after --duration, took {elapsed:?}"
    );
    output
}

#[test]
fn demo_trips_rejects_and_recovers() {
    let stdout = run_demo(&["--duration", "6s", "--seed", "3"]);
    let stdout = stdout.as_str();

    // Not a terminal: one status row per second, no ANSI escapes.
    assert!(
        !stdout.contains('\x1b'),
        "escape codes in piped output:\n{stdout}"
    );

    assert!(number(stdout, "calls") > 1_000, "{stdout}");
    assert!(number(stdout, "transitions") >= 2, "{stdout}");
    assert!(number(stdout, "opened") >= 1, "{stdout}");
    assert!(
        stdout.lines().any(|l| l.contains("→ open")),
        "no transition to open in the timeline:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("→ open") && l.contains("failure rate")),
        "no trip on the failure rate:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("→ open") && l.contains("slow-call rate")),
        "no trip on the slow-call rate:\n{stdout}"
    );
    assert!(number(stdout, "rejected") > 0, "{stdout}");
    assert!(
        number(stdout, "reached_while_failing") < number(stdout, "calls"),
        "{stdout}"
    );
    assert_eq!(value(stdout, "final_state"), "closed", "{stdout}");
    assert!(value(stdout, "recovery").ends_with('s'), "{stdout}");
}

#[test]
fn demo_with_a_store_runs_two_proxies_that_trip_together() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let stdout = run_demo(&["--duration", "6s", "--seed", "5", "--store", &url]);
    let stdout = stdout.as_str();
    assert!(
        stdout.contains("2 ripcord proxies sharing one breaker"),
        "{stdout}"
    );
    assert!(stdout.contains("timeline of proxy 2"), "{stdout}");
    assert!(number(stdout, "opened") >= 1, "{stdout}");
    assert!(number(stdout, "peer_opened") >= 1, "{stdout}");
    assert!(number(stdout, "rejected") > 0, "{stdout}");
    // Both opened within a sync interval or so of each other.
    let skew = value(stdout, "trip_skew");
    let skew: f64 = skew
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|e| panic!("trip_skew `{skew}` ({e}):\n{stdout}"));
    assert!(skew <= 0.5, "the proxies opened {skew}s apart:\n{stdout}");
    assert_eq!(value(stdout, "final_state"), "closed", "{stdout}");
    assert_eq!(value(stdout, "peer_final_state"), "closed", "{stdout}");
}

#[test]
fn demo_with_an_unreachable_store_says_so() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        l.local_addr().expect("its address").port()
    };
    let output = Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .args(["demo", "--duration", "2s", "--store"])
        .arg(format!("redis://127.0.0.1:{port}"))
        .output()
        .expect("running `ripcord demo`");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("redis://127.0.0.1:{port}")),
        "the error names the store:\n{stderr}"
    );
}

#[test]
fn demo_rejects_a_too_short_duration() {
    let output = Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .args(["demo", "--duration", "100ms"])
        .output()
        .expect("running `ripcord demo`");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--duration"), "{stderr}");
}
