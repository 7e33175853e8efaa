//! `ripcord demo`: the proxy between a crowd of callers and a flaky HTTP
//! upstream that fails, slows down and recovers, with its circuit breaker shown
//! live in the terminal and on the dashboard.
//!
//! Everything runs in this process, on loopback: the dependency is the flaky
//! upstream of [`ripcord_proxy::upstream`], switched from phase to phase on a
//! seeded script ([`dependency`]); in front of it runs `ripcord proxy`
//! ([`ripcord_proxy`]), whose upstream pipeline holds a timeout and the
//! breaker; the callers are tokio tasks sending GETs through the proxy with the
//! load generator's client ([`ripcord_proxy::loadgen`]). While it runs, a status
//! row is redrawn about ten times a second ([`view`]) and the proxy's admin
//! listener serves the live dashboard; at the end the demo prints the
//! breaker's transitions and a summary ([`report`]).
//!
//! With `--store redis://…`, two proxy instances share the breaker through
//! Redis (under a random key prefix): half the callers go through each, and
//! both trip and recover together.
//!
//! All the demo's timings — phases, window, open durations, latencies — scale
//! with `--duration` (20 s is the reference), so a short run tells the same story
//! faster.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ripcord::{CircuitBreaker, Clock, SystemClock};
use ripcord_proxy::config::ProxyConfig;
use ripcord_proxy::loadgen::{LoadClient, POLICY_HEADER};
use ripcord_proxy::server::{Proxy, RunningProxy};
use tokio::task::JoinHandle;

mod dependency;
mod events;
mod report;
mod view;

use dependency::{Dependency, Phase, Schedule};
use events::Timeline;

/// The name of the breaker (and of the proxy's upstream it protects).
const BREAKER: &str = "dependency";

/// Options of `ripcord demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How long the demo runs; its phases and the breaker's timings scale with it
    /// (e.g. `20s`, `1m`; at least 2s).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,

    /// Seed of the upstream's randomness (failures and latency jitter).
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// How many concurrent callers share the breaker.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    callers: u16,

    /// Run two proxy instances sharing the breaker through this Redis store
    /// (`redis://host:port`; keys under a random prefix, left to expire).
    #[arg(long, value_name = "URL")]
    store: Option<String>,

    /// Where the (first) proxy's admin listener serves the dashboard and
    /// `/metrics` (port 0 picks a free one; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    admin: SocketAddr,
}

/// The shortest `--duration` the demo accepts: below it the scaled timings get
/// too close to the dependency's 5 ms latency and the timer's resolution.
const MIN_DURATION: Duration = Duration::from_secs(2);

/// Parses `--duration`: a humantime duration of at least [`MIN_DURATION`].
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < MIN_DURATION {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(MIN_DURATION)
        ));
    }
    Ok(d)
}

/// The duration every other timing of the demo is quoted for.
const REFERENCE_DURATION: Duration = Duration::from_secs(20);

/// The demo's numbers, worked out once from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Total wall time of the demo.
    pub(crate) duration: Duration,
    /// Seed of the dependency's randomness.
    pub(crate) seed: u64,
    /// Number of concurrent callers.
    pub(crate) callers: usize,
    /// Each caller starts a call at most this often.
    pub(crate) pace: Duration,
    /// When the dependency is in which phase.
    pub(crate) schedule: Schedule,
    /// Latency of the dependency during the slow phase.
    pub(crate) slow_latency: Duration,
    /// Breaker: failure rate that trips it.
    pub(crate) failure_rate: f64,
    /// Breaker: calls slower than this count as slow.
    pub(crate) slow_threshold: Duration,
    /// Breaker: slow-call rate that trips it.
    pub(crate) slow_rate: f64,
    /// Breaker: calls needed in the window before it may trip.
    pub(crate) minimum_calls: u32,
    /// Breaker: length of the time window.
    pub(crate) window: Duration,
    /// Breaker: first open duration.
    pub(crate) open_base: Duration,
    /// Breaker: longest open duration.
    pub(crate) open_max: Duration,
    /// Breaker: probes admitted while half-open.
    pub(crate) half_open_calls: u32,
    /// The proxy's timeout per request to the dependency.
    pub(crate) timeout: Duration,
    /// Two proxy instances share the breaker through this store.
    pub(crate) store: Option<String>,
    /// The first proxy's admin address.
    pub(crate) admin: SocketAddr,
}

