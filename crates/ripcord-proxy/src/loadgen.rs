//! A small HTTP load generator: open-loop at a fixed rate for a bounded time
//! ([`fixed_rate`]), or closed-loop with a fixed number of workers for a fixed
//! number of requests ([`closed_loop`]), over one keep-alive connection pool.
//!
//! It records every response by status and by the `x-ripcord-policy` header
//! (which policy of the proxy answered, if any), errors by kind, and the
//! latency of every completed request (headers and whole body) in a
//! log-linear histogram ([`LatencyHistogram`], about 1.5 % resolution). A
//! request that does not complete within its deadline counts as a
//! [`ErrorKind::Deadline`] error, so nothing can hang a run.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The header the proxy puts on the responses it makes itself.
pub const POLICY_HEADER: &str = "x-ripcord-policy";

/// A check of each response's head; an `Err` counts the response as wrong and
/// keeps the message (the first few) for the report.
pub type Check = Arc<dyn Fn(&http::response::Parts) -> Result<(), String> + Send + Sync>;

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target is not an absolute `http://` URI.
    #[error("invalid target `{0}`: an absolute http:// URI such as http://127.0.0.1:8080/path")]
    Target(String),
    /// An option is out of range.
    #[error("invalid {option} {value}: {expected}")]
    Option {
        /// The option.
        option: &'static str,
        /// Its value.
        value: String,
        /// What it accepts.
        expected: &'static str,
    },
}

/// The kinds of request errors a run tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The connection could not be made.
    Connect,
    /// The request failed before a response head arrived (connection reset,
    /// malformed response).
    Request,
    /// The response head arrived but the body broke off.
    Body,
    /// No complete response within the per-request deadline.
    Deadline,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Request => "request",
            ErrorKind::Body => "body",
            ErrorKind::Deadline => "deadline",
        })
    }
}

/// A log-linear latency histogram over microseconds, safe to record into
/// from many tasks at once (atomic counts, no lock).
///
/// Values below 64 µs are exact; above, every power-of-two range is split
/// into 64 buckets, so a reported percentile is within about 1.5 % of the
/// true one. Values from about 1 hour up share the last bucket.
#[derive(Debug)]
pub struct LatencyHistogram {
    counts: Vec<AtomicU64>,
    total: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

/// Sub-buckets per power of two (and the exact range below it).
const SUB: u64 = 64;
const SUB_BITS: u32 = 6;
/// Powers of two covered above the exact range (2^6 µs to 2^32 µs ≈ 71 min).
const RANGES: u64 = 26;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        LatencyHistogram {
            counts: (0..SUB * (RANGES + 1)).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }

    fn index(us: u64) -> usize {
        if us < SUB {
            return us as usize;
        }
        let msb = 63 - us.leading_zeros(); // ≥ SUB_BITS
        let range = u64::from(msb - SUB_BITS + 1);
        if range > RANGES {
            return (SUB * (RANGES + 1) - 1) as usize;
        }
        let sub = (us >> (msb - SUB_BITS)) - SUB;
        (range * SUB + sub) as usize
    }

    /// The smallest value of bucket `i` and its width.
    fn bucket(i: usize) -> (u64, u64) {
        let i = i as u64;
        if i < SUB {
            return (i, 1);
        }
        let range = i / SUB;
        let sub = i % SUB;
        let shift = range - 1;
        ((SUB + sub) << shift, 1 << shift)
    }

    /// Records one latency.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::index(us)].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Adds every value of `other`.
    pub fn merge(&self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter().zip(&other.counts) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.total
            .fetch_add(other.total.load(Ordering::Relaxed), Ordering::Relaxed);
        self.sum_us
            .fetch_add(other.sum_us.load(Ordering::Relaxed), Ordering::Relaxed);
        self.max_us
            .fetch_max(other.max_us.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The largest value recorded.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us.load(Ordering::Relaxed))
    }

    /// The mean of the values recorded (zero when empty).
    pub fn mean(&self) -> Duration {
        let sum = self.sum_us.load(Ordering::Relaxed);
        Duration::from_micros(sum.checked_div(self.count()).unwrap_or(0))
    }

