//! The live view: a table whose last row is redrawn in place on a terminal (about
//! ten times a second), or appended once a second when the output is a pipe or a
//! file.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use ripcord::State;

use super::dependency::{Phase, FAST_LATENCY};
use super::Plan;

/// How to write to the output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    /// The output is a terminal: redraw the status row in place.
    terminal: bool,
    /// Use ANSI colours (a terminal, and `NO_COLOR` unset).
    color: bool,
}

impl Style {
    /// The style for an output that is (or is not) a terminal. Colours follow the
    /// `NO_COLOR` convention (<https://no-color.org>).
    pub(crate) fn detect(terminal: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            terminal,
            color: terminal && !no_color,
        }
    }

    /// How often the status row is refreshed.
    pub(crate) fn refresh(&self) -> Duration {
        if self.terminal {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        }
    }

    /// `text` in bold, if colours are on.
    pub(crate) fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// `text` dimmed, if colours are on.
    pub(crate) fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    /// `text` (already padded) in the colour of `state`, if colours are on.
    pub(crate) fn state(&self, state: State, text: &str) -> String {
        let code = match state {
            State::Closed => "32",
            State::HalfOpen => "33",
            State::Open | State::ForcedOpen => "31",
            _ => "36",
        };
        self.paint(code, text)
    }

    /// `text` (already padded) in the colour of `phase`, if colours are on.
    pub(crate) fn phase(&self, phase: Phase, text: &str) -> String {
        let code = match phase {
            Phase::Healthy | Phase::Restarted | Phase::Recovering => "32",
            Phase::Failing => "31",
            Phase::Slow => "33",
        };
        self.paint(code, text)
    }

    /// Wraps `text` in the SGR sequence `code` when colours are on.
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Formats a duration as seconds with two decimals, e.g. `4.05s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// Formats a duration briefly: `800ms`, `1.5s`.
pub(crate) fn short(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_owned()
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let s = format!("{:.2}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Formats a rate in `[0, 1]` as a percentage, e.g. `81%`.
pub(crate) fn percent(rate: f64) -> String {
    format!("{:.0}%", rate * 100.0)
}

/// Where the demo's parts listen.
#[derive(Debug, Clone)]
pub(crate) struct Addresses {
    /// The flaky upstream.
    pub(crate) upstream: SocketAddr,
    /// Each proxy instance: its listener and its admin listener.
    pub(crate) proxies: Vec<(SocketAddr, SocketAddr)>,
    /// The shared store (URL without password) and the key prefix, if any.
    pub(crate) store: Option<(String, String)>,
}

/// Prints what the demo is about to do, and the header of the live table.
pub(crate) fn print_intro(
    out: &mut impl Write,
    plan: &Plan,
    addresses: &Addresses,
    style: &Style,
) -> io::Result<()> {
    let s = &plan.schedule;
    let through = match addresses.proxies.len() {
        1 => "ripcord proxy".to_owned(),
        n => format!("{n} ripcord proxies sharing one breaker"),
    };
    writeln!(
        out,
        "{} {} callers → {through} → a flaky HTTP upstream, {} (seed {})",
        style.bold("ripcord demo:"),
        plan.callers,
        short(plan.duration),
        plan.seed,
    )?;
    let phases: Vec<String> = Phase::ALL
        .iter()
        .map(|&p| format!("{} {}–{}", p, short(s.start(p)), short(s.end(p))))
        .collect();
    writeln!(
        out,
        "  upstream    http://{}  {}",
        addresses.upstream,
        phases.join(", ")
    )?;
    writeln!(
        out,
        "              ({} with {} 503s when healthy, {} 503s when failing, {} when slow)",
        short(FAST_LATENCY),
        percent(Phase::Healthy.failure_probability()),
        percent(Phase::Failing.failure_probability()),
        short(plan.slow_latency),
    )?;
    for (i, (listen, admin)) in addresses.proxies.iter().enumerate() {
        let label = if addresses.proxies.len() == 1 {
            "proxy".to_owned()
        } else {
            format!("proxy {}", i + 1)
        };
        writeln!(
            out,
            "  {label:<10}  http://{listen}/  (timeout {})",
            short(plan.timeout)
        )?;
        writeln!(
            out,
            "  {:<10}  {}  (metrics: http://{admin}/metrics)",
            "dashboard",
            style.bold(&format!("http://{admin}/")),
        )?;
    }
    if let Some((url, prefix)) = &addresses.store {
        writeln!(out, "  store       {url}  (keys under `{prefix}`)")?;
    }
    writeln!(
        out,
        "  breaker     opens when ≥ {} of the calls in its {} window fail,",
        percent(plan.failure_rate),
        short(plan.window),
    )?;
    writeln!(
        out,
        "              or ≥ {} take ≥ {} (once the window holds ≥ {} calls);",
        percent(plan.slow_rate),
        short(plan.slow_threshold),
        plan.minimum_calls,
    )?;
    writeln!(
        out,
        "              stays open {}, doubling up to {}, then lets {} probes through",
        short(plan.open_base),
        short(plan.open_max),
        plan.half_open_calls,
    )?;
    writeln!(out)?;
    let peer = if addresses.proxies.len() > 1 {
        format!("  {:<10}", "proxy 2")
    } else {
        String::new()
    };
    let breaker = if addresses.proxies.len() > 1 {
        "proxy 1"
    } else {
        "breaker"
    };
    writeln!(
        out,
        "{}",
        style.dim(&format!(
            "{:>7}  {:<10}  {:<10}{peer}  {:>8}  {:>8}  {:>6}  {:>6}  {:>6}",
            "time", "upstream", breaker, "calls", "rejected", "window", "failed", "slow"
        ))
    )
}

/// One row of the live table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Status {
    /// Time since the demo started.
    pub(crate) elapsed: Duration,
    /// The dependency's phase.
    pub(crate) phase: Phase,
    /// The breaker's state.
    pub(crate) state: State,
    /// The second proxy's breaker state, when two share the breaker.
    pub(crate) peer: Option<State>,
    /// Calls attempted so far.
    pub(crate) calls: u64,
    /// Calls the breaker rejected so far.
    pub(crate) rejected: u64,
    /// Calls in the breaker's window.
    pub(crate) window_calls: u64,
    /// Failure rate of the window.
    pub(crate) failure_rate: f64,
    /// Slow-call rate of the window.
    pub(crate) slow_rate: f64,
}

/// Draws status rows.
#[derive(Debug)]
pub(crate) struct Live {
    /// How to draw.
    style: Style,
    /// On a terminal: the phase and states of the row currently drawn, if
    /// any. When one changes, that row is kept and a new one is started.
    shown: Option<(Phase, State, Option<State>)>,
}

impl Live {
    /// Nothing drawn yet.
    pub(crate) fn new(style: Style) -> Self {
        Live { style, shown: None }
    }

    /// Draws `status`: on a terminal, over the current row unless the phase or the
    /// breaker's state changed since it was drawn; otherwise as a new line.
    pub(crate) fn draw(&mut self, out: &mut impl Write, status: &Status) -> io::Result<()> {
        let row = self.row(status);
        if self.style.terminal {
            match self.shown {
                Some(shown) if shown == (status.phase, status.state, status.peer) => {
                    write!(out, "\r\x1b[2K{row}")?
                }
                Some(_) => write!(out, "\n{row}")?,
                None => write!(out, "{row}")?,
            }
            self.shown = Some((status.phase, status.state, status.peer));
        } else {
            writeln!(out, "{row}")?;
        }
        out.flush()
    }

    /// Ends the live table.
    pub(crate) fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        if self.style.terminal && self.shown.is_some() {
            writeln!(out)?;
        }
        writeln!(out)?;
        out.flush()
    }

    /// Formats one row.
    fn row(&self, s: &Status) -> String {
        let style = &self.style;
        let window = if s.window_calls == 0 {
            format!("{:>6}  {:>6}  {:>6}", 0, "-", "-")
        } else {
            format!(
                "{:>6}  {:>6}  {:>6}",
                s.window_calls,
                percent(s.failure_rate),
                percent(s.slow_rate)
            )
        };
        let peer = match s.peer {
            Some(state) => format!(
                "  {}",
                style.state(state, &format!("{:<10}", state.to_string()))
            ),
            None => String::new(),
        };
        format!(
            "{:>7}  {}  {}{peer}  {:>8}  {:>8}  {}",
            secs(s.elapsed),
            style.phase(s.phase, &format!("{:<10}", s.phase)),
            style.state(s.state, &format!("{:<10}", s.state.to_string())),
            s.calls,
            s.rejected,
            window,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(short(Duration::from_millis(800)), "800ms");
        assert_eq!(short(Duration::from_millis(1500)), "1.5s");
        assert_eq!(short(Duration::from_secs(20)), "20s");
        assert_eq!(short(Duration::ZERO), "0s");
        assert_eq!(secs(Duration::from_millis(4050)), "4.05s");
        assert_eq!(percent(0.81), "81%");
        assert_eq!(percent(0.0), "0%");
    }
}
