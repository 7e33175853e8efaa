//! The engine behind `ripcord drill`: steady traffic through a proxy route
//! while faults follow a schedule, the proxy's `/metrics` scraped for its
//! breakers' state, and what callers saw judged against SLOs.
//!
//! A drill runs its phases one after another. Each phase starts its fault
//! on the route through the proxy's admin API (`PUT /api/faults/{route}`,
//! seeded: with the same seed the same requests of a phase are hit), sends
//! `rate` requests per second for its duration (open loop: a slow answer
//! never delays the next request), waits for those in flight, and stops the
//! fault. A `cut` phase cuts the proxy's connection to its fleet store
//! instead (when the drill was given a way to). Meanwhile the breakers'
//! state is read from `/metrics` every 200 ms.
//!
//! For each phase the report has the requests sent and answered, errors
//! (answers other than 2xx/3xx, and requests that failed), who answered
//! (the upstream, or the policy named by `x-ripcord-policy`), the latency
//! quantiles, when a breaker opened after the fault started, and when the
//! breakers were all closed again after it ended.
//!
//! ```no_run
//! use ripcord_cli::drill::{parse_schedule, parse_slo, run, Options, Target};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let target = Target {
//!     url: "http://127.0.0.1:8080/api/orders".parse()?,
//!     admin: "http://127.0.0.1:9090".parse()?,
//!     token: "secret".into(),
//!     route: "orders".into(),
//!     breakers: vec!["orders".into()],
//! };
//! let schedule = parse_schedule("ok 10s, fail 20s @ 60%, ok 20s")?;
//! let options = Options { slos: vec![parse_slo("ok.errors=1%")?], ..Options::default() };
//! let report = run(&target, &schedule, &options, None, |_| {}).await?;
//! print!("{}", report.table());
//! # Ok(()) }
//! ```

mod chart;
mod schedule;

pub use chart::svg;
pub use schedule::{
    parse_schedule, parse_slo, parse_slo_file, Fault, Metric, ParseError, Phase, Slo,
};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ripcord_proxy::loadgen::{self, FixedRate, LatencyHistogram, LoadClient};
use serde::Serialize;

/// Where a drill sends its traffic and its faults.
#[derive(Debug, Clone)]
pub struct Target {
    /// A URL through the proxy, on the route drilled (`http://`).
    pub url: Uri,
    /// The proxy's admin listener (`http://host:port`).
    pub admin: Uri,
    /// The admin token (mutating admin calls need it).
    pub token: String,
    /// The route faults are injected on.
    pub route: String,
    /// The breakers whose state is watched (empty: every breaker).
    pub breakers: Vec<String>,
}

/// How a drill runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests started per second.
    pub rate: u32,
    /// Each request must be answered (head and body) within this.
    pub deadline: Duration,
    /// Seed of the faults' draws.
    pub seed: u64,
    /// What the run is judged against.
    pub slos: Vec<Slo>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rate: 200,
            deadline: Duration::from_secs(2),
            seed: 1,
            slos: Vec::new(),
        }
    }
}

/// Where a drill stands, for a progress line.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Index of the phase starting (0-based), and how many there are.
    pub phase: usize,
    /// Number of phases.
    pub phases: usize,
    /// The phase, as written.
    pub text: String,
    /// When the phase ends, from now.
    pub lasts: Duration,
}

/// Why a drill could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The admin API refused or failed a call.
    #[error("the proxy's admin API at {admin}: {detail}")]
    Admin {
        /// The admin listener.
        admin: String,
        /// What went wrong.
        detail: String,
    },
    /// The traffic could not be sent.
    #[error("cannot send the drill's traffic: {0}")]
    Load(#[from] loadgen::LoadError),
    /// A `cut` phase, but no way to cut the store.
    #[error("the schedule has a `cut` phase, but this drill cannot cut a store: run it in-process with --store")]
    NoStoreCut,
}

/// Cuts (`true`) or heals (`false`) the proxy's connection to its store.
pub type StoreCut = Arc<dyn Fn(bool) + Send + Sync>;

