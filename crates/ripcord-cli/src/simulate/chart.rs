//! The chart: the trace's failure rate and latency over time, and beneath it
//! one band per configuration coloured by the breaker's state.
//!
//! Written as plain SVG text: a line chart and some rectangles need no plotting
//! library, the output is byte-for-byte deterministic, and every series carries
//! an `id` and a `class` that tests (and stylesheets) can find.

use std::fmt::Write;

use super::replay::Report;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 40.0;
const PLOT_H: f64 = 220.0;
const BAND_H: f64 = 22.0;
const BAND_GAP: f64 = 8.0;

fn state_colour(state: &str) -> &'static str {
    match state {
        "closed" => "#3a9d5d",
        "open" => "#d64545",
        "half_open" => "#e8a33d",
        "forced_open" => "#7a1f1f",
        _ => "#9aa0a6",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Draws `report` as an SVG document.
pub fn render(report: &Report) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let n = report.configs.len() as f64;
    let bands_top = TOP + PLOT_H + 40.0;
    let height = bands_top + n * (BAND_H + BAND_GAP) + 50.0;
    let span = report
        .trace
        .duration
        .max(report.series.buckets.len() as f64 * report.series.width as f64 / 1e9)
        .max(1e-3);
    let x = |t: f64| LEFT + (t / span).clamp(0.0, 1.0) * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">ripcord simulate: {} calls over {:.1} s</text>"#,
        report.trace.calls, report.trace.duration
    );
    // Outages, shaded behind everything.
    for (i, o) in report.outages.iter().enumerate() {
        let x0 = x(o.start);
        let x1 = x(o.end.unwrap_or(span));
        let h = bands_top + n * (BAND_H + BAND_GAP) - TOP;
        let _ = writeln!(
            s,
            r##"<rect class="outage" id="outage-{i}" x="{x0:.1}" y="{TOP}" width="{:.1}" height="{h:.1}" fill="#000" fill-opacity="0.07"/>"##,
            (x1 - x0).max(0.5)
        );
    }
    // Axes and grid.
    let bottom = TOP + PLOT_H;
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{PLOT_H}" fill="none" stroke="#888"/>"##
    );
    let max_latency = report
        .series
        .buckets
        .iter()
        .filter(|b| b.calls > 0)
        .map(|b| b.latency_ms / f64::from(b.calls))
        .fold(0.0f64, f64::max);
    let lat_top = nice_ceiling(max_latency.max(1.0));
    for k in 0..=4 {
        let y = bottom - PLOT_H * f64::from(k) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#c0392b">{}%</text><text x="{:.1}" y="{:.1}" fill="#2e6db4">{} ms</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            k * 25,
            LEFT + plot_w + 6.0,
            y + 4.0,
            fmt_num(lat_top * f64::from(k) / 4.0)
        );
    }
    let step = nice_ceiling(span / 6.0);
    let mut k = 0.0;
    while k * step <= span + 1e-9 {
        let t = k * step;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">{} s</text>"##,
            x(t),
            bottom + 16.0,
            fmt_num(t)
        );
        k += 1.0;
    }
    // The two series.
    let width_s = report.series.width as f64 / 1e9;
    let mut fail = String::new();
    let mut lat = String::new();
    for (i, b) in report.series.buckets.iter().enumerate() {
        if b.calls == 0 {
            continue;
        }
        let t = (i as f64 + 0.5) * width_s;
        let fr = f64::from(b.failures) / f64::from(b.calls);
        let l = b.latency_ms / f64::from(b.calls);
        let cmd = if fail.is_empty() { 'M' } else { 'L' };
        let _ = write!(fail, "{cmd}{:.1},{:.1} ", x(t), bottom - fr * PLOT_H);
        let _ = write!(
            lat,
            "{cmd}{:.1},{:.1} ",
            x(t),
            bottom - (l / lat_top) * PLOT_H
        );
    }
    let _ = writeln!(
        s,
        r##"<path class="series" id="failure-rate" d="{}" fill="none" stroke="#c0392b" stroke-width="1.5"/>"##,
        fail.trim_end()
    );
    let _ = writeln!(
        s,
        r##"<path class="series" id="latency" d="{}" fill="none" stroke="#2e6db4" stroke-width="1.5"/>"##,
        lat.trim_end()
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{:.1}" fill="#c0392b">— failure rate</text><text x="{:.1}" y="{:.1}" fill="#2e6db4">— mean latency</text>"##,
        TOP - 6.0,
        LEFT + 110.0,
        TOP - 6.0
    );
    // One band per configuration.
    for (i, c) in report.configs.iter().enumerate() {
        let y = bands_top + i as f64 * (BAND_H + BAND_GAP);
        let _ = writeln!(
            s,
            r#"<g class="band" id="band-{i}" data-config="{}" shape-rendering="crispEdges">"#,
            escape(&c.name)
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#222">{}</text>"##,
            LEFT - 6.0,
            y + BAND_H / 2.0 + 4.0,
            escape(&c.name)
        );
        let mut state = "closed";
        let mut from = 0.0;
        for t in c
            .transitions
            .iter()
            .chain(std::iter::once(&super::replay::Transition {
                at: span,
                from: "",
                to: "closed",
                reason: String::new(),
            }))
        {
            let (x0, x1) = (x(from), x(t.at));
            if x1 > x0 {
                let _ = writeln!(
                    s,
                    r#"<rect class="state {state}" x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{BAND_H}" fill="{}"/>"#,
                    x1 - x0,
                    state_colour(state)
                );
            }
            state = t.to;
            from = t.at;
        }
        let _ = writeln!(s, "</g>");
    }
    // Legend of states.
    let legend_y = bands_top + n * (BAND_H + BAND_GAP) + 20.0;
    for (k, st) in ["closed", "open", "half_open"].iter().enumerate() {
        let lx = LEFT + k as f64 * 110.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="14" fill="{}"/><text x="{:.1}" y="{legend_y:.1}">{}</text>"#,
            legend_y - 11.0,
            state_colour(st),
            lx + 20.0,
            st.replace('_', "-")
        );
    }
    if !report.outages.is_empty() {
        let lx = LEFT + 330.0;
        let _ = writeln!(
            s,
            r##"<rect x="{lx:.1}" y="{:.1}" width="14" height="14" fill="#000" fill-opacity="0.12"/><text x="{:.1}" y="{legend_y:.1}">outage</text>"##,
            legend_y - 11.0,
            lx + 20.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 || v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}
