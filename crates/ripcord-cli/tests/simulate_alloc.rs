//! A replay allocates per run, not per call: replaying ten times as many calls
//! (same outage, longer healthy phases) makes about as many allocations.
//!
//! Counted by `allocation-counter`'s global allocator, in this test binary only
//! (see `crates/ripcord/tests/alloc.rs` for why it is a dev-dependency).

use std::fmt::Write;
use std::io::Cursor;
use std::time::Duration;

use ripcord_cli::simulate::{
    parse_config, replay, NamedConfig, OutageRule, ReplayOptions, Scenario, TraceFormat,
    TraceReader,
};

fn csv(scenario: &str) -> Vec<u8> {
    let scenario: Scenario = scenario.parse().unwrap();
    let mut out = String::from("time_ms,latency,outcome\n");
    for c in scenario.calls(1000.0, 3) {
        let outcome = if c.outcome == ripcord::Outcome::Failure {
            "503"
        } else {
            "200"
        };
        let _ = writeln!(
            out,
            "{},{}us,{outcome}",
            c.start / 1_000_000,
            c.latency / 1_000
        );
    }
    out.into_bytes()
}

fn allocations(trace: Vec<u8>) -> (u64, u64) {
    let configs = [
        NamedConfig {
            name: "a configuration whose name is far too long to be stored inline".into(),
            config: parse_config(
                "failure_rate = 0.5\nwindow = { time = \"5s\" }\nopen_for = \"2s\"",
            )
            .unwrap(),
        },
        NamedConfig {
            name: "b".into(),
            config: parse_config("consecutive_failures = 5\nopen_for = \"2s\"").unwrap(),
        },
    ];
    let options = ReplayOptions {
        outages: OutageRule::Trailing {
            window: Duration::from_secs(5),
            min_calls: 10,
            slow: None,
        },
        seed: 1,
    };
    let mut calls = 0;
    let info = allocation_counter::measure(|| {
        let reader = TraceReader::new(Cursor::new(trace), TraceFormat::Csv);
        let report = replay(reader, &configs, &options).unwrap();
        calls = report.trace.calls;
    });
    (calls, info.count_total)
}

#[test]
fn allocations_do_not_grow_with_the_number_of_calls() {
    let (short_calls, short) = allocations(csv("ok 10s, fail 5s, ok 5s"));
    let (long_calls, long) = allocations(csv("ok 100s, fail 5s, ok 95s"));
    eprintln!("{short} allocations for {short_calls} calls, {long} for {long_calls}");
    assert!(
        long_calls > 9 * short_calls,
        "{short_calls} vs {long_calls}"
    );
    assert!(
        long < short + 40,
        "{short} allocations for {short_calls} calls, {long} for {long_calls}"
    );
}
