//! Runs the real `ripcord demo` binary and checks the story it tells: the breaker
//! opens while the dependency misbehaves, rejects calls, and is closed again at
//! the end.

use std::process::Command;
use std::time::{Duration, Instant};

/// The value of the summary line `key: value`, as a string.
fn value<'a>(output: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}:");
    output
        .lines()
        .map(str::trim_start)
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `{key}:` line in the output:\n{output}"))
}

/// The value of the summary line `key: value`, as a number.
fn number(output: &str, key: &str) -> u64 {
    let v = value(output, key);
    v.parse()
        .unwrap_or_else(|e| panic!("`{key}: {v}` is not a number ({e}) in:\n{output}"))
}

#[test]
fn demo_trips_rejects_and_recovers() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .args(["demo", "--duration", "6s", "--seed", "3"])
        .env("NO_COLOR", "1")
        .output()
        .expect("running `ripcord demo`");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "`ripcord demo` failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        elapsed < Duration::from_secs(30),
        "the demo should end by itself soon after --duration, took {elapsed:?}"
    );

    // Not a terminal: one status row per second, no ANSI escapes.
    assert!(
        !stdout.contains('\x1b'),
        "escape codes in piped output:\n{stdout}"
    );

    assert!(number(&stdout, "calls") > 1_000, "{stdout}");
    assert!(number(&stdout, "transitions") >= 2, "{stdout}");
    assert!(number(&stdout, "opened") >= 1, "{stdout}");
    assert!(
        stdout.lines().any(|l| l.contains("→ open")),
        "no transition to open in the timeline:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("→ open") && l.contains("failure rate")),
        "no trip on the failure rate:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("→ open") && l.contains("slow-call rate")),
        "no trip on the slow-call rate:\n{stdout}"
    );
    assert!(number(&stdout, "rejected") > 0, "{stdout}");
    assert!(
        number(&stdout, "reached_while_failing") < number(&stdout, "calls"),
        "{stdout}"
    );
    assert_eq!(value(&stdout, "final_state"), "closed", "{stdout}");
    assert!(value(&stdout, "recovery").ends_with('s'), "{stdout}");
}

#[test]
fn demo_rejects_a_too_short_duration() {
    let output = Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .args(["demo", "--duration", "100ms"])
        .output()
        .expect("running `ripcord demo`");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--duration"), "{stderr}");
}
