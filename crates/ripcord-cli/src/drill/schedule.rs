//! A drill's schedule (`ok 20s, fail 30s @ 60%, slow 20s @ 1.5s, ok 30s`)
//! and its service-level objectives (`p99=250ms`, `ok.errors=1%`).

use std::fmt;
use std::time::Duration;

use ripcord::chaos::Latency;
use ripcord::ChaosConfig;
use serde::Serialize;

/// What a phase of a drill does to the route.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// Nothing: steady traffic.
    Ok,
    /// A share of requests aborted (answered 503 by the proxy).
    Fail {
        /// The share, 0 to 1.
        rate: f64,
    },
    /// A share answered 500.
    Error {
        /// The share, 0 to 1.
        rate: f64,
    },
    /// A share delayed by `latency`.
    Slow {
        /// The delay.
        #[serde(with = "ripcord::duration")]
        latency: Duration,
        /// The share, 0 to 1.
        rate: f64,
    },
    /// A share stalled until the route's timeout.
    Stall {
        /// The share, 0 to 1.
        rate: f64,
    },
    /// A share answered as a reset connection.
    Reset {
        /// The share, 0 to 1.
        rate: f64,
    },
    /// The proxy's connection to its fleet store cut (a partition).
    Cut,
}

impl Fault {
    /// The phase kind's name, as written in a schedule and in SLO scopes.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Ok => "ok",
            Fault::Fail { .. } => "fail",
            Fault::Error { .. } => "error",
            Fault::Slow { .. } => "slow",
            Fault::Stall { .. } => "stall",
            Fault::Reset { .. } => "reset",
            Fault::Cut => "cut",
        }
    }

    /// Whether the phase injects a fault into the route (a store cut does
    /// not touch the route).
    pub fn injects(&self) -> bool {
        !matches!(self, Fault::Ok | Fault::Cut)
    }

    /// The route's fault table for this phase (`None`: no fault).
    pub fn config(&self, seed: u64, lasts: Duration) -> Option<ChaosConfig> {
        let mut c = ChaosConfig {
            seed: Some(seed),
            // A safety net: the drill stops each fault itself.
            expires_after: Some(lasts + Duration::from_secs(60)),
            ..ChaosConfig::default()
        };
        match *self {
            Fault::Ok | Fault::Cut => return None,
            Fault::Fail { rate } => c.abort_rate = rate,
            Fault::Error { rate } => c.error_rate = rate,
            Fault::Slow { latency, rate } => {
                c.latency_rate = rate;
                c.latency = Some(Latency::fixed(latency));
            }
            Fault::Stall { rate } => c.stall_rate = rate,
            Fault::Reset { rate } => c.reset_rate = rate,
        }
        Some(c)
    }
}

/// One phase of a drill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// What it does.
    pub fault: Fault,
    /// How long it lasts.
    #[serde(with = "ripcord::duration")]
    pub duration: Duration,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = humantime::format_duration(self.duration);
        let pct = |r: f64| format!("{}%", (r * 1000.0).round() / 10.0);
        match self.fault {
            Fault::Ok | Fault::Cut => write!(f, "{} {d}", self.fault.name()),
            Fault::Slow { latency, rate } if rate >= 1.0 => {
                write!(f, "slow {d} @ {}", humantime::format_duration(latency))
            }
            Fault::Slow { latency, rate } => write!(
                f,
                "slow {d} @ {} @ {}",
                humantime::format_duration(latency),
                pct(rate)
            ),
            Fault::Fail { rate }
            | Fault::Error { rate }
            | Fault::Stall { rate }
            | Fault::Reset { rate } => write!(f, "{} {d} @ {}", self.fault.name(), pct(rate)),
        }
    }
}

/// Why a schedule or an SLO was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{text}`: {problem}")]
pub struct ParseError {
    what: &'static str,
    text: String,
    problem: String,
}

fn err(what: &'static str, text: &str, problem: impl Into<String>) -> ParseError {
    ParseError {
        what,
        text: text.trim().to_string(),
        problem: problem.into(),
    }
}

/// A share written `60%` or `0.6`.
fn share(what: &'static str, phase: &str, s: &str) -> Result<f64, ParseError> {
    let s = s.trim();
    let value = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse::<f64>(),
    };
    match value {
        Ok(v) if (0.0..=1.0).contains(&v) && v > 0.0 => Ok(v),
        _ => Err(err(
            what,
            phase,
            format!("`{s}` is not a share above 0 and at most 100% (e.g. `60%` or `0.6`)"),
        )),
    }
}

fn parse_duration(what: &'static str, phase: &str, s: &str) -> Result<Duration, ParseError> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        err(
            what,
            phase,
            format!(
                "`{}` is not a duration ({e}); e.g. `20s`, `1m30s`, `1.5s`",
                s.trim()
            ),
        )
    })
}

