//! The end of the demo: the breaker's timeline and a summary.
//!
//! Summary lines read `key: value`, optionally followed by an explanation in
//! parentheses, so that scripts (and the integration test) can grep them.

use std::io::{self, Write};
use std::time::Duration;

use ripcord::State;

use super::dependency::{Dependency, Phase};
use super::events::{Transition, Transitions};
use super::view::{percent, secs, Style};
use super::{Load, Plan};

/// What one proxy instance's breaker did.
#[derive(Debug)]
pub(crate) struct Breaker {
    /// Its transitions.
    pub(crate) transitions: Transitions,
    /// Its state when the demo ended.
    pub(crate) final_state: State,
}

impl Breaker {
    /// Transitions to open.
    fn opened(&self) -> usize {
        self.transitions
            .list
            .iter()
            .filter(|t| t.to == State::Open)
            .count()
    }

    /// When it first opened.
    fn first_open(&self) -> Option<Duration> {
        self.transitions
            .list
            .iter()
            .find(|t| t.to == State::Open)
            .map(|t| t.at)
    }
}

/// Everything the report is made from.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    /// The demo's settings.
    pub(crate) plan: &'a Plan,
    /// The breaker of each proxy instance (one, or two sharing it).
    pub(crate) breakers: &'a [Breaker],
    /// What the callers saw.
    pub(crate) load: &'a Load,
    /// What the dependency saw.
    pub(crate) dependency: &'a Dependency,
    /// When the demo was interrupted (Ctrl-C), if it was.
    pub(crate) interrupted: Option<Duration>,
}

/// How long the breaker took to close once the dependency was healthy again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// The breaker was closed when the dependency recovered.
    AlreadyClosed,
    /// The breaker closed at `at`, `after` the dependency recovered.
    Closed {
        /// When the breaker closed, since the demo's start.
        at: Duration,
        /// Time from the dependency's recovery to the breaker closing.
        after: Duration,
    },
    /// The breaker had not closed when the demo ended.
    NotClosed,
}

impl Recovery {
    /// Works out the recovery from the transitions, given when the dependency
    /// became healthy again.
    pub(crate) fn find(transitions: &[Transition], healthy_at: Duration) -> Self {
        let state_then = transitions
            .iter()
            .take_while(|t| t.at <= healthy_at)
            .last()
            .map_or(State::Closed, |t| t.to);
        if state_then == State::Closed {
            return Recovery::AlreadyClosed;
        }
        transitions
            .iter()
            .find(|t| t.at > healthy_at && t.to == State::Closed)
            .map_or(Recovery::NotClosed, |t| Recovery::Closed {
                at: t.at,
                after: t.at - healthy_at,
            })
    }
}

/// Prints the timeline and the summary.
pub(crate) fn print(out: &mut impl Write, report: &Report<'_>, style: &Style) -> io::Result<()> {
    for (i, breaker) in report.breakers.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let title = if report.breakers.len() == 1 {
            "timeline".to_owned()
        } else {
            format!("timeline of proxy {}", i + 1)
        };
        print_timeline(out, &title, &breaker.transitions, style)?;
    }
    writeln!(out)?;
    print_phases(out, report, style)?;
    writeln!(out)?;
    print_summary(out, report, style)
}

/// The transitions, one per line.
fn print_timeline(
    out: &mut impl Write,
    title: &str,
    transitions: &Transitions,
    style: &Style,
) -> io::Result<()> {
    writeln!(out, "{}", style.bold(title))?;
    if transitions.list.is_empty() {
        writeln!(out, "  (no transitions: the breaker stayed closed)")?;
    }
    for t in &transitions.list {
        let change = format!("{} → {}", t.from, t.to);
        let change = style.state(t.to, &format!("{change:<20}"));
        let why = &t.why;
        writeln!(out, "  {:>7}  {change}  {why}", secs(t.at))?;
    }
    if transitions.missed > 0 {
        writeln!(
            out,
            "  ({} transitions were missed: the event listener fell behind)",
            transitions.missed
        )?;
    }
    Ok(())
}

/// Calls per phase of the dependency.
fn print_phases(out: &mut impl Write, report: &Report<'_>, style: &Style) -> io::Result<()> {
    writeln!(out, "{}", style.bold("by phase"))?;
    writeln!(
        out,
        "{}",
        style.dim(&format!(
            "  {:<10}  {:>15}  {:>8}  {:>8}  {:>8}  {:>8}",
            "dependency", "time", "calls", "rejected", "reached", "failed"
        ))
    )?;
    let schedule = &report.plan.schedule;
    for phase in Phase::ALL {
        let span = format!(
            "{}–{}",
            secs(schedule.start(phase)),
            secs(schedule.end(phase))
        );
        writeln!(
            out,
            "  {}  {span:>15}  {:>8}  {:>8}  {:>8}  {:>8}",
            style.phase(phase, &format!("{phase:<10}")),
            report.load.attempted(phase),
            report.load.rejected(phase),
            report.dependency.reached(phase),
            report.dependency.failed(phase),
        )?;
    }
    Ok(())
}