    /// The value below which a share `q` (0 to 1) of the values fall: the
    /// middle of the bucket holding that rank, never above the maximum.
    /// Zero when empty.
    pub fn percentile(&self, q: f64) -> Duration {
        let n = self.count();
        if n == 0 {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                let (low, width) = Self::bucket(i);
                let mid = low + width / 2;
                return Duration::from_micros(mid.min(self.max_us.load(Ordering::Relaxed)));
            }
        }
        self.max()
    }
}

/// A fixed-rate run: what to send, how fast, for how long.
#[derive(Clone)]
pub struct FixedRate {
    /// The URI every request goes to (absolute, `http://`).
    pub target: Uri,
    /// Requests started per second.
    pub rate: u32,
    /// How long requests are started for; the run then waits for the last
    /// ones (at most `deadline`).
    pub duration: Duration,
    /// Each request must complete (head and body) within this.
    pub deadline: Duration,
    /// At most this many requests in flight; a request due while that many
    /// are in flight is not sent and counted as [`Report::skipped`].
    pub max_in_flight: usize,
    /// An optional `Host` header value (to pick a proxy route).
    pub host: Option<String>,
    /// Speak HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
    /// An optional check of every response's head.
    pub check: Option<Check>,
}

impl fmt::Debug for FixedRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedRate")
            .field("target", &self.target)
            .field("rate", &self.rate)
            .field("duration", &self.duration)
            .field("deadline", &self.deadline)
            .field("max_in_flight", &self.max_in_flight)
            .field("host", &self.host)
            .field("http2", &self.http2)
            .field("check", &self.check.is_some())
            .finish()
    }
}

impl FixedRate {
    /// `rate` requests per second to `target` for `duration`, each within 5 s,
    /// at most 10 000 in flight.
    pub fn new(target: Uri, rate: u32, duration: Duration) -> Self {
        FixedRate {
            target,
            rate,
            duration,
            deadline: Duration::from_secs(5),
            max_in_flight: 10_000,
            host: None,
            http2: false,
            check: None,
        }
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests sent.
    pub sent: u64,
    /// Requests due but not sent because `max_in_flight` were in flight.
    pub skipped: u64,
    /// Complete responses, by status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Complete responses by `(status, x-ripcord-policy)`; the policy is `-`
    /// when the header is absent (the upstream answered).
    pub by_status_and_policy: BTreeMap<(u16, String), u64>,
    /// Failed requests, by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Responses the check refused.
    pub wrong: u64,
    /// The first few messages of the check.
    pub wrong_examples: Vec<String>,
    /// Latency of every complete response.
    pub latency: LatencyHistogram,
    /// From the first request sent to the last one finished.
    pub elapsed: Duration,
}

impl Report {
    /// Complete responses.
    pub fn completed(&self) -> u64 {
        self.by_status.values().sum()
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Complete responses per second of the run.
    pub fn throughput(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.completed() as f64 / self.elapsed.as_secs_f64()
        }
    }

    /// Responses that some policy answered (the header was present), by
    /// policy.
    pub fn by_policy(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((_, policy), n) in &self.by_status_and_policy {
            *out.entry(policy.clone()).or_insert(0) += n;
        }
        out
    }

    /// A few lines for a person: throughput, latency, statuses, errors.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "sent {}, completed {}, failed {}, skipped {}, {:.0} req/s; latency p50 {:?} p99 {:?} max {:?}\n",
            self.sent,
            self.completed(),
            self.failed(),
            self.skipped,
            self.throughput(),
            self.latency.percentile(0.5),
            self.latency.percentile(0.99),
            self.latency.max(),
        );
        for ((status, policy), n) in &self.by_status_and_policy {
            s.push_str(&format!("  {status} {policy:<16} {n}\n"));
        }
        for (kind, n) in &self.errors {
            s.push_str(&format!("  error {kind:<10} {n}\n"));
        }
        if self.wrong > 0 {
            s.push_str(&format!(
                "  wrong answers {}: {:?}\n",
                self.wrong, self.wrong_examples
            ));
        }
        s
    }
}

/// A shared, lock-light recorder of responses.
#[derive(Debug, Default)]
struct Recorder {
    latency: LatencyHistogram,
    tallies: Mutex<Tallies>,
}