/// Samples of the breakers' state, and the responses over time.
#[derive(Default)]
struct Observed {
    /// (time since the drill started, whether a watched breaker was open).
    states: Vec<(Duration, bool)>,
    /// (time since the drill started, whether the proxy's store was degraded).
    store: Vec<(Duration, bool)>,
    /// Responses per bucket of [`BUCKET`], by who answered.
    buckets: BTreeMap<u64, Bucket>,
}

/// The timeline's resolution.
pub(crate) const BUCKET: Duration = Duration::from_millis(250);

/// Responses in one bucket of the timeline.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Bucket {
    /// Answered by the upstream with a 2xx/3xx.
    pub upstream_ok: u64,
    /// Answered by the upstream with an error status.
    pub upstream_error: u64,
    /// Answered by fault injection.
    pub injected: u64,
    /// Refused by a circuit breaker.
    pub rejected: u64,
    /// Answered by another policy (a timeout, a bulkhead, …).
    pub other: u64,
}

/// The admin API's client.
struct Admin {
    client: Client<HttpConnector, Full<Bytes>>,
    base: Uri,
    token: String,
}

impl Admin {
    fn new(base: &Uri, token: &str) -> Self {
        Admin {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            base: base.clone(),
            token: token.to_string(),
        }
    }

    fn error(&self, detail: impl Into<String>) -> DrillError {
        DrillError::Admin {
            admin: self.base.to_string(),
            detail: detail.into(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), DrillError> {
        let uri = format!("{}{path}", self.base.to_string().trim_end_matches('/'));
        let mut req = Request::builder().method(method).uri(&uri);
        if !self.token.is_empty() {
            req = req.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.error(format!("a bad request to {uri}: {e}")))?;
        let call = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| self.error(format!("{uri}: {e}")))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| self.error(format!("{uri}: {e}")))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .map_err(|_| self.error(format!("{uri} did not answer within 10 s")))?
    }

    /// Starts (`Some`) or stops (`None`) the fault on `route`.
    async fn fault(
        &self,
        route: &str,
        config: Option<&ripcord::ChaosConfig>,
    ) -> Result<(), DrillError> {
        let path = format!("/api/faults/{}", encode(route));
        let (status, body) = match config {
            Some(c) => {
                let json = serde_json::to_string(c)
                    .map_err(|e| self.error(format!("cannot encode the fault: {e}")))?;
                self.call(Method::PUT, &path, Some(json)).await?
            }
            None => self.call(Method::DELETE, &path, None).await?,
        };
        if status == 200 {
            return Ok(());
        }
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        Err(self.error(format!(
            "{status} for the fault on route `{route}`: {message}"
        )))
    }

    /// Whether a watched breaker is open now, and whether the store is
    /// degraded (from `/metrics`).
    async fn any_open(&self, watched: &[String]) -> Option<(bool, bool)> {
        let (status, text) = self.call(Method::GET, "/metrics", None).await.ok()?;
        (status == 200).then(|| (open_in(&text, watched), degraded_in(&text)))
    }
}

/// Whether `/metrics` text shows a watched breaker (any, when `watched` is
/// empty) open, forced open or half-open.
fn open_in(text: &str, watched: &[String]) -> bool {
    text.lines().any(|l| {
        let Some(rest) = l.strip_prefix("ripcord_breaker_state{") else {
            return false;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            return false;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix("=\"")?.strip_suffix('"'))
        };
        let open = matches!(label("state"), Some("open" | "forced_open" | "half_open"));
        let name_ok =
            watched.is_empty() || label("name").is_some_and(|n| watched.iter().any(|w| w == n));
        open && name_ok && value.trim().parse::<f64>().is_ok_and(|v| v > 0.0)
    })
}

/// Whether `/metrics` text shows the store degraded.
fn degraded_in(text: &str) -> bool {
    text.lines().any(|l| {
        l.starts_with("ripcord_store_degraded")
            && l.rsplit(' ')
                .next()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
    })
}

