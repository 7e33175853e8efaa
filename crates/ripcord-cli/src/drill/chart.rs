//! The drill's timeline as an SVG chart: who answered, per 250 ms, under
//! the phases, with the time a watched breaker was open shaded.

use std::fmt::Write as _;

use super::{Report, BUCKET};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 48.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 44.0;

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The report's timeline as a standalone SVG document.
pub fn svg(report: &Report) -> String {
    let total = report
        .bounds
        .last()
        .map_or(1.0, |b| b.1.as_secs_f64())
        .max(0.001);
    let plot_w = WIDTH - LEFT - 16.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |secs: f64| LEFT + secs / total * plot_w;
    let per = BUCKET.as_secs_f64();
    let peak = report
        .timeline
        .iter()
        .map(|b| b.upstream_ok + b.upstream_error + b.injected + b.rejected + b.other)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="#0f172a"/>
<text x="{LEFT}" y="16" fill="#e2e8f0" font-size="13">ripcord drill: route {route}, {rate} requests/s</text>
"##,
        route = esc(&report.route),
        rate = report.rate
    );
    // Phases: bands and labels.
    for (i, (p, (from, to))) in report.phases.iter().zip(&report.bounds).enumerate() {
        let (a, b) = (x(from.as_secs_f64()), x(to.as_secs_f64()));
        let fill = if p.kind == "ok" { "#1e293b" } else { "#3b2f1b" };
        let _ = writeln!(
            s,
            r#"<rect x="{a:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="{fill}"/>"#,
            (b - a).max(0.5)
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#cbd5e1">{}</text>"##,
            a + 3.0,
            TOP - 6.0 + if i % 2 == 1 { 0.0 } else { -10.0 } + 10.0,
            esc(&p.phase)
        );
    }
    // The time a watched breaker was open.
    let mut open_from = None;
    for (t, open) in &report.states {
        match (open_from, *open) {
            (None, true) => open_from = Some(t.as_secs_f64()),
            (Some(a), false) => {
                let _ = writeln!(
                    s,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="6" fill="#ef4444"/>"##,
                    x(a),
                    TOP + plot_h + 4.0,
                    (x(t.as_secs_f64()) - x(a)).max(0.5)
                );
                open_from = None;
            }
            _ => {}
        }
    }
    if let Some(a) = open_from {
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="6" fill="#ef4444"/>"##,
            x(a),
            TOP + plot_h + 4.0,
            (x(total) - x(a)).max(0.5)
        );
    }
    // Stacked bars, one per bucket.
    let bar_w = (per / total * plot_w).max(0.5);
    for (k, b) in report.timeline.iter().enumerate() {
        let mut y = TOP + plot_h;
        let bx = x(k as f64 * per);
        for (n, color) in [
            (b.upstream_ok, "#22c55e"),
            (b.upstream_error, "#f97316"),
            (b.injected, "#a855f7"),
            (b.rejected, "#ef4444"),
            (b.other, "#94a3b8"),
        ] {
            if n == 0 {
                continue;
            }
            let h = n as f64 / peak * plot_h;
            y -= h;
            let _ = writeln!(
                s,
                r#"<rect x="{bx:.1}" y="{y:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{color}"/>"#
            );
        }
    }
    // Axis and legend.
    let _ = writeln!(
        s,
        r##"<text x="4" y="{:.1}" fill="#94a3b8">{:.0}/s</text>"##,
        TOP + 10.0,
        peak / per
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{:.1}" fill="#94a3b8">0s</text><text x="{:.1}" y="{:.1}" fill="#94a3b8" text-anchor="end">{:.0}s</text>"##,
        HEIGHT - 20.0,
        WIDTH - 16.0,
        HEIGHT - 20.0,
        total
    );
    let mut lx = LEFT + 60.0;
    for (label, color) in [
        ("upstream ok", "#22c55e"),
        ("upstream error", "#f97316"),
        ("injected", "#a855f7"),
        ("breaker rejected", "#ef4444"),
        ("other policy", "#94a3b8"),
        ("breaker open (bar below)", "#ef4444"),
    ] {
        let _ = writeln!(
            s,
            r##"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}" fill="#cbd5e1">{label}</text>"##,
            HEIGHT - 29.0,
            lx + 14.0,
            HEIGHT - 20.0
        );
        lx += 16.0 + label.len() as f64 * 6.2;
    }
    s.push_str("</svg>\n");
    s
}
