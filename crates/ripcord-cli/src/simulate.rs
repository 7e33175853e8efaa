//! `ripcord simulate`: replay a traffic trace through one or more breaker
//! configurations and see what each would have done.
//!
//! The calls come from a trace file ([`trace`]: CSV or JSON Lines, streamed) or
//! a synthetic [`scenario`]; each configuration gets its own real
//! [`ripcord::CircuitBreaker`] on a [`ripcord::ManualClock`] ([`mod@replay`]), so a
//! replay is deterministic and runs as fast as the trace can be read. The
//! result is a [`Report`]: per configuration the time to trip after the outage
//! began, failed calls that reached the dependency, healthy calls rejected,
//! probes sent and the time to recover; printed as a table or JSON, and drawn
//! by [`chart`].

use ripcord::pipeline::PolicyConfig;
use ripcord::{CircuitBreakerConfig, PipelineConfig};

pub mod chart;
pub mod replay;
pub mod scenario;
pub mod trace;

pub use replay::{replay, NamedConfig, OutageRule, ReplayError, ReplayOptions, Report};
pub use scenario::Scenario;
pub use trace::{Call, TraceError, TraceFormat, TraceReader};

/// Reads a breaker configuration from TOML text: either a bare
/// [`CircuitBreakerConfig`] table, or a [`PipelineConfig`] (e.g. a proxy
/// route's, with a `[circuit_breaker]` table or a `kind = "circuit_breaker"`
/// policy), whose breaker is taken.
pub fn parse_config(text: &str) -> Result<CircuitBreakerConfig, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let pipeline = table.contains_key("policy") || table.contains_key("order");
    if pipeline {
        let p: PipelineConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        p.policies
            .into_iter()
            .find_map(|p| match p {
                PolicyConfig::CircuitBreaker(c) => Some(c),
                _ => None,
            })
            .ok_or_else(|| "the pipeline has no circuit_breaker policy".to_owned())
    } else if let Some(breaker) = table.get("circuit_breaker") {
        // A pipeline's `[circuit_breaker]` table on its own.
        breaker
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| format!("[circuit_breaker]: {e}"))
    } else {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

fn opt_secs(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |s| format!("{s:.3} s"))
}

/// The report as a table.
pub fn table(report: &Report) -> String {
    let mut s = String::new();
    let t = &report.trace;
    s.push_str(&format!(
        "trace: {} calls ({} failed, {} ignored) over {:.3} s\n",
        t.calls, t.failures, t.ignored, t.duration
    ));
    if report.outages.is_empty() {
        s.push_str("outages: none\n");
    }
    for o in &report.outages {
        s.push_str(&format!(
            "outage: {:.3} s → {}\n",
            o.start,
            o.end
                .map_or_else(|| "end of trace".to_owned(), |e| format!("{e:.3} s"))
        ));
    }
    s.push('\n');
    let header = [
        "config",
        "time to trip",
        "time to recover",
        "failed reached",
        "healthy rejected",
        "probes",
        "trips",
        "rejected",
    ];
    let rows: Vec<[String; 8]> = report
        .configs
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                opt_secs(c.time_to_trip),
                opt_secs(c.time_to_recover),
                c.failed_calls_reached.to_string(),
                c.healthy_rejected.to_string(),
                c.probes.to_string(),
                c.trips.to_string(),
                c.rejected.to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            if i == 0 {
                l.push_str(cell);
                l.push_str(&" ".repeat(pad));
            } else {
                l.push_str("  ");
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            }
        }
        l.push('\n');
        l
    };
    s.push_str(&line(header.to_vec()));
    for r in &rows {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}