/// Percent-encodes a route name for a path segment.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What one phase saw.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// The phase, as written.
    pub phase: String,
    /// Its kind (`ok`, `fail`, …).
    pub kind: &'static str,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered (any status).
    pub answered: u64,
    /// Errors: answers other than 2xx/3xx, and requests that got no answer.
    pub errors: u64,
    /// `errors / sent`.
    pub error_rate: f64,
    /// Requests the upstream answered (no policy header): those that
    /// reached the dependency.
    pub reached: u64,
    /// Answers by policy (`x-ripcord-policy`: `chaos`, `circuit_breaker`,
    /// `timeout`, …).
    pub by_policy: BTreeMap<String, u64>,
    /// Requests without an answer, by kind (`deadline`, `connect`, …).
    pub failed: BTreeMap<String, u64>,
    /// What depends on timing.
    pub times: PhaseTimes,
}

/// The timing-dependent figures of a phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTimes {
    /// Median latency callers saw, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest answer.
    pub max_ms: f64,
    /// For a fault phase: seconds from its start until a watched breaker
    /// was seen open (`None`: never).
    pub tripped_after_s: Option<f64>,
    /// For a fault phase: seconds from its end until every watched breaker
    /// was seen closed again (0 when none opened; `None`: not by the end of
    /// the drill).
    pub recovered_after_s: Option<f64>,
    /// For a `cut` phase: seconds from the cut until the proxy reported its
    /// store degraded (`None`: not seen).
    pub store_degraded_after_s: Option<f64>,
}

/// One SLO's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The SLO as written.
    pub slo: String,
    /// Whether it held.
    pub held: bool,
    /// The worst value seen, in words.
    pub observed: String,
}

/// What a drill saw, and its verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The route drilled.
    pub route: String,
    /// Requests per second.
    pub rate: u32,
    /// Seed of the faults.
    pub seed: u64,
    /// Each phase's figures, in order.
    pub phases: Vec<PhaseReport>,
    /// Each SLO's verdict, in the order given.
    pub slos: Vec<Verdict>,
    /// Whether every SLO held.
    pub passed: bool,
    /// Responses over time, per 250 ms (for the chart).
    #[serde(skip)]
    pub timeline: Vec<Bucket>,
    /// Phase boundaries, from the drill's start (for the chart).
    #[serde(skip)]
    pub bounds: Vec<(Duration, Duration)>,
    /// Breaker state samples (for the chart).
    #[serde(skip)]
    pub states: Vec<(Duration, bool)>,
    #[serde(skip)]
    histograms: Vec<Arc<LatencyHistogram>>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs the drill; `progress` hears of each phase as it starts. The faults
/// are stopped at the end, also when the drill fails midway.
pub async fn run(
    target: &Target,
    schedule: &[Phase],
    options: &Options,
    cut: Option<StoreCut>,
    progress: impl Fn(Progress),
) -> Result<Report, DrillError> {
    if cut.is_none() && schedule.iter().any(|p| p.fault == Fault::Cut) {
        return Err(DrillError::NoStoreCut);
    }
    let admin = Arc::new(Admin::new(&target.admin, &target.token));
    // The admin API answers and takes the token before any traffic.
    admin.fault(&target.route, None).await?;
    let client = LoadClient::new(target.url.clone(), false, None)?;
    let started = Instant::now();
    let observed = Arc::new(Mutex::new(Observed::default()));
    let scraper = {
        let (admin, observed, watched) = (
            Arc::clone(&admin),
            Arc::clone(&observed),
            target.breakers.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                if let Some(seen) = admin.any_open(&watched).await {
                    record(&observed, started, seen);
                }
            }
        })
    };
    let result = phases(
        &admin,
        target,
        schedule,
        options,
        cut.as_ref(),
        &client,
        started,
        &observed,
        &progress,
    )
    .await;
    // Whatever happened: no fault left running, no store left cut.
    let stopped = admin.fault(&target.route, None).await;
    if let Some(cut) = &cut {
        cut(false);
    }
    // A last look at the breakers, for the last phase's recovery.
    if let Some(seen) = admin.any_open(&target.breakers).await {
        record(&observed, started, seen);
    }
    scraper.abort();
    let (reports, bounds, histograms) = result?;
    stopped?;
    let observed = std::mem::take(&mut *observed.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Report::new(
        target, schedule, options, reports, bounds, histograms, observed,
    ))
}

