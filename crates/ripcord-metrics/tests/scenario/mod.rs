//! The scenarios the exporter tests drive, and a strict reader of the
//! Prometheus text format.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ripcord::{
    Backoff, Bulkhead, CircuitBreaker, Error, Fallback, ManualClock, Outcome, Pipeline, Retry,
    State, TimeoutPolicy, TokioClock, Window,
};
use ripcord_metrics::Metrics;
use tokio::time::{sleep, Instant};

pub const MS: Duration = Duration::from_millis(1);

/// Points of the breaker scenario where the caller may look at the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// Closed, two failures in: failure rate 0.4, slow rate 0.2, 5 calls.
    BeforeTrip,
    /// Half-open, during the first probe.
    Probing,
    /// Closed again, one success in the new window.
    End,
}

/// Drives the breaker `payments` (instrumented and watched by `metrics`, on a
/// manual clock) through a trip and a recovery:
///
/// | step | outcome | took |
/// |---|---|---|
/// | 2 calls | success | 20 ms each |
/// | 1 call | slow success | 1 s (slow threshold 800 ms) |
/// | 1 call | ignored | 5 ms |
/// | 2 calls | failure | 100 ms each — then [`Checkpoint::BeforeTrip`] |
/// | 1 call | failure | 100 ms: 3 of 6 failed, the 50 % rule trips it |
/// | 2 calls | rejected (open) | — |
/// | 10 s later: probe 1 | success | 10 ms ([`Checkpoint::Probing`] inside it) |
/// | probe 2 | success | 10 ms: closes it |
/// | 1 call | success | 20 ms — then [`Checkpoint::End`] |
pub fn breaker_scenario(metrics: &Metrics, mut checkpoint: impl FnMut(Checkpoint)) {
    let clock = ManualClock::new();
    let breaker = metrics
        .breaker(
            CircuitBreaker::builder("payments")
                .failure_rate(0.5)
                .minimum_calls(4)
                .window(Window::count(10))
                .slow_calls(800 * MS, 1.0)
                .open_for(Backoff::fixed(Duration::from_secs(10)))
                .half_open_calls(2)
                .clock(clock.clone()),
        )
        .unwrap();
    let call = |took: Duration, outcome: Outcome| {
        let c = clock.clone();
        breaker.call_sync_classified(&move |_: &Result<(), ()>| outcome, move || {
            c.advance(took);
            Ok(())
        })
    };

    call(20 * MS, Outcome::Success).unwrap();
    call(20 * MS, Outcome::Success).unwrap();
    call(1000 * MS, Outcome::Success).unwrap();
    call(5 * MS, Outcome::Ignored).unwrap();
    call(100 * MS, Outcome::Failure).unwrap();
    call(100 * MS, Outcome::Failure).unwrap();
    assert_eq!(breaker.state(), State::Closed);
    checkpoint(Checkpoint::BeforeTrip);

    call(100 * MS, Outcome::Failure).unwrap();
    assert_eq!(breaker.state(), State::Open);
    for _ in 0..2 {
        assert!(matches!(
            call(MS, Outcome::Success),
            Err(Error::Rejected(_))
        ));
    }

    clock.advance(Duration::from_secs(10));
    let c = clock.clone();
    breaker
        .call_sync(|| {
            assert_eq!(breaker.state(), State::HalfOpen);
            checkpoint(Checkpoint::Probing);
            c.advance(10 * MS);
            Ok::<_, ()>(())
        })
        .unwrap();
    call(10 * MS, Outcome::Success).unwrap();
    assert_eq!(breaker.state(), State::Closed);
    call(20 * MS, Outcome::Success).unwrap();
    checkpoint(Checkpoint::End);
}