/// Parses a schedule: phases separated by commas, each `KIND DURATION`
/// with `@ SHARE` (or, for `slow`, `@ LATENCY [@ SHARE]`).
pub fn parse_schedule(text: &str) -> Result<Vec<Phase>, ParseError> {
    const KINDS: &str = "ok, fail, error, slow, stall, reset, cut";
    let mut phases = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let mut at = part.split('@');
        let head = at.next().unwrap_or_default().trim();
        let args: Vec<&str> = at.map(str::trim).collect();
        let (kind, dur) = head.split_once(char::is_whitespace).ok_or_else(|| {
            err(
                "phase",
                part,
                "expected `KIND DURATION`, e.g. `ok 20s` or `fail 30s @ 60%`",
            )
        })?;
        let duration = parse_duration("phase", part, dur)?;
        if duration.is_zero() || duration > Duration::from_secs(24 * 3600) {
            return Err(err(
                "phase",
                part,
                "a phase lasts more than zero and at most a day",
            ));
        }
        let one_share = |args: &[&str]| match args {
            [s] => share("phase", part, s),
            _ => Err(err(
                "phase",
                part,
                format!("`{kind}` takes one `@ SHARE`, e.g. `{kind} 30s @ 60%`"),
            )),
        };
        let fault = match kind {
            "ok" | "cut" if !args.is_empty() => {
                return Err(err("phase", part, format!("`{kind}` takes no `@`")))
            }
            "ok" => Fault::Ok,
            "cut" => Fault::Cut,
            "fail" => Fault::Fail {
                rate: one_share(&args)?,
            },
            "error" => Fault::Error {
                rate: one_share(&args)?,
            },
            "stall" => Fault::Stall {
                rate: one_share(&args)?,
            },
            "reset" => Fault::Reset {
                rate: one_share(&args)?,
            },
            "slow" => match args.as_slice() {
                [lat] => Fault::Slow {
                    latency: parse_duration("phase", part, lat)?,
                    rate: 1.0,
                },
                [lat, s] => Fault::Slow {
                    latency: parse_duration("phase", part, lat)?,
                    rate: share("phase", part, s)?,
                },
                _ => {
                    return Err(err(
                        "phase",
                        part,
                        "`slow` takes `@ LATENCY` and optionally `@ SHARE`, e.g. `slow 20s @ 1.5s @ 50%`",
                    ))
                }
            },
            other => {
                return Err(err(
                    "phase",
                    part,
                    format!("unknown kind `{other}`; expected one of {KINDS}"),
                ))
            }
        };
        if let Fault::Slow { latency, .. } = fault {
            if latency.is_zero() || latency > Duration::from_secs(3600) {
                return Err(err(
                    "phase",
                    part,
                    "an injected latency above zero and at most an hour",
                ));
            }
        }
        phases.push(Phase { fault, duration });
    }
    if phases.is_empty() {
        return Err(err(
            "schedule",
            text,
            "no phase; e.g. `ok 20s, fail 30s @ 60%, ok 30s`",
        ));
    }
    Ok(phases)
}

/// What an SLO bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The median latency callers saw.
    P50,
    /// The 90th percentile.
    P90,
    /// The 99th percentile.
    P99,
    /// The slowest answer.
    Max,
    /// The share of requests that failed (no 2xx or 3xx answer).
    Errors,
    /// Time from a fault's start until the breaker opened (fault phases).
    Trip,
    /// Time from a fault's end until the breaker closed again.
    Recover,
}

impl Metric {
    fn parse(s: &str) -> Option<Metric> {
        Some(match s {
            "p50" => Metric::P50,
            "p90" => Metric::P90,
            "p99" => Metric::P99,
            "max" => Metric::Max,
            "errors" => Metric::Errors,
            "trip" => Metric::Trip,
            "recover" => Metric::Recover,
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::P50 => "p50",
            Metric::P90 => "p90",
            Metric::P99 => "p99",
            Metric::Max => "max",
            Metric::Errors => "errors",
            Metric::Trip => "trip",
            Metric::Recover => "recover",
        }
    }

    /// Whether the bound is a share (else a duration).
    pub fn is_share(&self) -> bool {
        matches!(self, Metric::Errors)
    }
}

/// One service-level objective: `[SCOPE.]METRIC=BOUND`, where the scope is
/// a kind of phase (`ok`, `fail`, …): without one, latency and error
/// objectives hold over the whole run, `trip` and `recover` over every
/// fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slo {
    /// The kind of phase it is judged over, if not the whole run.
    pub scope: Option<String>,
    /// What it bounds.
    pub metric: Metric,
    /// The bound: a share (0 to 1) for `errors`, else seconds.
    pub bound: f64,
    /// As written.
    pub text: String,
}

