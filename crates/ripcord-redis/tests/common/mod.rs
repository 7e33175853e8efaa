//! Test harness: the shared Redis at `REDIS_URL`, spawned `redis-server`s
//! (single or a 3-master Cluster) that tests may kill, pause or restart, and
//! a fleet of instances (each its own `RedisStore` connection and `Fleet`).
//!
//! Spawned servers are killed when dropped; the shared one is never flushed
//! (every test uses its own random key prefix).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ripcord::store::Fleet;
use ripcord::{
    Backoff, CircuitBreaker, CircuitBreakerBuilder, Event, EventKind, Outcome, State, Window,
};
use ripcord_redis::RedisStore;

pub(crate) const MS: Duration = Duration::from_millis(1);

/// The shared server (scripts/test.sh sets `REDIS_URL`).
pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A key prefix no other test (or run) uses.
pub(crate) fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "ripcord-test-{test}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn server_bin() -> String {
    std::env::var("REDIS_SERVER_BIN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis-server".to_string())
}

fn free_port() -> u16 {
    // Bind port 0 and read the port the OS chose; Cluster also needs port+10000.
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ripcord-redis-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A `redis-server` this test owns, on a free port; killed on drop.
pub(crate) struct RedisServer {
    port: u16,
    dir: PathBuf,
    cluster: bool,
    extra: Vec<String>,
    child: Option<Child>,
}

/// The major version of the `redis-server` binary.
pub(crate) fn server_major_version() -> u32 {
    let out = Command::new(server_bin())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split("v=")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

impl RedisServer {
    pub(crate) fn spawn() -> RedisServer {
        RedisServer::spawn_with(false, &[])
    }

    /// With extra `redis-server` arguments.
    pub(crate) fn spawn_args(extra: &[&str]) -> RedisServer {
        RedisServer::spawn_with(false, extra)
    }

    fn spawn_with(cluster: bool, extra: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        RedisServer::spawn_port_args(cluster, move |_| extra.clone())
    }

    /// With extra arguments that depend on the chosen port.
    pub(crate) fn spawn_port_args(
        cluster: bool,
        extra: impl Fn(u16) -> Vec<String>,
    ) -> RedisServer {
        let port = free_port();
        let mut s = RedisServer {
            port,
            dir: temp_dir("server"),
            cluster,
            extra: extra(port),
            child: None,
        };
        s.start();
        s
    }

    fn start(&mut self) {
        let mut cmd = Command::new(server_bin());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--loglevel")
            .arg("warning");
        if self.cluster {
            cmd.arg("--cluster-enabled")
                .arg("yes")
                .arg("--cluster-config-file")
                .arg(self.dir.join("nodes.conf"))
                .arg("--cluster-node-timeout")
                .arg("2000");
        }
        cmd.args(&self.extra);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}` ({e}): install redis-server or set REDIS_SERVER_BIN",
                    server_bin()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// SIGKILL: the server is gone, with its data.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// SIGSTOP: connections stay open but nothing answers.
    pub(crate) fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT.
    pub(crate) fn resume(&self) {
        signal(self.pid(), "CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid} failed");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            // A paused server must be resumed to die cleanly.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three masters, slots split evenly, no replicas; killed on drop.
pub(crate) struct RedisCluster {
    pub(crate) nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub(crate) async fn spawn() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::spawn_with(true, &[])).collect();
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (node, (lo, hi)) in nodes.iter().zip(ranges) {
            let mut c = connect(&node.url()).await;
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(lo)
                .arg(hi)
                .query_async(&mut c)
                .await
                .expect("CLUSTER ADDSLOTSRANGE");
        }
        let mut first = connect(&nodes[0].url()).await;
        for node in &nodes[1..] {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port())
                .query_async(&mut first)
                .await
                .expect("CLUSTER MEET");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ok = true;
            for node in &nodes {
                let mut c = connect(&node.url()).await;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut c)
                    .await
                    .expect("CLUSTER INFO");
                ok &= info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3");
            }
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not converge");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        RedisCluster { nodes }
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

pub(crate) async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// `INFO commandstats` as command → calls; waits up to 60 s for a server
/// saturated by scripts (its reply queues behind them).
pub(crate) async fn command_stats(url: &str) -> HashMap<String, u64> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(60)))
        .set_response_timeout(Some(std::time::Duration::from_secs(60)));
    let mut c = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect to redis");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .expect("INFO commandstats");
    let mut out = HashMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        let calls = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        out.insert(name.to_string(), calls);
    }
    out
}

/// Where the stores of a test connect.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Single(String),
    Cluster(Vec<String>),
}

impl Target {
    pub(crate) async fn store(&self, prefix: &str, pubsub: bool) -> RedisStore {
        let b = match self {
            Target::Single(url) => RedisStore::builder(url),
            Target::Cluster(urls) => RedisStore::builder(&urls[0]).cluster(urls[1..].to_vec()),
        };
        b.key_prefix(prefix)
            .pubsub(pubsub)
            .response_timeout(Duration::from_millis(300))
            .connect_timeout(Duration::from_millis(300))
            .build()
            .await
            .expect("build RedisStore")
    }

    /// `INFO commandstats`, summed over every node.
    pub(crate) async fn command_stats(&self) -> HashMap<String, u64> {
        let urls = match self {
            Target::Single(url) => vec![url.clone()],
            Target::Cluster(urls) => urls.clone(),
        };
        let mut total = HashMap::new();
        for u in urls {
            for (k, v) in command_stats(&u).await {
                *total.entry(k).or_insert(0) += v;
            }
        }
        total
    }
}

/// Every event with when it came and how many syncs its fleet had completed.
pub(crate) type Log = Arc<Mutex<Vec<(Instant, u64, Event)>>>;

/// One service instance: its own store connection, fleet task and breaker.
pub(crate) struct Instance {
    pub(crate) store: RedisStore,
    pub(crate) fleet: Fleet,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) events: Log,
}

impl Instance {
    pub(crate) fn state(&self) -> State {
        self.breaker.state()
    }

    /// (when, from, to) of every transition.
    pub(crate) fn transitions(&self) -> Vec<(Instant, State, State)> {
        self.transitions_and_syncs()
            .into_iter()
            .map(|(at, _, from, to)| (at, from, to))
            .collect()
    }

    /// (when, syncs completed by then, from, to) of every transition.
    pub(crate) fn transitions_and_syncs(&self) -> Vec<(Instant, u64, State, State)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(at, syncs, e)| match e.kind {
                EventKind::Transition { from, to, .. } => Some((*at, *syncs, from, to)),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn count(&self, f: impl Fn(&EventKind) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, e)| f(&e.kind))
            .count()
    }
}

pub(crate) struct FleetOptions {
    pub(crate) name: String,
    pub(crate) pubsub: bool,
    pub(crate) sync_interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) open_for: Duration,
    pub(crate) half_open_calls: u32,
    pub(crate) quorum: u32,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            name: "payments".to_string(),
            pubsub: true,
            sync_interval: 100 * MS,
            timeout: 300 * MS,
            open_for: Duration::from_secs(30),
            half_open_calls: 2,
            quorum: 0,
        }
    }
}

pub(crate) fn template(o: &FleetOptions) -> CircuitBreakerBuilder {
    CircuitBreaker::builder(&o.name)
        .failure_rate(0.5)
        .minimum_calls(10)
        .window(Window::time(Duration::from_secs(10)))
        .open_for(Backoff::fixed(o.open_for))
        .half_open_calls(o.half_open_calls)
}

pub(crate) async fn instance(
    target: &Target,
    prefix: &str,
    id: &str,
    o: &FleetOptions,
) -> Instance {
    let store = target.store(prefix, o.pubsub).await;
    let fleet = Fleet::builder(store.clone())
        .instance(id)
        .pubsub(o.pubsub)
        .sync_interval(o.sync_interval)
        .timeout(o.timeout)
        .quorum(o.quorum)
        .build()
        .expect("fleet");
    let events: Log = Arc::new(Mutex::new(Vec::new()));
    let (log, syncs) = (events.clone(), fleet.clone());
    let breaker = template(o)
        .fleet(&fleet)
        .on_event(move |e| {
            log.lock()
                .unwrap()
                .push((Instant::now(), syncs.syncs(), e.clone()))
        })
        .build()
        .expect("breaker");
    Instance {
        store,
        fleet,
        breaker,
        events,
    }
}

pub(crate) async fn fleet_of(
    target: &Target,
    prefix: &str,
    n: usize,
    o: &FleetOptions,
) -> Vec<Instance> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        v.push(instance(target, prefix, &format!("i{i}"), o).await);
    }
    for i in &v {
        i.fleet.sync_now().await;
    }
    v
}

/// Takes a permit and records `o`; false if rejected.
pub(crate) fn record(b: &CircuitBreaker, o: Outcome) -> bool {
    match b.try_acquire() {
        Ok(p) => {
            p.record(o);
            true
        }
        Err(_) => false,
    }
}

/// Polls `f` every millisecond until it holds or `within` passes.
pub(crate) async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(MS).await;
    }
}

/// Percentile (0–100) of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Held by the test that runs: one at a time per test binary.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a test body with a hard time limit, alone: each test spawns servers
/// (a Cluster is three) or a fleet of instances under load, and several of
/// them together on a small machine would skew each other's timing. The limit
/// starts once the test's turn comes.
pub(crate) async fn bounded<F: std::future::Future<Output = ()>>(limit: Duration, f: F) {
    let _turn = ONE_AT_A_TIME.lock().await;
    if tokio::time::timeout(limit, f).await.is_err() {
        panic!("test exceeded its {limit:?} bound");
    }
}

pub(crate) mod scenarios;