/// One parsed exposition: samples by `name{labels}` (labels as written).
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: BTreeMap<String, f64>,
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of one series, written `name{k="v",...}` as rendered.
    #[track_caller]
    pub fn get(&self, series: &str) -> f64 {
        match self.samples.get(series) {
            Some(v) => *v,
            None => panic!("no series {series}"),
        }
    }

    /// Every series of a family (`name` or `name_bucket` etc.), sorted.
    pub fn family(&self, name: &str) -> Vec<(String, f64)> {
        self.samples
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Parses `text` strictly (the Prometheus text format 0.0.4): every line must
/// be a `# HELP`, a `# TYPE` or a sample; names and label names must be
/// valid, label values correctly escaped, values numbers; a family's `# TYPE`
/// comes once, before its samples, which are contiguous; no series twice;
/// histogram buckets are cumulative and end with `+Inf` = `_count`.
///
/// Then checks that the `prometheus-parse` crate reads the same samples.
pub fn parse(text: &str) -> Exposition {
    let strict = parse_strict(text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    cross_check(text, &strict);
    strict
}

pub fn parse_strict(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut done_families: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(err("empty line"));
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let (kw, rest) = rest.split_once(' ').ok_or_else(|| err("bad comment"))?;
            let (name, arg) = rest.split_once(' ').ok_or_else(|| err("bad comment"))?;
            if !valid_name(name) {
                return Err(err("bad metric name"));
            }
            if current.as_deref() != Some(name) {
                if let Some(c) = current.take() {
                    done_families.insert(c);
                }
                if done_families.contains(name) {
                    return Err(err("family seen before"));
                }
                current = Some(name.to_string());
            }
            match kw {
                "HELP" => {
                    if out.helps.insert(name.into(), arg.into()).is_some() {
                        return Err(err("second HELP"));
                    }
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(err("bad type"));
                    }
                    if out.types.insert(name.into(), arg.into()).is_some() {
                        return Err(err("second TYPE"));
                    }
                }
                _ => return Err(err("unknown comment keyword")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| err("no value"))?;
        let value = parse_value(value).ok_or_else(|| err("bad value"))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| err("unclosed labels"))?;
                (name, parse_labels(body).map_err(|m| err(&m))?)
            }
            None => (series, Vec::new()),
        };
        if !valid_name(name) {
            return Err(err("bad metric name"));
        }
        let family = current
            .clone()
            .ok_or_else(|| err("sample before its TYPE"))?;
        let ty = out
            .types
            .get(&family)
            .ok_or_else(|| err("sample before its TYPE"))?;
        let suffix_ok = if ty == "histogram" {
            [("_bucket"), ("_sum"), ("_count")]
                .iter()
                .any(|s| name == format!("{family}{s}"))
        } else {
            name == family
        };
        if !suffix_ok {
            return Err(err("sample not of the current family"));
        }
        if name.ends_with("_bucket") {
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .ok_or_else(|| err("bucket without le"))?;
            let le = parse_value(&le.1).ok_or_else(|| err("bad le"))?;
            let key: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            buckets
                .entry(format!("{family}{key:?}"))
                .or_default()
                .push((le, value));
        }
        if name.ends_with("_count") && ty == "histogram" {
            let key = format!("{family}{labels:?}");
            let b = buckets
                .get(&key)
                .ok_or_else(|| err("count before buckets"))?;
            if !b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
                return Err(err("buckets not cumulative"));
            }
            if b.last() != Some(&(f64::INFINITY, value)) {
                return Err(err("+Inf bucket differs from _count"));
            }
        }
        if out.samples.insert(series.to_string(), value).is_some() {
            return Err(err("duplicate series"));
        }
    }
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok().filter(|x: &f64| x.is_finite()),
    }
}

fn parse_labels(body: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if !valid_name(&key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err("label without =\"".into());
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    _ => return Err("bad escape".into()),
                },
                Some('"') => break,
                Some('\n') | None => return Err("unterminated label value".into()),
                Some(c) => value.push(c),
            }
        }
        if out.iter().any(|(k, _)| *k == key) {
            return Err(format!("label {key} twice"));
        }
        out.push((key, value));
        match chars.next() {
            None => return Ok(out),
            Some(',') => {}
            Some(c) => return Err(format!("unexpected {c:?} after a label")),
        }
    }
}