/// Records one look at `/metrics`: (a watched breaker open, store degraded).
fn record(observed: &Mutex<Observed>, started: Instant, (open, degraded): (bool, bool)) {
    let at = started.elapsed();
    let mut o = observed.lock().unwrap_or_else(|e| e.into_inner());
    o.states.push((at, open));
    o.store.push((at, degraded));
}

type Ran = (
    Vec<loadgen::Report>,
    Vec<(Duration, Duration)>,
    Vec<Arc<LatencyHistogram>>,
);

#[allow(clippy::too_many_arguments)]
async fn phases(
    admin: &Admin,
    target: &Target,
    schedule: &[Phase],
    options: &Options,
    cut: Option<&StoreCut>,
    client: &LoadClient,
    started: Instant,
    observed: &Arc<Mutex<Observed>>,
    progress: &impl Fn(Progress),
) -> Result<Ran, DrillError> {
    let mut reports = Vec::new();
    let mut bounds = Vec::new();
    let mut histograms = Vec::new();
    for (i, phase) in schedule.iter().enumerate() {
        progress(Progress {
            phase: i,
            phases: schedule.len(),
            text: phase.to_string(),
            lasts: phase.duration,
        });
        let seed = options.seed.wrapping_add(i as u64);
        admin
            .fault(
                &target.route,
                phase.fault.config(seed, phase.duration).as_ref(),
            )
            .await?;
        if let Some(cut) = cut {
            cut(phase.fault == Fault::Cut);
        }
        let from = started.elapsed();
        let recorder = Arc::clone(observed);
        let check: loadgen::Check = Arc::new(move |parts: &http::response::Parts| {
            let bucket = (started.elapsed().as_nanos() / BUCKET.as_nanos()) as u64;
            let policy = parts
                .headers
                .get(loadgen::POLICY_HEADER)
                .and_then(|v| v.to_str().ok());
            let mut o = recorder.lock().unwrap_or_else(|e| e.into_inner());
            let b = o.buckets.entry(bucket).or_default();
            let ok = parts.status.is_success() || parts.status.is_redirection();
            match policy {
                None if ok => b.upstream_ok += 1,
                None => b.upstream_error += 1,
                Some("chaos") => b.injected += 1,
                Some("circuit_breaker") => b.rejected += 1,
                Some(_) => b.other += 1,
            }
            Ok(())
        });
        let run = FixedRate {
            deadline: options.deadline,
            check: Some(check),
            ..FixedRate::new(target.url.clone(), options.rate, phase.duration)
        };
        let report = loadgen::fixed_rate_on(client, &run).await?;
        let latency = Arc::new(LatencyHistogram::new());
        latency.merge(&report.latency);
        histograms.push(latency);
        bounds.push((from, started.elapsed()));
        reports.push(report);
    }
    Ok((reports, bounds, histograms))
}