/// The `key: value` lines.
fn print_summary(out: &mut impl Write, report: &Report<'_>, style: &Style) -> io::Result<()> {
    let Report {
        plan,
        breakers,
        load,
        dependency,
        interrupted,
    } = report;
    let Some(first) = breakers.first() else {
        return Ok(());
    };
    let (transitions, final_state) = (&first.transitions, &first.final_state);
    let line = |out: &mut dyn Write, key: &str, value: &dyn std::fmt::Display, note: &str| {
        let key_value = format!("{key}: {value}");
        if note.is_empty() {
            writeln!(out, "  {key_value}")
        } else {
            writeln!(
                out,
                "  {key_value:<30}  {}",
                style.dim(&format!("({note})"))
            )
        }
    };
    let shed = |phase: Phase| {
        let attempted = load.attempted(phase);
        let rejected = load.rejected(phase);
        let share = if attempted == 0 {
            0.0
        } else {
            rejected as f64 / attempted as f64
        };
        format!(
            "of {attempted} calls made while it was {phase}; {} rejected",
            percent(share)
        )
    };
    let reached: u64 = Phase::ALL.iter().map(|&p| dependency.reached(p)).sum();
    let opened = first.opened();

    writeln!(out, "{}", style.bold("summary"))?;
    let out: &mut dyn Write = out;
    if let Some(at) = interrupted {
        line(out, "interrupted", &secs(*at), "Ctrl-C")?;
    }
    line(
        out,
        "calls",
        &load.total_attempted(),
        &format!("made by {} callers", plan.callers),
    )?;
    line(out, "reached_dependency", &reached, "")?;
    line(
        out,
        "rejected",
        &load.total_rejected(),
        "refused by the breaker at once, never reaching the dependency",
    )?;
    line(
        out,
        "reached_while_failing",
        &dependency.reached(Phase::Failing),
        &shed(Phase::Failing),
    )?;
    line(
        out,
        "reached_while_slow",
        &dependency.reached(Phase::Slow),
        &shed(Phase::Slow),
    )?;
    line(out, "transitions", &transitions.list.len(), "")?;
    line(out, "opened", &opened, "transitions to open")?;
    line(out, "final_state", final_state, "")?;
    if let Some(peer) = breakers.get(1) {
        line(
            out,
            "peer_transitions",
            &peer.transitions.list.len(),
            "proxy 2, same breaker through the store",
        )?;
        line(out, "peer_opened", &peer.opened(), "")?;
        line(out, "peer_final_state", &peer.final_state, "")?;
        match (first.first_open(), peer.first_open()) {
            (Some(a), Some(b)) => line(
                out,
                "trip_skew",
                &secs(a.abs_diff(b)),
                &format!(
                    "first opened at {} on proxy 1, {} on proxy 2",
                    secs(a),
                    secs(b)
                ),
            )?,
            _ => line(out, "trip_skew", &"none", "one of the proxies never opened")?,
        }
    }
    let healthy_at = plan.schedule.start(Phase::Recovering);
    if interrupted.is_some_and(|at| at < healthy_at) {
        return line(
            out,
            "recovery",
            &"none",
            "interrupted before the dependency recovered",
        );
    }
    match Recovery::find(&transitions.list, healthy_at) {
        Recovery::AlreadyClosed => line(
            out,
            "recovery",
            &secs(Duration::ZERO),
            "the breaker was already closed when the dependency recovered",
        ),
        Recovery::Closed { at, after } => line(
            out,
            "recovery",
            &secs(after),
            &format!(
                "dependency healthy again at {}, breaker closed at {}",
                secs(healthy_at),
                secs(at)
            ),
        ),
        Recovery::NotClosed => line(
            out,
            "recovery",
            &"none",
            &format!(
                "dependency healthy again at {}, breaker still {final_state} at the end",
                secs(healthy_at)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(at_ms: u64, from: State, to: State) -> Transition {
        Transition {
            at: Duration::from_millis(at_ms),
            from,
            to,
            why: String::new(),
        }
    }

    #[test]
    fn recovery_is_measured_from_the_dependency_healing() {
        let healthy_at = Duration::from_secs(10);
        let list = [
            t(5_000, State::Closed, State::Open),
            t(9_000, State::Open, State::HalfOpen),
            t(9_500, State::HalfOpen, State::Open),
            t(10_400, State::Open, State::HalfOpen),
            t(10_410, State::HalfOpen, State::Closed),
        ];
        assert_eq!(
            Recovery::find(&list, healthy_at),
            Recovery::Closed {
                at: Duration::from_millis(10_410),
                after: Duration::from_millis(410)
            }
        );
        assert_eq!(Recovery::find(&list[..4], healthy_at), Recovery::NotClosed);
        assert_eq!(Recovery::find(&[], healthy_at), Recovery::AlreadyClosed);
        assert_eq!(
            Recovery::find(&list[..1], Duration::from_secs(1)),
            Recovery::AlreadyClosed
        );
    }
}