/// `prometheus-parse` must read every sample line with the same value.
/// (It splits labels on `,` and `=` and does not unescape, so a series whose
/// label values hold those characters is matched by name and value only.)
fn cross_check(text: &str, strict: &Exposition) {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads the exposition");
    let mut by_labels: BTreeMap<(String, BTreeMap<String, String>), f64> = BTreeMap::new();
    let mut awkward: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (series, value) in &strict.samples {
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(&rest[..rest.len() - 1]).unwrap()),
            None => (series.as_str(), Vec::new()),
        };
        if labels
            .iter()
            .any(|(_, v)| v.contains([',', '=', '\\', '"', '\n']))
        {
            awkward.entry(name.to_string()).or_default().push(*value);
        }
        by_labels.insert((name.to_string(), labels.into_iter().collect()), *value);
    }
    let mut simple = 0;
    let mut histogram_points = 0;
    for s in &scrape.samples {
        match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => {
                simple += 1;
                let labels: BTreeMap<String, String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                match by_labels.get(&(s.metric.clone(), labels)) {
                    Some(sv) => assert!((sv - v).abs() < 1e-12, "{s:?}: strict read {sv}"),
                    None => assert!(
                        awkward.get(&s.metric).is_some_and(|vs| vs.contains(v)),
                        "prometheus-parse read {s:?}, not in the strict parse"
                    ),
                }
            }
            prometheus_parse::Value::Histogram(h) => histogram_points += h.len(),
            prometheus_parse::Value::Summary(_) => panic!("no summaries are exported"),
        }
    }
    let strict_buckets = strict
        .samples
        .keys()
        .filter(|k| k.contains("_bucket{"))
        .count();
    assert_eq!(
        histogram_points, strict_buckets,
        "every bucket line was read"
    );
    let strict_simple = strict
        .samples
        .keys()
        .filter(|k| !k.contains("_bucket{"))
        .count();
    // _sum and _count lines are plain samples to prometheus-parse too.
    assert_eq!(simple, strict_simple, "every sample line was read");
}

/// Drives the pipeline `checkout` — fallback → retry (3 attempts, 10 ms
/// apart) → timeout (200 ms per attempt) → breaker (3 failures in a row,
/// open 60 s, 1 probe) → bulkhead — on tokio's paused time. Every policy is
/// named `checkout` and instrumented through the pipeline builder's
/// listener; the pipeline is watched.
///
/// 1. The dependency is down: attempt 1 fails after 1 ms, attempt 2 hangs
///    and times out at 200 ms, attempt 3 fails after 1 ms and trips the
///    breaker; the retries are exhausted and the fallback answers 0.
/// 2. The dependency is back: attempt 1 is rejected (open), the retry waits
///    for the probe (60 s), attempt 2 is the probe, succeeds in 1 ms and
///    closes the breaker.
/// 3. One more call succeeds in 1 ms.
pub async fn pipeline_scenario(metrics: &Metrics) -> Pipeline<u32, String> {
    let healthy = Arc::new(AtomicBool::new(false));
    let attempt = Arc::new(AtomicU32::new(0));
    let pipeline = Pipeline::<u32, String>::builder()
        .name("checkout")
        .clock(TokioClock::new())
        .on_event(metrics.listener())
        .fallback(Fallback::builder("checkout").then_value(0))
        .retry(
            Retry::builder("checkout")
                .max_attempts(3)
                .backoff(Backoff::fixed(10 * MS)),
        )
        .timeout(TimeoutPolicy::builder("checkout").timeout(200 * MS))
        .circuit_breaker(
            CircuitBreaker::builder("checkout")
                .consecutive_failures(3)
                .slow_calls(500 * MS, 1.0)
                .open_for(Backoff::fixed(Duration::from_secs(60)))
                .half_open_calls(1),
        )
        .bulkhead(Bulkhead::builder("checkout").max_concurrent(4))
        .build()
        .unwrap();
    metrics.watch(pipeline.clone());

    let call = || {
        let healthy = healthy.clone();
        let attempt = attempt.clone();
        move || {
            let healthy = healthy.load(Ordering::SeqCst);
            let n = attempt.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if healthy {
                    sleep(MS).await;
                    return Ok(7);
                }
                if n == 2 {
                    sleep(Duration::from_secs(3600)).await;
                }
                sleep(MS).await;
                Err(format!("attempt {n} failed"))
            }
        }
    };

    assert_eq!(
        pipeline.execute(call()).await.unwrap(),
        0,
        "the fallback answered"
    );
    let breaker = pipeline.circuit_breaker().unwrap();
    assert_eq!(breaker.state(), State::Open);

    healthy.store(true, Ordering::SeqCst);
    let start = Instant::now();
    assert_eq!(pipeline.execute(call()).await.unwrap(), 7);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(60) + MS,
        "waited for the probe"
    );
    assert_eq!(breaker.state(), State::Closed);

    assert_eq!(pipeline.execute(call()).await.unwrap(), 7);
    pipeline
}
