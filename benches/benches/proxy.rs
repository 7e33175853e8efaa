//! `ripcord proxy` side by side with a direct connection and with nginx as a
//! plain reverse proxy, in one run, on loopback, against the same upstream
//! (ripcord-proxy's in-process test upstream answering `ok\n`).
//!
//! - `proxy/direct`: the load generator talks to the upstream.
//! - `proxy/ripcord`: through `ripcord proxy` (one route, a circuit breaker
//!   and a 2 s timeout, default limits: one worker per CPU), in a process of
//!   its own: this bench binary run again as the proxy, on the code path and
//!   runtime of the `ripcord proxy` command.
//! - `proxy/ripcord_plain`: the same proxy, on a route without a pipeline
//!   (only the default 30 s timeout): what forwarding costs without the
//!   breaker.
//! - `proxy/ripcord_busy_poll`: the `ripcord` route on a second proxy tuned
//!   for latency ([`BUSY_POLL`]): default limits, except that its workers
//!   poll their sockets without sleeping for 5 ms after each request
//!   (`limits.busy_poll`).
//! - `proxy/nginx`: through nginx (`worker_processes 2`, upstream keep-alive),
//!   started as a child process from a generated configuration in a temporary
//!   folder, and stopped at the end. Skipped, with a message, when no `nginx`
//!   binary is on the PATH or in /usr/sbin.
//!
//! - `proxy/ripcord_baseline`, `proxy/ripcord_plain_baseline`: only when
//!   [`BASELINE`] names an earlier build of this bench binary: the
//!   `ripcord` and `ripcord_plain` routes on the proxy of that build, run
//!   the same way and interleaved with the others, so that a change to the
//!   proxy is measured before and after in one run.
//!
//! Criterion measures the closed-loop throughput at a fixed concurrency
//! ([`CONCURRENCY`] keep-alive connections; time per request = 1/throughput).
//! After the criterion groups, the same run prints a table from the load
//! generator: saturated throughput with p50/p99 and the CPU time the proxy's
//! process(es) spent per request (user + system, from `/proc`), p50/p99 one
//! request at a time, and p50/p99 at a fixed rate that every target sustains, with the p99
//! added over direct. Each kind of run takes the targets in short turns
//! (100 requests one at a time, 1 s at the fixed rate), so a stall of the
//! machine lands on every target alike, and a target's percentiles are over
//! all its requests of that kind. Turns are [`SETTLE`] apart: a target that
//! followed the busy-polling proxy at once would find the vCPU it kept awake
//! still awake, and its requests would skip the wake-ups that the others pay.
//! A one-at-a-time turn starts with [`SEQUENTIAL_WARM_UP`] requests that are
//! not recorded: after the pause, the first request of a turn wakes every
//! thread of the chain from idle, and with 100 requests a turn those first
//! requests alone would be every target's p99.
//!
//! The upstream runs on a runtime of its own, as a separate service would:
//! every direct request wakes one of its threads, and every response wakes
//! one of the load generator's. Run:
//! `cargo bench -p ripcord-benches --bench proxy`; before and after a
//! change: copy the bench binary that `cargo bench --bench proxy --no-run`
//! names, make the change, and run
//! `RIPCORD_BENCH_BASELINE=/path/to/the/copy cargo bench -p ripcord-benches --bench proxy`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use http::Uri;
use ripcord_proxy::config::ProxyConfig;
use ripcord_proxy::loadgen::{self, FixedRate, LatencyHistogram, LoadClient, Report};
use ripcord_proxy::upstream::Upstream;
use ripcord_proxy::RunOptions;
use tokio::runtime::Runtime;

#[path = "proxy/grpc.rs"]
mod grpc;