impl Report {
    fn new(
        target: &Target,
        schedule: &[Phase],
        options: &Options,
        runs: Vec<loadgen::Report>,
        bounds: Vec<(Duration, Duration)>,
        histograms: Vec<Arc<LatencyHistogram>>,
        observed: Observed,
    ) -> Report {
        let states = observed.states;
        let mut phases = Vec::new();
        for (i, (phase, run)) in schedule.iter().zip(&runs).enumerate() {
            let (from, to) = bounds[i];
            let mut by_policy = BTreeMap::new();
            let mut errors = run.failed();
            let mut reached = 0;
            for ((status, policy), n) in &run.by_status_and_policy {
                if !(200..400).contains(status) {
                    errors += n;
                }
                if policy == "-" {
                    reached += n;
                } else {
                    *by_policy.entry(policy.clone()).or_insert(0) += n;
                }
            }
            let tripped_after_s = phase.fault.injects().then(|| {
                states
                    .iter()
                    .find(|(t, open)| *open && *t >= from && *t <= to)
                    .map(|(t, _)| (*t - from).as_secs_f64())
            });
            let recovered_after_s = phase.fault.injects().then(|| {
                let opened = states
                    .iter()
                    .any(|(t, open)| *open && *t >= from && *t <= to);
                if !opened {
                    return Some(0.0);
                }
                states
                    .iter()
                    .find(|(t, open)| !*open && *t >= to)
                    .map(|(t, _)| (*t - to).as_secs_f64())
            });
            let store_degraded_after_s = (phase.fault == Fault::Cut)
                .then(|| {
                    observed
                        .store
                        .iter()
                        .find(|(t, d)| *d && *t >= from && *t <= to)
                        .map(|(t, _)| (*t - from).as_secs_f64())
                })
                .flatten();
            let l = &histograms[i];
            phases.push(PhaseReport {
                phase: phase.to_string(),
                kind: phase.fault.name(),
                sent: run.sent,
                answered: run.completed(),
                errors,
                error_rate: if run.sent == 0 {
                    0.0
                } else {
                    errors as f64 / run.sent as f64
                },
                reached,
                by_policy,
                failed: run
                    .errors
                    .iter()
                    .map(|(k, n)| (k.to_string(), *n))
                    .collect(),
                times: PhaseTimes {
                    p50_ms: ms(l.percentile(0.5)),
                    p90_ms: ms(l.percentile(0.9)),
                    p99_ms: ms(l.percentile(0.99)),
                    max_ms: ms(l.max()),
                    tripped_after_s: tripped_after_s.flatten(),
                    recovered_after_s: recovered_after_s.flatten(),
                    store_degraded_after_s,
                },
            });
        }
        let end = bounds
            .last()
            .map_or(0, |b| (b.1.as_nanos() / BUCKET.as_nanos()) as u64);
        let timeline = (0..=end)
            .map(|k| observed.buckets.get(&k).copied().unwrap_or_default())
            .collect();
        let mut report = Report {
            route: target.route.clone(),
            rate: options.rate,
            seed: options.seed,
            phases,
            slos: Vec::new(),
            passed: true,
            timeline,
            bounds,
            states,
            histograms,
        };
        report.slos = options.slos.iter().map(|s| report.judge(s)).collect();
        report.passed = report.slos.iter().all(|v| v.held);
        report
    }

