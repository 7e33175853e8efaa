//! Prometheus text exposition (format 0.0.4), written by hand: no client
//! library, no global registry.
//!
//! [`Metrics::render`] returns the text; [`Metrics::http_response`] wraps it
//! in an [`http::Response`] with the right content type, which axum and hyper
//! serve as it is:
//!
//! ```
//! use ripcord_metrics::Metrics;
//!
//! let metrics = Metrics::new();
//! // axum:
//! let app: axum::Router = axum::Router::new().route(
//!     "/metrics",
//!     axum::routing::get(move || {
//!         let metrics = metrics.clone();
//!         async move { metrics.http_response() }
//!     }),
//! );
//! # let _ = app;
//! ```
//!
//! With hyper, answer `Ok::<_, std::convert::Infallible>(metrics.http_response())`
//! from a `service_fn`: `String` is an `http_body::Body`.
//!
//! Families appear in the order of [`Metric::ALL`](crate::Metric::ALL), each
//! with `# HELP` and `# TYPE`; within a family, series are ordered by policy,
//! then name, with `name="other"` last. Families without series are left out.

use std::fmt::Write as _;

use crate::metric::{Metric, MetricKind};
use crate::snapshot::{Sample, Snapshot};
use crate::Metrics;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// Renders every series in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let snapshot = Snapshot::take(&self.shared, true);
        let mut out = String::with_capacity(4096);
        for metric in Metric::ALL {
            render_family(&mut out, &snapshot, metric, &self.shared.bounds_seconds);
        }
        out
    }

    /// [`render`](Self::render) as an HTTP `200 OK` response with the
    /// exposition content type: the body of a `/metrics` endpoint.
    pub fn http_response(&self) -> http::Response<String> {
        let mut response = http::Response::new(self.render());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(CONTENT_TYPE),
        );
        response
    }
}

fn render_family(out: &mut String, snapshot: &Snapshot<'_>, metric: Metric, bounds: &[f64]) {
    let name = metric.prometheus_name();
    let keys = metric.labels();
    let mut header = false;
    snapshot.visit(metric, &mut |values, value| {
        if !header {
            header = true;
            let _ = writeln!(out, "# HELP {name} {}", escape_help(metric.help()));
            let _ = writeln!(out, "# TYPE {name} {}", metric.kind().as_str());
        }
        match value {
            Sample::Counter(v) => {
                sample(out, name, "", keys, values, None);
                let _ = writeln!(out, " {v}");
            }
            Sample::Gauge(v) => {
                sample(out, name, "", keys, values, None);
                let _ = writeln!(out, " {}", float(v));
            }
            Sample::Histogram(h) => {
                debug_assert_eq!(metric.kind(), MetricKind::Histogram);
                let mut le = String::new();
                for (i, count) in h.cumulative_counts().iter().enumerate() {
                    le.clear();
                    match bounds.get(i) {
                        Some(b) => le.push_str(&float(*b)),
                        None => le.push_str("+Inf"),
                    }
                    sample(out, name, "_bucket", keys, values, Some(&le));
                    let _ = writeln!(out, " {count}");
                }
                sample(out, name, "_sum", keys, values, None);
                let _ = writeln!(out, " {}", float(h.sum_seconds()));
                sample(out, name, "_count", keys, values, None);
                let _ = writeln!(out, " {}", h.count());
            }
        }
    });
}

/// Writes `name{labels}` (no value).
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    keys: &[&str],
    values: &[&str],
    le: Option<&str>,
) {
    out.push_str(name);
    out.push_str(suffix);
    if keys.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let pairs = keys
        .iter()
        .zip(values)
        .map(|(k, v)| (*k, *v))
        .chain(le.map(|le| ("le", le)));
    for (k, v) in pairs {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label(out, v);
        out.push('"');
    }
    out.push('}');
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float as Prometheus writes it (`+Inf`, `-Inf`, `NaN`).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut out = String::new();
        sample(
            &mut out,
            "m",
            "_bucket",
            &["name"],
            &["a\"b\\c\nd"],
            Some("0.5"),
        );
        assert_eq!(out, r#"m_bucket{name="a\"b\\c\nd",le="0.5"}"#);
        let mut out = String::new();
        sample(&mut out, "m", "", &[], &[], None);
        assert_eq!(out, "m");
    }

    #[test]
    fn floats() {
        assert_eq!(float(0.005), "0.005");
        assert_eq!(float(1.0), "1");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NAN), "NaN");
    }
}