#[derive(Debug, Default)]
struct Tallies {
    by_status_and_policy: BTreeMap<(u16, String), u64>,
    errors: BTreeMap<ErrorKind, u64>,
    wrong: u64,
    wrong_examples: Vec<String>,
}

impl Recorder {
    fn response(&self, status: u16, policy: String, latency: Duration, wrong: Option<String>) {
        self.latency.record(latency);
        let mut t = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        *t.by_status_and_policy.entry((status, policy)).or_insert(0) += 1;
        if let Some(message) = wrong {
            t.wrong += 1;
            if t.wrong_examples.len() < 10 {
                t.wrong_examples.push(message);
            }
        }
    }

    fn error(&self, kind: ErrorKind) {
        let mut t = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        *t.errors.entry(kind).or_insert(0) += 1;
    }

    /// The report of everything recorded so far.
    fn report(&self, sent: u64, skipped: u64, elapsed: Duration) -> Report {
        let t = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let latency = LatencyHistogram::new();
        latency.merge(&self.latency);
        let mut by_status = BTreeMap::new();
        for ((status, _), n) in &t.by_status_and_policy {
            *by_status.entry(*status).or_insert(0) += n;
        }
        Report {
            sent,
            skipped,
            by_status,
            by_status_and_policy: t.by_status_and_policy.clone(),
            errors: t.errors.clone(),
            wrong: t.wrong,
            wrong_examples: t.wrong_examples.clone(),
            latency,
            elapsed,
        }
    }
}

/// The HTTP client of a run: a keep-alive pool to one target.
#[derive(Clone, Debug)]
pub struct LoadClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    target: Uri,
    host: Option<HeaderValue>,
}

impl LoadClient {
    /// A client for `target` (absolute `http://` URI), HTTP/1.1 or HTTP/2
    /// with prior knowledge, with an optional `Host` header.
    pub fn new(target: Uri, http2: bool, host: Option<&str>) -> Result<Self, LoadError> {
        if target.scheme_str() != Some("http") || target.authority().is_none() {
            return Err(LoadError::Target(target.to_string()));
        }
        let host = match host {
            Some(h) => Some(HeaderValue::from_str(h).map_err(|_| LoadError::Option {
                option: "host",
                value: h.to_string(),
                expected: "a valid header value",
            })?),
            None => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(usize::MAX)
            .build(connector);
        Ok(LoadClient {
            client,
            target,
            host,
        })
    }

    /// Sends one GET and reads its whole body. Returns the status, the
    /// `x-ripcord-policy` header (`-` when absent), the head for checks, or
    /// the kind of error.
    pub async fn get(&self) -> Result<(http::response::Parts, usize), ErrorKind> {
        let mut request = Request::get(self.target.clone());
        if let Some(host) = &self.host {
            request = request.header(http::header::HOST, host.clone());
        }
        let request = request.body(Empty::new()).map_err(|_| ErrorKind::Request)?;
        let response = self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                ErrorKind::Connect
            } else {
                ErrorKind::Request
            }
        })?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map_err(|_| ErrorKind::Body)?;
        Ok((parts, bytes.to_bytes().len()))
    }
}