/// Parses one SLO, e.g. `p99=250ms`, `errors=1%`, `ok.errors=0.5%`,
/// `recover=10s`.
pub fn parse_slo(text: &str) -> Result<Slo, ParseError> {
    let t = text.trim();
    let (lhs, rhs) = t.split_once('=').ok_or_else(|| {
        err(
            "SLO",
            t,
            "expected `[SCOPE.]METRIC=BOUND`, e.g. `p99=250ms` or `ok.errors=1%`",
        )
    })?;
    let (scope, metric) = match lhs.trim().split_once('.') {
        Some((s, m)) => (Some(s.trim()), m.trim()),
        None => (None, lhs.trim()),
    };
    let metric = Metric::parse(metric).ok_or_else(|| {
        err(
            "SLO",
            t,
            format!(
                "unknown metric `{metric}`; expected p50, p90, p99, max, errors, trip or recover"
            ),
        )
    })?;
    if let Some(s) = scope {
        const SCOPES: [&str; 7] = ["ok", "fail", "error", "slow", "stall", "reset", "cut"];
        if !SCOPES.contains(&s) {
            return Err(err(
                "SLO",
                t,
                format!(
                    "unknown scope `{s}`; expected a kind of phase: {}",
                    SCOPES.join(", ")
                ),
            ));
        }
    }
    let bound = if metric.is_share() {
        let rhs = rhs.trim();
        let v = match rhs.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
            None => rhs.parse::<f64>(),
        };
        match v {
            Ok(v) if (0.0..=1.0).contains(&v) => v,
            _ => {
                return Err(err(
                    "SLO",
                    t,
                    format!("`{rhs}` is not a share from 0 to 100% (e.g. `1%`)"),
                ))
            }
        }
    } else {
        parse_duration("SLO", t, rhs)?.as_secs_f64()
    };
    Ok(Slo {
        scope: scope.map(str::to_string),
        metric,
        bound,
        text: t.to_string(),
    })
}

/// Parses an SLO file: one SLO per line, `#` comments and blank lines
/// ignored.
pub fn parse_slo_file(text: &str) -> Result<Vec<Slo>, ParseError> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(parse_slo)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_print_back() {
        let s = parse_schedule(
            "ok 20s, fail 30s @ 60%, slow 20s @ 1.5s, ok 30s, stall 5s @ 0.2, cut 10s",
        )
        .unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(s[1].fault, Fault::Fail { rate: 0.6 });
        assert_eq!(
            s[2].fault,
            Fault::Slow {
                latency: Duration::from_millis(1500),
                rate: 1.0
            }
        );
        assert_eq!(s[4].fault, Fault::Stall { rate: 0.2 });
        let text: Vec<String> = s.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "ok 20s",
                "fail 30s @ 60%",
                "slow 20s @ 1s 500ms",
                "ok 30s",
                "stall 5s @ 20%",
                "cut 10s"
            ]
        );
        let c = s[1].fault.config(7, s[1].duration).unwrap();
        assert_eq!((c.abort_rate, c.seed), (0.6, Some(7)));
        c.validate().unwrap();
        assert!(s[0].fault.config(1, s[0].duration).is_none());
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (text, needle) in [
            ("", "no phase"),
            ("ok", "KIND DURATION"),
            ("ok 10x", "not a duration"),
            ("boom 10s", "unknown kind `boom`"),
            ("fail 10s", "one `@ SHARE`"),
            ("fail 10s @ 160%", "not a share"),
            ("fail 10s @ 0%", "not a share"),
            ("ok 10s @ 5%", "takes no `@`"),
            ("slow 10s", "`slow` takes"),
            ("slow 10s @ 0s", "latency above zero"),
            ("ok 0s", "more than zero"),
        ] {
            let e = parse_schedule(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn slos_parse_with_scopes_and_bounds() {
        let s = parse_slo("p99=250ms").unwrap();
        assert_eq!(
            (s.scope.as_deref(), s.metric, s.bound),
            (None, Metric::P99, 0.25)
        );
        let s = parse_slo("ok.errors=1%").unwrap();
        assert_eq!(
            (s.scope.as_deref(), s.metric, s.bound),
            (Some("ok"), Metric::Errors, 0.01)
        );
        assert_eq!(parse_slo("recover=10s").unwrap().bound, 10.0);
        for (text, needle) in [
            ("p99", "METRIC=BOUND"),
            ("p42=1s", "unknown metric"),
            ("mars.p99=1s", "unknown scope"),
            ("errors=120%", "not a share"),
            ("p99=fast", "not a duration"),
        ] {
            let e = parse_slo(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let file = parse_slo_file("# ours\np99=250ms\n\nok.errors=1%  # after a fault\n").unwrap();
        assert_eq!(file.len(), 2);
    }
}