impl Plan {
    /// Scales the reference timings to `args.duration`.
    fn new(args: &DemoArgs) -> Self {
        let scale = args.duration.as_secs_f64() / REFERENCE_DURATION.as_secs_f64();
        let scaled = |d: Duration| d.mul_f64(scale);
        Plan {
            duration: args.duration,
            seed: args.seed,
            callers: usize::from(args.callers),
            pace: Duration::from_millis(6),
            schedule: Schedule::new(args.duration),
            slow_latency: scaled(Duration::from_millis(1500)),
            failure_rate: 0.5,
            slow_threshold: scaled(Duration::from_millis(800)),
            slow_rate: 0.5,
            minimum_calls: 20,
            window: scaled(Duration::from_secs(2)),
            open_base: scaled(Duration::from_millis(500)),
            open_max: scaled(Duration::from_secs(2)),
            half_open_calls: 3,
            timeout: scaled(Duration::from_secs(3)),
            store: args.store.clone(),
            admin: args.admin,
        }
    }

    /// How many proxy instances the demo runs: two sharing the breaker
    /// through the store, or one.
    pub(crate) fn instances(&self) -> usize {
        if self.store.is_some() {
            2
        } else {
            1
        }
    }

    /// The configuration of proxy instance `index` in front of the upstream at
    /// `upstream`: one route to it, and on it a timeout and the breaker this
    /// plan describes (named [`BREAKER`]). With a store, under `prefix`.
    fn proxy_config(
        &self,
        index: usize,
        upstream: SocketAddr,
        prefix: &str,
    ) -> anyhow::Result<ProxyConfig> {
        let ms = |d: Duration| format!("{}ms", d.as_millis().max(1));
        let store = match &self.store {
            Some(url) => format!(
                "store = {}\nstore_prefix = {}\n",
                toml_str(url),
                toml_str(prefix)
            ),
            None => String::new(),
        };
        let admin = if index == 0 {
            self.admin.to_string()
        } else {
            "127.0.0.1:0".to_string()
        };
        let text = format!(
            r#"{store}
[admin]
listen = "{admin}"

[limits]
drain_deadline = "1s"

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.{BREAKER}]
addresses = ["{upstream}"]

[upstreams.{BREAKER}.pipeline]
timeout = "{timeout}"

[upstreams.{BREAKER}.pipeline.circuit_breaker]
failure_rate = {failure_rate}
slow_calls = {{ duration = "{slow}", rate = {slow_rate} }}
minimum_calls = {minimum_calls}
window = {{ time = "{window}" }}
open_for = {{ kind = "exponential", base = "{open_base}", max = "{open_max}" }}
half_open_calls = {half_open_calls}

[[routes]]
name = "demo"
path_prefix = "/"
upstream = "{BREAKER}"
"#,
            timeout = ms(self.timeout),
            failure_rate = self.failure_rate,
            slow = ms(self.slow_threshold),
            slow_rate = self.slow_rate,
            minimum_calls = self.minimum_calls,
            window = ms(self.window),
            open_base = ms(self.open_base),
            open_max = ms(self.open_max),
            half_open_calls = self.half_open_calls,
        );
        ProxyConfig::parse(&text, "the demo's proxy configuration")
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// `s` as a TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the callers saw, per phase of the dependency (the phase when the call
/// started).
#[derive(Debug, Default)]
pub(crate) struct Load {
    /// Calls the callers attempted.
    attempted: [AtomicU64; Phase::COUNT],
    /// Calls the breaker refused without running them.
    rejected: [AtomicU64; Phase::COUNT],
}

impl Load {
    /// Counts a call attempted during `phase`.
    fn attempt(&self, phase: Phase) {
        self.attempted[phase.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call attempted during `phase` that the breaker refused.
    fn reject(&self, phase: Phase) {
        self.rejected[phase.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls attempted during `phase`.
    pub(crate) fn attempted(&self, phase: Phase) -> u64 {
        self.attempted[phase.index()].load(Ordering::Relaxed)
    }

    /// Calls rejected during `phase`.
    pub(crate) fn rejected(&self, phase: Phase) -> u64 {
        self.rejected[phase.index()].load(Ordering::Relaxed)
    }

    /// Calls attempted in all.
    pub(crate) fn total_attempted(&self) -> u64 {
        Phase::ALL.iter().map(|&p| self.attempted(p)).sum()
    }

    /// Calls rejected in all.
    pub(crate) fn total_rejected(&self) -> u64 {
        Phase::ALL.iter().map(|&p| self.rejected(p)).sum()
    }
}

/// One proxy instance of the demo, and what the demo watches of it.
struct Instance {
    /// The running proxy.
    proxy: RunningProxy,
    /// Its breaker.
    breaker: CircuitBreaker,
    /// The breaker's transitions, from its events.
    timeline: Timeline,
    /// The task feeding the timeline.
    recorder: JoinHandle<()>,
}

/// A random key prefix for the demo's breakers in a shared store.
fn random_prefix() -> String {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one(std::process::id());
    format!("ripcord-demo-{n:016x}")
}

/// Fails unless the store at `url` answers: the proxies would start without
/// it (each deciding alone), which is not what `--store` asks to show.
async fn check_store(url: &str, prefix: &str) -> anyhow::Result<()> {
    let store = ripcord_redis::RedisStore::builder(url)
        .key_prefix(prefix)
        .pubsub(false)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .with_context(|| {
            format!(
                "cannot reach the store at {}",
                crate::cmd::fleet::redact_url(url)
            )
        })?;
    store.ping().await.with_context(|| {
        format!(
            "the store at {} does not answer",
            crate::cmd::fleet::redact_url(url)
        )
    })?;
    Ok(())
}

/// Starts proxy instance `index` and starts recording its breaker's
/// transitions.
async fn start_instance(
    plan: &Plan,
    index: usize,
    upstream: SocketAddr,
    prefix: &str,
    origin: Duration,
) -> anyhow::Result<Instance> {
    let config = plan.proxy_config(index, upstream, prefix)?;
    let proxy = Proxy::start(config)
        .await
        .with_context(|| format!("starting proxy instance {}", index + 1))?;
    let breaker = proxy
        .breaker(BREAKER)
        .with_context(|| format!("the proxy has no breaker named `{BREAKER}`"))?;
    let timeline = Timeline::new(plan, origin);
    let recorder = tokio::spawn(record(breaker.subscribe(), timeline.listener()));
    Ok(Instance {
        proxy,
        breaker,
        timeline,
        recorder,
    })
}

/// Feeds a breaker's events to a timeline until the breaker is gone. (Events
/// lost to a lagging receiver show as missed transitions in the report.)
async fn record(
    mut events: tokio::sync::broadcast::Receiver<ripcord::Event>,
    listen: impl Fn(&ripcord::Event),
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(event) => listen(&event),
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        }
    }
}

/// Runs the demo to the end (or until Ctrl-C) and prints its report. Returns
/// the process's exit code: success, or 130 when interrupted.
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::new(&args);
    let style = view::Style::detect(std::io::stdout().is_terminal());

    let clock = SystemClock::new();
    let started = Instant::now();
    let origin = clock.now();
    let dependency = Arc::new(
        Dependency::start(started, plan.schedule, plan.slow_latency, plan.seed)
            .await
            .context("starting the demo's upstream")?,
    );
    let prefix = random_prefix();
    if let Some(url) = &plan.store {
        check_store(url, &prefix).await?;
    }
    let mut instances = Vec::with_capacity(plan.instances());
    for index in 0..plan.instances() {
        instances.push(start_instance(&plan, index, dependency.addr(), &prefix, origin).await?);
    }
    let clients = instances
        .iter()
        .map(|i| {
            let uri = format!("http://{}/", i.proxy.listen_addrs()[0])
                .parse()
                .context("the proxy's URI")?;
            LoadClient::new(uri, false, None).context("the load generator's client")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let follow = tokio::spawn({
        let dependency = Arc::clone(&dependency);
        async move { dependency.follow().await }
    });
    let load = Arc::new(Load::default());

    let mut out = std::io::stdout().lock();
    let addresses = view::Addresses {
        upstream: dependency.addr(),
        proxies: instances
            .iter()
            .map(|i| (i.proxy.listen_addrs()[0], i.proxy.admin_addr()))
            .collect(),
        store: plan
            .store
            .as_ref()
            .map(|url| (crate::cmd::fleet::redact_url(url), prefix.clone())),
    };
    view::print_intro(&mut out, &plan, &addresses, &style)?;

    let callers: Vec<JoinHandle<()>> = (0..plan.callers)
        .map(|i| {
            tokio::spawn(caller(
                i,
                plan.clone(),
                clients[i % clients.len()].clone(),
                Arc::clone(&dependency),
                Arc::clone(&load),
            ))
        })
        .collect();

    let mut live = view::Live::new(style);
    let mut ticker = tokio::time::interval(style.refresh());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut ctrl_c => interrupted = Some(started.elapsed()),
        }
        let elapsed = started.elapsed().min(plan.duration);
        live.draw(&mut out, &status(elapsed, &dependency, &instances, &load))?;
        if elapsed >= plan.duration || interrupted.is_some() {
            break;
        }
    }
    live.finish(&mut out)?;

    // Calls still in flight (a slow call takes a while) are cancelled: the
    // proxy sees their connections close, which its breaker does not count.
    follow.abort();
    for handle in &callers {
        handle.abort();
    }
    for handle in callers {
        // A cancelled task reports `JoinError::Cancelled`; a panicked one is a bug.
        if let Err(e) = handle.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    // Let the event recorders catch up with the last transitions.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let breakers: Vec<report::Breaker> = instances
        .iter()
        .map(|i| report::Breaker {
            transitions: i.timeline.transitions(),
            final_state: i.breaker.state(),
        })
        .collect();

    report::print(
        &mut out,
        &report::Report {
            plan: &plan,
            breakers: &breakers,
            load: &load,
            dependency: &dependency,
            interrupted,
        },
        &style,
    )?;
    out.flush()?;
    for instance in instances {
        instance.recorder.abort();
        instance.proxy.shutdown(Duration::from_millis(500)).await;
    }
    Ok(match interrupted {
        None => ExitCode::SUCCESS,
        // The shell's convention for "ended by SIGINT".
        Some(_) => ExitCode::from(130),
    })
}

/// One caller: sends a GET through the proxy, one every `plan.pace` at most,
/// until the demo ends (or the task is aborted). A 503 that names the
/// circuit breaker in `x-ripcord-policy` is a rejection.
async fn caller(
    index: usize,
    plan: Plan,
    client: LoadClient,
    dependency: Arc<Dependency>,
    load: Arc<Load>,
) {
    // Spread the callers over one pace period so they do not call in lockstep.
    let offset = plan.pace.mul_f64(index as f64 / plan.callers as f64);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, plan.pace);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let phase = dependency.phase();
        load.attempt(phase);
        if let Ok((parts, _)) = client.get().await {
            let by_breaker = parts
                .headers
                .get(POLICY_HEADER)
                .is_some_and(|v| v.as_bytes() == b"circuit_breaker");
            if parts.status == http::StatusCode::SERVICE_UNAVAILABLE && by_breaker {
                load.reject(phase);
            }
        }
    }
}

/// A snapshot for the live view.
fn status(
    elapsed: Duration,
    dependency: &Dependency,
    instances: &[Instance],
    load: &Load,
) -> view::Status {
    let first = &instances[0].breaker;
    let stats = first.stats();
    view::Status {
        elapsed,
        phase: dependency.phase(),
        state: first.state(),
        peer: instances.get(1).map(|i| i.breaker.state()),
        calls: load.total_attempted(),
        rejected: load.total_rejected(),
        window_calls: stats.calls(),
        failure_rate: stats.failure_rate(),
        slow_rate: stats.slow_rate(),
    }
}