/// One request, recorded.
async fn one(client: &LoadClient, deadline: Duration, check: Option<&Check>, recorder: &Recorder) {
    let started = Instant::now();
    match tokio::time::timeout(deadline, client.get()).await {
        Err(_) => recorder.error(ErrorKind::Deadline),
        Ok(Err(kind)) => recorder.error(kind),
        Ok(Ok((parts, _))) => {
            let latency = started.elapsed();
            let policy = parts
                .headers
                .get(POLICY_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            let wrong = check.and_then(|c| c(&parts).err());
            recorder.response(parts.status.as_u16(), policy, latency, wrong);
        }
    }
}

/// Sends `config.rate` requests per second for `config.duration` (open loop:
/// a slow answer never delays the next request), then waits for those in
/// flight (each bounded by `config.deadline`), on a new client (so a new
/// pool of connections) for `config.target`.
pub async fn fixed_rate(config: FixedRate) -> Result<Report, LoadError> {
    let client = LoadClient::new(config.target.clone(), config.http2, config.host.as_deref())?;
    fixed_rate_on(&client, &config).await
}

/// [`fixed_rate`] over `client`'s pool, whose connections may already be
/// open (from an earlier run, say): the target, protocol and `Host` header
/// are the client's, and `config`'s are not used.
pub async fn fixed_rate_on(client: &LoadClient, config: &FixedRate) -> Result<Report, LoadError> {
    if config.rate == 0 || config.rate > 1_000_000 {
        return Err(LoadError::Option {
            option: "rate",
            value: config.rate.to_string(),
            expected: "from 1 to 1000000 requests per second",
        });
    }
    if config.deadline.is_zero() || config.max_in_flight == 0 {
        return Err(LoadError::Option {
            option: "deadline/max_in_flight",
            value: format!("{:?}/{}", config.deadline, config.max_in_flight),
            expected: "a deadline above zero and at least 1 request in flight",
        });
    }
    let recorder = Arc::new(Recorder::default());
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let (mut sent, mut skipped) = (0u64, 0u64);
    let started = Instant::now();
    // Start requests in small batches: the timer's resolution is about 1 ms.
    let tick = Duration::from_secs(1)
        .checked_div(config.rate)
        .unwrap_or(Duration::from_millis(1))
        .max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let total = (config.duration.as_secs_f64() * f64::from(config.rate)).round() as u64;
    while sent + skipped < total {
        ticker.tick().await;
        let due =
            ((started.elapsed().as_secs_f64() * f64::from(config.rate)) as u64 + 1).min(total);
        while sent + skipped < due {
            if in_flight.load(Ordering::Relaxed) >= config.max_in_flight as u64 {
                skipped += 1;
                continue;
            }
            sent += 1;
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (client, recorder, in_flight) = (
                client.clone(),
                Arc::clone(&recorder),
                Arc::clone(&in_flight),
            );
            let (deadline, check) = (config.deadline, config.check.clone());
            tasks.spawn(async move {
                one(&client, deadline, check.as_ref(), &recorder).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    Ok(recorder.report(sent, skipped, elapsed))
}

/// Sends `requests` requests with `concurrency` workers, each sending its
/// next request as soon as the previous one completes (closed loop), over
/// `client`'s pool. For throughput at a fixed concurrency.
pub async fn closed_loop(
    client: &LoadClient,
    concurrency: usize,
    requests: u64,
    deadline: Duration,
) -> Report {
    let concurrency = concurrency.max(1);
    let recorder = Arc::new(Recorder::default());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, recorder, next) = (client.clone(), Arc::clone(&recorder), Arc::clone(&next));
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                one(&client, deadline, None, &recorder).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    recorder.report(requests, 0, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for us in (0..5_000u64).chain([1 << 20, (1 << 20) + 12345, (1 << 32) - 1]) {
            let i = LatencyHistogram::index(us);
            assert!(i >= last, "{us}");
            let (low, width) = LatencyHistogram::bucket(i);
            assert!(
                low <= us && us < low + width,
                "{us} not in [{low}, +{width})"
            );
            last = i;
        }
        // Huge values share the last bucket.
        assert_eq!(
            LatencyHistogram::index(u64::MAX),
            (SUB * (RANGES + 1) - 1) as usize
        );
    }

    #[test]
    fn percentiles_are_within_the_resolution() {
        let h = LatencyHistogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 10_000);
        for (q, exact) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0)] {
            let got = h.percentile(q).as_micros() as f64;
            assert!(
                (got - exact).abs() / exact < 0.02,
                "p{} = {got} µs, expected about {exact}",
                q * 100.0
            );
        }
        assert_eq!(h.max(), Duration::from_micros(10_000));
        assert_eq!(h.percentile(1.0), Duration::from_micros(10_000));
        assert_eq!(LatencyHistogram::new().percentile(0.5), Duration::ZERO);
    }

    #[test]
    fn bad_targets_and_rates_are_refused() {
        assert!(matches!(
            LoadClient::new("https://example.org/".parse().unwrap(), false, None),
            Err(LoadError::Target(_))
        ));
        assert!(matches!(
            LoadClient::new("/relative".parse().unwrap(), false, None),
            Err(LoadError::Target(_))
        ));
    }
}