    /// The phases an SLO is judged over, each with its index.
    fn scoped<'a>(&'a self, slo: &'a Slo) -> impl Iterator<Item = (usize, &'a PhaseReport)> + 'a {
        self.phases
            .iter()
            .enumerate()
            .filter(move |(_, p)| slo.scope.as_deref().is_none_or(|s| s == p.kind))
    }

    fn judge(&self, slo: &Slo) -> Verdict {
        let verdict = |held: bool, observed: String| Verdict {
            slo: slo.text.clone(),
            held,
            observed,
        };
        match slo.metric {
            Metric::Errors => {
                // Unscoped: the whole run; scoped: each phase of the kind.
                let worst = if slo.scope.is_none() {
                    let (e, n) = self
                        .phases
                        .iter()
                        .fold((0, 0), |(e, n), p| (e + p.errors, n + p.sent));
                    if n == 0 {
                        0.0
                    } else {
                        e as f64 / n as f64
                    }
                } else {
                    self.scoped(slo)
                        .map(|(_, p)| p.error_rate)
                        .fold(0.0, f64::max)
                };
                verdict(worst <= slo.bound + 1e-12, format!("{:.2}%", worst * 100.0))
            }
            Metric::P50 | Metric::P90 | Metric::P99 | Metric::Max => {
                let q = |h: &LatencyHistogram| match slo.metric {
                    Metric::P50 => h.percentile(0.5),
                    Metric::P90 => h.percentile(0.9),
                    Metric::P99 => h.percentile(0.99),
                    _ => h.max(),
                };
                let worst = if slo.scope.is_none() {
                    let all = LatencyHistogram::new();
                    for h in &self.histograms {
                        all.merge(h);
                    }
                    q(&all)
                } else {
                    self.scoped(slo)
                        .map(|(i, _)| q(&self.histograms[i]))
                        .max()
                        .unwrap_or_default()
                };
                verdict(worst.as_secs_f64() <= slo.bound, format!("{}ms", ms(worst)))
            }
            Metric::Trip | Metric::Recover => {
                let mut worst: Option<f64> = Some(0.0);
                let mut any = false;
                for (_, p) in self
                    .scoped(slo)
                    .filter(|(_, p)| p.kind != "ok" && p.kind != "cut")
                {
                    any = true;
                    let v = if slo.metric == Metric::Trip {
                        p.times.tripped_after_s
                    } else {
                        p.times.recovered_after_s
                    };
                    worst = match (worst, v) {
                        (Some(w), Some(v)) => Some(w.max(v)),
                        _ => None,
                    };
                }
                match worst {
                    _ if !any => verdict(false, "no fault phase to judge".into()),
                    Some(w) => verdict(w <= slo.bound, format!("{w:.2}s")),
                    None if slo.metric == Metric::Trip => {
                        verdict(false, "no breaker opened".into())
                    }
                    None => verdict(false, "a breaker still open at the end".into()),
                }
            }
        }
    }

    /// The report as a table, with the verdicts under it.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<24} {:>7} {:>7} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9}",
            "phase", "sent", "errors", "err %", "p50", "p99", "reached", "tripped", "recovered"
        );
        let secs = |v: Option<f64>, fault: bool| match (fault, v) {
            (false, _) => "-".to_string(),
            (true, Some(v)) => format!("{v:.2}s"),
            (true, None) => "never".to_string(),
        };
        for p in &self.phases {
            let fault = p.kind != "ok" && p.kind != "cut";
            let _ = writeln!(
                out,
                "{:<24} {:>7} {:>7} {:>7.2}% {:>7.1}ms {:>7.1}ms {:>8} {:>8} {:>9}",
                p.phase,
                p.sent,
                p.errors,
                p.error_rate * 100.0,
                p.times.p50_ms,
                p.times.p99_ms,
                p.reached,
                secs(p.times.tripped_after_s, fault),
                secs(p.times.recovered_after_s, fault),
            );
        }
        for p in self.phases.iter().filter(|p| p.kind == "cut") {
            let _ = match p.times.store_degraded_after_s {
                Some(s) => writeln!(
                    out,
                    "{}: the proxy saw its store degraded after {s:.2}s",
                    p.phase
                ),
                None => writeln!(
                    out,
                    "{}: the proxy never reported its store degraded",
                    p.phase
                ),
            };
        }
        if !self.slos.is_empty() {
            out.push('\n');
            for v in &self.slos {
                let _ = writeln!(
                    out,
                    "{} {:<24} observed {}",
                    if v.held { "held  " } else { "MISSED" },
                    v.slo,
                    v.observed
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_states_are_read_from_metrics_text() {
        let text = "\
# TYPE ripcord_breaker_state gauge
ripcord_breaker_state{name=\"app\",state=\"closed\"} 0
ripcord_breaker_state{name=\"app\",state=\"open\"} 1
ripcord_breaker_state{name=\"other\",state=\"open\"} 0
";
        assert!(open_in(text, &[]));
        assert!(open_in(text, &["app".into()]));
        assert!(!open_in(text, &["other".into()]));
        assert!(!open_in(
            "ripcord_breaker_state{name=\"app\",state=\"closed\"} 1\n",
            &[]
        ));
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
