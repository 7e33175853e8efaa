//! `limits.busy_poll`: a worker keeps polling (and so uses CPU) while
//! requests keep coming, serves them correctly, and goes back to sleep once
//! it has seen none for the window.
//!
//! The worker's CPU time is read from `/proc/self/task/<tid>/stat` of the
//! thread named `ripcord-proxy-0`. This file holds one test, so its process
//! runs one proxy and that name is unambiguous.

mod proxy_support;

use std::time::{Duration, Instant};

use proxy_support::{base, client, get, one_route, start, Upstream};

/// The CPU time (user + system) used so far by this process's thread named
/// `name`. A new thread names itself once it runs, so a thread not found
/// yet is looked for again for up to a second.
fn thread_cpu(name: &str) -> Duration {
    let end = Instant::now() + Duration::from_secs(1);
    loop {
        match find_thread_cpu(name) {
            Some(cpu) => return cpu,
            None if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            None => panic!("no thread named {name}"),
        }
    }
}

fn find_thread_cpu(name: &str) -> Option<Duration> {
    let ticks = |tid: &str| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        Some(fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?)
    };
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let tid = task.expect("a task entry").file_name();
        let tid = tid.to_string_lossy();
        let comm =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let ticks = ticks(&tid).expect("the thread's stat line");
            // The kernel counts in USER_HZ ticks, 100 per second on Linux.
            return Some(Duration::from_millis(ticks * 10));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_polling_worker_spins_while_requests_come_then_sleeps() {
    let upstream = Upstream::start().await;
    let toml = one_route(
        &upstream,
        "[limits]\nworkers = 1\nbusy_poll = \"20ms\"\n",
        "app",
        "pipeline = { timeout = \"2s\", circuit_breaker = { failure_rate = 0.5 } }",
    );
    let proxy = start(&toml).await;
    let client = client();
    let url = format!("{}/ping", base(&proxy));

    // Requests every 5 ms for 600 ms: the window never runs out, so the
    // worker polls the whole time.
    let before = thread_cpu("ripcord-proxy-0");
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(600) {
        let got = get(&client, &url).await;
        assert_eq!(got.status, 200, "{}", got.body);
        served += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let busy = thread_cpu("ripcord-proxy-0") - before;
    let wall = started.elapsed();
    eprintln!("busy: {busy:?} of CPU in {wall:?}, {served} requests");
    assert!(served >= 50, "only {served} requests in {wall:?}");
    // Serving ~100 small requests takes a few ms of CPU; polling for
    // 600 ms takes far more, even on a loaded machine where the worker
    // yields its core to others.
    assert!(
        busy >= Duration::from_millis(120),
        "the worker used {busy:?} of CPU in {wall:?} of requests every 5 ms: it did not poll"
    );

    // No request for well over the window: the worker sleeps.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = thread_cpu("ripcord-proxy-0");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let idle = thread_cpu("ripcord-proxy-0") - before;
    eprintln!("idle: {idle:?} of CPU in 800 ms");
    assert!(
        idle <= Duration::from_millis(40),
        "the worker used {idle:?} of CPU in 800 ms without requests: it kept polling"
    );

    // And it still serves the next request.
    let got = get(&client, &url).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(upstream.hits(), served + 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}