/// Rounds of the table's closed-loop runs at [`CONCURRENCY`].
const SATURATED_ROUNDS: usize = 15;
/// Turns of the table's one-at-a-time runs.
const SEQUENTIAL_TURNS: usize = 50;
/// Requests of each target in one turn of the one-at-a-time runs.
const SEQUENTIAL_PER_TURN: u64 = 100;
/// Requests sent, and not recorded, at the start of each one-at-a-time
/// turn, so that a turn measures requests that follow one another, not the
/// first one after the pause between turns.
const SEQUENTIAL_WARM_UP: u64 = 3;
/// Rounds of the table's fixed-rate runs.
const FIXED_ROUNDS: usize = 15;
/// The `[limits]` of the `ripcord_busy_poll` proxy: workers (one per CPU,
/// the default) that poll for 5 ms after each request before they sleep.
const BUSY_POLL: &str = "busy_poll = \"5ms\"";
/// Connections (and workers) of the closed-loop runs.
const CONCURRENCY: usize = 32;
/// Requests of each closed-loop run of the table.
const TABLE_REQUESTS: u64 = 20_000;
/// The fixed rate of the latency table, in requests per second.
const FIXED_RATE: u32 = 2_000;
/// How long the fixed-rate runs last.
const FIXED_DURATION: Duration = Duration::from_secs(1);
/// The pause after each turn of the table: longer than the busy-polling
/// proxy's window ([`BUSY_POLL`]), so that its polling, which keeps a vCPU
/// awake, never overlaps the next target's turn.
const SETTLE: Duration = Duration::from_millis(20);
/// Every request must complete within this.
const DEADLINE: Duration = Duration::from_secs(5);

fn runtime(threads: usize, name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The proxy's configuration file: one route to the upstream with a breaker
/// and a timeout, one route without a pipeline, and `limits` lines as given;
/// with a gRPC upstream, an `h2c` upstream for it and a route with the same
/// breaker and timeout for its health service ([`grpc::ROUTE`]).
fn proxy_config(upstream: SocketAddr, grpc_upstream: Option<SocketAddr>, limits: &str) -> String {
    let grpc = match grpc_upstream {
        Some(addr) => format!(
            r#"
[upstreams.grpc]
addresses = ["{addr}"]
protocol = "h2c"

[[routes]]
name = "grpc"
path_prefix = "{prefix}"
upstream = "grpc"
pipeline = {{ timeout = "2s", circuit_breaker = {{ failure_rate = 0.5, minimum_calls = 20, open_for = "10s" }} }}
"#,
            prefix = grpc::ROUTE
        ),
        None => String::new(),
    };
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[limits]
drain_deadline = "1s"
{limits}

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.bench]
addresses = ["{upstream}"]

[[routes]]
name = "bench"
path_prefix = "/"
upstream = "bench"
pipeline = {{ timeout = "2s", circuit_breaker = {{ failure_rate = 0.5, minimum_calls = 20, open_for = "10s" }} }}

[[routes]]
name = "plain"
path_prefix = "/plain"
upstream = "bench"
{grpc}"#
    );
    ProxyConfig::parse(&text, "proxy bench config").expect("a valid proxy configuration");
    text
}

/// The variable that picks one comparison: `http` (the HTTP/1.1 one) or
/// `grpc`; both run when it is unset.
const ONLY: &str = "RIPCORD_BENCH_PROXY_ONLY";

/// The variable that makes this bench binary run `ripcord proxy` on the
/// configuration file it names, instead of benchmarking.
const CHILD_CONFIG: &str = "RIPCORD_BENCH_PROXY_CONFIG";

/// The variable naming an earlier build of this bench binary (e.g. a copy
/// of `target/release/deps/proxy-…` made before a change) whose proxy runs
/// beside this build's as the `…_baseline` targets.
const BASELINE: &str = "RIPCORD_BENCH_BASELINE";

/// The child's side: runs the proxy as the `ripcord proxy` command does (its
/// runtime, [`ripcord_proxy::run`], its text logs at INFO on stdout) until
/// SIGTERM.
fn run_child_proxy(config: PathBuf) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(ripcord_proxy::run(RunOptions {
        config,
        drain_deadline: None,
    }))
}

/// SIGTERM to a child, then up to 5 s for it to exit, then SIGKILL.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A temporary folder of this bench run, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ripcord-bench-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ripcord proxy` in a process of its own (this bench binary, re-run with
/// [`CHILD_CONFIG`]), as it runs in production and as nginx runs here;
/// stopped with SIGTERM on drop.
struct ChildProxy {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl ChildProxy {
    fn start(name: &str, config: &str) -> ChildProxy {
        Self::start_of(
            &std::env::current_exe().expect("this bench binary"),
            name,
            config,
        )
    }

    /// The proxy of `binary`, a build of this bench (this one, or the
    /// [`BASELINE`]).
    fn start_of(binary: &Path, name: &str, config: &str) -> ChildProxy {
        let dir = TempDir::new(name);
        let path = dir.0.join("ripcord.toml");
        std::fs::write(&path, config).expect("writing ripcord.toml");
        let mut child = Command::new(binary)
            .env(CHILD_CONFIG, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the proxy process");
        let stdout = child.stdout.take().expect("the proxy's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the proxy exited before listening")
                .expect("reading the proxy's stdout");
            if let Some((_, url)) = line.split_once("listening on http://") {
                break url.trim().parse::<SocketAddr>().expect("a listen address");
            }
        };
        // Keep reading (and dropping) what it prints, so it never blocks on
        // a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ChildProxy {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// nginx as a plain reverse proxy, stopped with SIGTERM on drop (the
/// master stops its workers, then exits).
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Nginx {
    fn binary() -> Option<PathBuf> {
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("nginx"))
                .find(|p| p.is_file())
        });
        on_path.or_else(|| {
            let sbin = Path::new("/usr/sbin/nginx");
            sbin.is_file().then(|| sbin.to_path_buf())
        })
    }

    fn start(upstream: SocketAddr) -> Option<Nginx> {
        let Some(binary) = Self::binary() else {
            eprintln!(
                "\n*** nginx not found (PATH, /usr/sbin): the nginx case is SKIPPED. \
                 Install Debian's `nginx` (apt-get install nginx-light) to run it. ***\n"
            );
            return None;
        };
        let dir = TempDir::new("nginx");
        let port = free_port();
        let d = dir.0.display();
        let config = format!(
            r#"
daemon off;
master_process on;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream bench {{
        server {upstream};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"#
        );
        let path = dir.0.join("nginx.conf");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .expect("writing nginx.conf");
        let child = Command::new(&binary)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.0.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting nginx");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let nginx = Nginx { child, addr, dir };
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen on {addr} within 10s (see {})",
                nginx.dir.0.join("error.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// What the table gathers of one target: per closed-loop round, the
/// throughput; over all turns, every request's latency of each kind of run.
#[derive(Default)]
struct Row {
    throughput: Vec<f64>,
    /// CPU time of the proxy's processes over the closed-loop rounds.
    cpu: Duration,
    /// Requests of the closed-loop rounds.
    requests: u64,
    saturated: LatencyHistogram,
    sequential: LatencyHistogram,
    paced: LatencyHistogram,
}

/// The median of the rounds' throughputs.
fn median<T: Copy + PartialOrd>(values: &[T]) -> T {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// One target of the comparison.
struct Target {
    name: &'static str,
    client: LoadClient,
    uri: Uri,
    /// The proxy's process (its children too: nginx's workers); `None` for
    /// direct.
    process: Option<u32>,
}

fn target(
    name: &'static str,
    addr: SocketAddr,
    path: &str,
    process: Option<u32>,
    rt: &Runtime,
) -> Target {
    let uri: Uri = format!("http://{addr}{path}").parse().expect("a URI");
    let _guard = rt.enter();
    let client = LoadClient::new(uri.clone(), false, None).expect("a client");
    Target {
        name,
        client,
        uri,
        process,
    }
}

/// The user + system CPU time of process `pid` (all its threads) and of its
/// child processes, from `/proc` (zero where it cannot be read).
fn process_cpu(pid: u32) -> Duration {
    // utime and stime: fields 14 and 15 of `stat`, after the `(comm)` one.
    let ticks = |pid: &str| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        field(11).unwrap_or(0) + field(12).unwrap_or(0)
    };
    let pid = pid.to_string();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let total: u64 = ticks(&pid) + children.split_whitespace().map(ticks).sum::<u64>();
    // USER_HZ: 100 ticks per second on Linux.
    Duration::from_millis(total * 10)
}

/// Fails the bench loudly if any request did not get the upstream's 200.
fn all_ok(name: &str, report: &Report) {
    let ok = report.by_status.get(&200).copied().unwrap_or(0);
    assert!(
        ok == report.completed() && report.failed() == 0 && report.skipped == 0,
        "{name}: not every request got the upstream's 200:\n{}",
        report.summary()
    );
}

/// Waits [`SETTLE`] between two turns.
fn settle() {
    std::thread::sleep(SETTLE);
}

/// The time the hypervisor ran something else while this machine's vCPUs
/// wanted to run (the `steal` column of `/proc/stat`, all CPUs), or zero
/// where it is not reported.
fn stolen() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks = stat
        .lines()
        .next()
        .and_then(|cpu| cpu.split_whitespace().nth(8))
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0);
    // USER_HZ: 100 ticks per second on Linux.
    Duration::from_millis(ticks * 10)
}

/// A latency in microseconds, e.g. `412 µs`.
fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn bench(c: &mut Criterion) {
    let client_rt = runtime(2, "bench-client");
    // The upstream has threads of its own, as a separate service has: had it
    // shared the load generator's, a direct request could be sent, served
    // and answered on one thread without ever waking another, which no call
    // to another service does.
    let upstream_rt = runtime(2, "bench-upstream");
    let upstream = upstream_rt.block_on(async { Upstream::bind(1).await.expect("the upstream") });
    let grpc_upstream = grpc::upstream(&upstream_rt);
    let proxy = ChildProxy::start(
        "ripcord",
        &proxy_config(upstream.addr(), Some(grpc_upstream), ""),
    );
    let busy = ChildProxy::start(
        "ripcord-busy-poll",
        &proxy_config(upstream.addr(), Some(grpc_upstream), BUSY_POLL),
    );
    let baseline = std::env::var_os(BASELINE).map(|binary| {
        ChildProxy::start_of(
            Path::new(&binary),
            "ripcord-baseline",
            &proxy_config(upstream.addr(), None, ""),
        )
    });
    let only = std::env::var(ONLY).ok();
    if only.as_deref() != Some("grpc") {
        http_comparison(
            c,
            &client_rt,
            upstream.addr(),
            &proxy,
            &busy,
            baseline.as_ref(),
        );
    }
    if only.as_deref() != Some("http") {
        grpc::comparison(
            c,
            &client_rt,
            grpc_upstream,
            [(&proxy, "ripcord"), (&busy, "ripcord_busy_poll")],
        );
    }
    drop(proxy);
    drop(busy);
    drop(baseline);
    drop(upstream);
}

/// The HTTP/1.1 comparison: criterion's `proxy/…` group, then the table.
fn http_comparison(
    c: &mut Criterion,
    client_rt: &Runtime,
    upstream: SocketAddr,
    proxy: &ChildProxy,
    busy: &ChildProxy,
    baseline: Option<&ChildProxy>,
) {
    let nginx = Nginx::start(upstream);

    let mut targets = vec![
        target("direct", upstream, "/bench", None, client_rt),
        target(
            "ripcord",
            proxy.addr,
            "/bench",
            Some(proxy.child.id()),
            client_rt,
        ),
        target(
            "ripcord_plain",
            proxy.addr,
            "/plain",
            Some(proxy.child.id()),
            client_rt,
        ),
        target(
            "ripcord_busy_poll",
            busy.addr,
            "/bench",
            Some(busy.child.id()),
            client_rt,
        ),
    ];
    if let Some(b) = baseline {
        targets.push(target(
            "ripcord_baseline",
            b.addr,
            "/bench",
            Some(b.child.id()),
            client_rt,
        ));
        targets.push(target(
            "ripcord_plain_baseline",
            b.addr,
            "/plain",
            Some(b.child.id()),
            client_rt,
        ));
    }
    if let Some(n) = &nginx {
        targets.push(target(
            "nginx",
            n.addr,
            "/bench",
            Some(n.child.id()),
            client_rt,
        ));
    }
    // Warm every pool, and check every target answers with the upstream's 200.
    for t in &targets {
        let r = client_rt.block_on(loadgen::closed_loop(
            &t.client,
            CONCURRENCY,
            2_000,
            DEADLINE,
        ));
        all_ok(t.name, &r);
    }

    let mut group = c.benchmark_group("proxy");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for t in &targets {
        group.bench_function(t.name, |b| {
            b.iter_custom(|iters| {
                let r = client_rt.block_on(loadgen::closed_loop(
                    &t.client,
                    CONCURRENCY,
                    iters,
                    DEADLINE,
                ));
                all_ok(t.name, &r);
                r.elapsed
            })
        });
    }
    group.finish();

    // The table, from the load generator, in the same run. A target's
    // percentiles are over every request of its runs of one kind (5,000 one
    // at a time, say): a p99 of many samples, which one stall of the machine
    // in one run cannot move much; its throughput is the median of the
    // rounds'.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nproxy comparison on loopback, targets interleaved (load average before: {})\n",
        load.trim()
    );
    let mut rows: Vec<Row> = targets.iter().map(|_| Row::default()).collect();
    // Three phases, each interleaving the targets in short turns, so that a
    // stall of the machine (or of its host) lands on every target alike.
    let mut steal = Vec::new();
    let mut mark = stolen();
    let mut phase_done = |name: &str| {
        let now = stolen();
        steal.push(format!("{name} {} ms", (now - mark).as_millis()));
        mark = now;
    };
    for _ in 0..SATURATED_ROUNDS {
        for (t, row) in targets.iter().zip(&mut rows) {
            let cpu_before = t.process.map(process_cpu);
            let saturated = client_rt.block_on(loadgen::closed_loop(
                &t.client,
                CONCURRENCY,
                TABLE_REQUESTS,
                DEADLINE,
            ));
            all_ok(t.name, &saturated);
            if let (Some(pid), Some(before)) = (t.process, cpu_before) {
                row.cpu += process_cpu(pid).saturating_sub(before);
            }
            row.requests += TABLE_REQUESTS;
            row.throughput.push(saturated.throughput());
            settle();
            row.saturated.merge(&saturated.latency);
        }
    }
    phase_done("closed loop");
    for _ in 0..SEQUENTIAL_TURNS {
        for (t, row) in targets.iter().zip(&mut rows) {
            // Unrecorded: the first requests after the pause wake every
            // thread of the chain from idle (on this VM, halted vCPUs).
            let warm_up = client_rt.block_on(loadgen::closed_loop(
                &t.client,
                1,
                SEQUENTIAL_WARM_UP,
                DEADLINE,
            ));
            all_ok(t.name, &warm_up);
            let sequential = client_rt.block_on(loadgen::closed_loop(
                &t.client,
                1,
                SEQUENTIAL_PER_TURN,
                DEADLINE,
            ));
            all_ok(t.name, &sequential);
            row.sequential.merge(&sequential.latency);
            settle();
        }
    }
    phase_done("one at a time");
    for _ in 0..FIXED_ROUNDS {
        for (t, row) in targets.iter().zip(&mut rows) {
            // On the target's warm pool, like the other phases: a turn
            // measures requests, not the set-up of new connections.
            let mut fixed = FixedRate::new(t.uri.clone(), FIXED_RATE, FIXED_DURATION);
            fixed.deadline = DEADLINE;
            let paced = client_rt
                .block_on(loadgen::fixed_rate_on(&t.client, &fixed))
                .expect("a fixed-rate run");
            all_ok(t.name, &paced);
            row.paced.merge(&paced.latency);
            settle();
        }
    }
    phase_done("fixed rate");
    println!(
        "| target | req/s at {CONCURRENCY} conns | p50 | p99 | proxy CPU per request | one at a time: p50 | p99 | at {FIXED_RATE} req/s: p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let p99 = |h: &LatencyHistogram| h.percentile(0.99);
    let direct = &rows[0];
    for (i, (t, row)) in targets.iter().zip(&rows).enumerate() {
        let with_added = |h: &LatencyHistogram, base: &LatencyHistogram| {
            if i == 0 {
                us(p99(h))
            } else {
                let added = p99(h).as_secs_f64() - p99(base).as_secs_f64();
                format!("{} ({:+.0} µs)", us(p99(h)), added * 1e6)
            }
        };
        let cpu = match t.process {
            Some(_) => format!(
                "{:.1} µs",
                row.cpu.as_secs_f64() * 1e6 / row.requests.max(1) as f64
            ),
            None => "–".to_string(),
        };
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            t.name,
            median(&row.throughput),
            us(row.saturated.percentile(0.5)),
            us(p99(&row.saturated)),
            cpu,
            us(row.sequential.percentile(0.5)),
            with_added(&row.sequential, &direct.sequential),
            us(row.paced.percentile(0.5)),
            with_added(&row.paced, &direct.paced),
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload average after: {}", load.trim());
    println!(
        "CPU time stolen by the hypervisor, per phase: {}",
        steal.join(", ")
    );
    println!(
        "(req/s: median of {SATURATED_ROUNDS} closed-loop rounds of {TABLE_REQUESTS} requests on \
         {CONCURRENCY} keep-alive connections; proxy CPU: user + system time of the proxy's \
         processes over those rounds, per request; one at a time: {SEQUENTIAL_TURNS} turns of \
         {SEQUENTIAL_PER_TURN} requests on one connection; fixed rate: {FIXED_ROUNDS} rounds of \
         {FIXED_RATE} req/s for {}s, open loop; each phase takes the targets in turn)\n",
        FIXED_DURATION.as_secs()
    );

    drop(nginx);
    drop(targets);
}

fn main() -> ExitCode {
    if let Some(config) = std::env::var_os(CHILD_CONFIG) {
        return run_child_proxy(config.into());
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    ExitCode::SUCCESS
}
