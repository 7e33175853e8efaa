//! `ripcord simulate`: golden replays of hand-made traces (one per trip rule),
//! outage detection, determinism, the chart, and malformed traces.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ripcord_cli::simulate::replay::{ConfigReport, Transition};
use ripcord_cli::simulate::{
    parse_config, replay, NamedConfig, OutageRule, ReplayError, ReplayOptions, Report, TraceError,
    TraceFormat, TraceReader,
};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn config(name: &str) -> NamedConfig {
    let text = std::fs::read_to_string(data(name)).unwrap();
    NamedConfig {
        name: name.trim_end_matches(".toml").to_owned(),
        config: parse_config(&text).unwrap_or_else(|e| panic!("{name}: {e}")),
    }
}

fn run(trace: &str, format: TraceFormat, cfg: &str, outages: OutageRule) -> Report {
    let file = std::fs::File::open(data(trace)).unwrap();
    let reader = TraceReader::new(std::io::BufReader::new(file), format);
    replay(reader, &[config(cfg)], &ReplayOptions { outages, seed: 1 }).unwrap()
}

fn secs(s: f64) -> u64 {
    (s * 1e9).round() as u64
}

fn t(at: f64, from: &'static str, to: &'static str, reason: &str) -> Transition {
    Transition {
        at,
        from,
        to,
        reason: reason.to_owned(),
    }
}

fn only(report: &Report) -> &ConfigReport {
    assert_eq!(report.configs.len(), 1);
    &report.configs[0]
}

#[test]
fn consecutive_failures_golden() {
    let outages = OutageRule::Known(vec![(secs(2.0), secs(15.0))]);
    let report = run(
        "consecutive.csv",
        TraceFormat::Csv,
        "consecutive.toml",
        outages,
    );
    let c = only(&report);
    assert_eq!(
        c.transitions,
        vec![
            t(4.01, "closed", "open", "consecutive failures"),
            t(15.0, "open", "half_open", "open duration elapsed"),
            t(15.01, "half_open", "closed", "probes succeeded"),
        ]
    );
    assert_eq!(report.trace.calls, 9);
    assert_eq!(c.admitted, 7);
    assert_eq!(c.rejected, 2, "calls 6 and 7");
    assert_eq!(c.failed_calls_reached, 3);
    assert_eq!(c.healthy_rejected, 0);
    assert_eq!(c.probes, 1);
    assert_eq!(c.trips, 1);
    assert_eq!(c.time_to_trip, Some(2.01));
    assert_eq!(c.time_to_recover, Some(0.01));
}

#[test]
fn json_lines_give_the_same_answer() {
    let outages = OutageRule::Known(vec![(secs(2.0), secs(15.0))]);
    let csv = run(
        "consecutive.csv",
        TraceFormat::Csv,
        "consecutive.toml",
        outages.clone(),
    );
    let jsonl = run(
        "consecutive.jsonl",
        TraceFormat::Jsonl,
        "consecutive.toml",
        outages,
    );
    assert_eq!(csv.configs, jsonl.configs);
    assert_eq!(csv.trace, jsonl.trace);
}

#[test]
fn failure_rate_golden() {
    let outages = OutageRule::Known(vec![(secs(2.0), secs(4.0))]);
    let report = run(
        "failure_rate.csv",
        TraceFormat::Csv,
        "failure_rate.toml",
        outages,
    );
    let c = only(&report);
    assert_eq!(
        c.transitions,
        vec![
            t(3.1, "closed", "open", "failure rate"),
            t(8.2, "open", "half_open", "open duration elapsed"),
            t(8.35, "half_open", "closed", "probes succeeded"),
        ]
    );
    assert_eq!(c.rejected, 1, "call 5");
    assert_eq!(c.healthy_rejected, 1, "call 5 came after the outage's end");
    assert_eq!(c.probes, 2);
    assert_eq!(c.failed_calls_reached, 2);
    assert_eq!(c.time_to_trip, Some(1.1));
    assert_eq!(c.time_to_recover, Some(4.35));
}

#[test]
fn slow_calls_golden_records_in_finish_order() {
    let report = run(
        "slow_calls.csv",
        TraceFormat::Csv,
        "slow_calls.toml",
        OutageRule::Known(vec![(0, secs(0.6))]),
    );
    let c = only(&report);
    assert_eq!(
        c.transitions,
        vec![
            t(0.6, "closed", "open", "slow-call rate"),
            t(1.7, "open", "half_open", "open duration elapsed"),
            t(1.75, "half_open", "closed", "probes succeeded"),
        ]
    );
    assert_eq!(
        c.admitted, 5,
        "the call at 0.5 s was admitted before the trip"
    );
    assert_eq!(c.rejected, 1, "the call at 0.7 s");
    assert_eq!(c.probes, 1);
    assert_eq!(c.time_to_trip, Some(0.6));
}

#[test]
fn outages_are_found_in_the_trace_and_dated_back() {
    // 10 calls a second: 10 s healthy, 10 s failing, 10 s healthy.
    let mut csv = String::from("time_ms,latency,outcome\n");
    for i in 0..300u32 {
        let outcome = if (100..200).contains(&i) {
            "503"
        } else {
            "200"
        };
        csv.push_str(&format!("{},20,{outcome}\n", i * 100));
    }
    let cfg = NamedConfig {
        name: "c".into(),
        config: parse_config("consecutive_failures = 5\nopen_for = \"3s\"\nhalf_open_calls = 1")
            .unwrap(),
    };
    let options = ReplayOptions {
        outages: OutageRule::Trailing {
            window: Duration::from_secs(5),
            min_calls: 10,
            slow: None,
        },
        seed: 1,
    };
    let reader = TraceReader::new(Cursor::new(csv), TraceFormat::Csv);
    let report = replay(reader, &[cfg], &options).unwrap();
    assert_eq!(report.outages.len(), 1);
    assert_eq!(report.outages[0].start, 10.0);
    assert_eq!(report.outages[0].end, Some(20.0));
    let c = only(&report);
    // The 5th failure (started 10.4 s, recorded 10.42 s) trips it.
    assert_eq!(c.time_to_trip, Some(0.42));
    // 5 failures, then a failed probe every 3.1 s (13.5, 16.6, 19.7 s).
    assert_eq!(c.failed_calls_reached, 5 + 3);
    // The next probe, at 22.8 s, closes it.
    assert_eq!(c.time_to_recover, Some(2.82));
    // Healthy calls rejected: 20.0 s to 22.7 s. The detector only saw the
    // outage's start at ~12.5 s and its end at ~22.5 s; the rejections in
    // between were re-dated (else 10.5–12.5 s would count as healthy, and
    // 20.0–22.5 s would not).
    assert_eq!(c.healthy_rejected, 28);
}

fn simulate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .arg("simulate")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn same_inputs_and_seed_give_identical_json() {
    let eager = data("consecutive.toml");
    let lax = data("failure_rate.toml");
    let args = |seed: &'static str| {
        vec![
            "--scenario".to_owned(),
            "ok 20s, fail 10s @ 80%, slow 5s @ 1.5s, ok 20s".to_owned(),
            "--rps".to_owned(),
            "100".to_owned(),
            "--seed".to_owned(),
            seed.to_owned(),
            "--config".to_owned(),
            eager.display().to_string(),
            "--config".to_owned(),
            lax.display().to_string(),
            "--json".to_owned(),
        ]
    };
    let run = |seed| {
        let a = args(seed);
        let out = simulate(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let first = run("7");
    assert_eq!(first, run("7"));
    assert_ne!(first, run("8"));
    let json: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(json["configs"].as_array().unwrap().len(), 2);
    assert_eq!(json["outages"][0]["start"], 20.0);
    assert_eq!(json["outages"][0]["end"], 35.0);
}

#[test]
fn chart_is_a_valid_svg_with_one_series_per_measure_and_one_band_per_config() {
    let dir = std::env::temp_dir().join(format!("ripcord-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("chart.svg");
    let out = simulate(&[
        "--scenario",
        "ok 20s, fail 10s, ok 20s",
        "--rps",
        "50",
        "--config",
        data("consecutive.toml").to_str().unwrap(),
        "--config",
        data("failure_rate.toml").to_str().unwrap(),
        "--config",
        data("slow_calls.toml").to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("valid XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let class = |c: &str| {
        doc.descendants()
            .filter(|n| {
                n.attribute("class")
                    .is_some_and(|v| v.split(' ').any(|w| w == c))
            })
            .count()
    };
    assert_eq!(class("series"), 2, "failure rate and latency");
    assert_eq!(class("band"), 3, "one per configuration");
    assert_eq!(class("outage"), 1);
    assert!(class("open") >= 3, "every configuration opened");
    assert!(class("closed") >= 3);
    let names: Vec<_> = doc
        .descendants()
        .filter_map(|n| n.attribute("data-config"))
        .collect();
    assert_eq!(names, ["consecutive", "failure_rate", "slow_calls"]);
    std::fs::remove_dir_all(&dir).ok();
}

fn malformed(trace: &str, format: TraceFormat) -> TraceError {
    let reader = TraceReader::new(Cursor::new(trace.to_owned()), format);
    let cfg = NamedConfig {
        name: "d".into(),
        config: Default::default(),
    };
    let options = ReplayOptions {
        outages: OutageRule::Known(vec![]),
        seed: 1,
    };
    match replay(reader, &[cfg], &options) {
        Err(ReplayError::Trace(e)) => e,
        other => panic!("expected a trace error, got {other:?}"),
    }
}

#[test]
fn malformed_traces_name_line_column_and_expectation() {
    let cases: &[(&str, TraceFormat, &str)] = &[
        (
            "time,latency,outcome\n0,10,success\n1,10,maybe\n",
            TraceFormat::Csv,
            "line 3, column 6: expected an outcome: success, failure, ignored, an HTTP status (200, 503) or a gRPC code (OK, UNAVAILABLE), found `maybe`",
        ),
        (
            "time,latency,outcome\n0,fast,success\n",
            TraceFormat::Csv,
            "line 2, column 3: expected a latency such as `42`, `42ms` or `1.5s`, found `fast`",
        ),
        (
            "time,latency,outcome\n0,10\n",
            TraceFormat::Csv,
            "line 2, column 5: expected 3 comma-separated fields, found `2 fields`",
        ),
        (
            "time,latency,outcome\n5,10,ok\n4,10,ok\n",
            TraceFormat::Csv,
            "line 3, column 1: expected a time no earlier than the previous line's (traces are sorted by start time), found `4`",
        ),
        (
            "time,latency,outcome\n2026-11-24T25:00:00Z,10,ok\n",
            TraceFormat::Csv,
            "line 2, column 1: expected an RFC 3339 timestamp such as `2026-11-24T23:00:00.250Z`, found `2026-11-24T25:00:00Z`",
        ),
        (
            "when,latency,outcome\n0,10,ok\n",
            TraceFormat::Csv,
            "line 1, column 1: expected a header with a `time` column (`time,latency,outcome`), found `when,latency,outcome`",
        ),
        (
            "",
            TraceFormat::Csv,
            "line 1, column 1: expected a header line such as `time,latency,outcome`, found `end of file`",
        ),
        (
            "{\"time\": 0, \"latency\": 1, \"outcome\": \"ok\"}\n{\"time\": 1, \"latency\": 1}\n",
            TraceFormat::Jsonl,
            "line 2, column 25: expected a JSON object with `time`, `latency` and `outcome` (missing field `outcome`), found `{\"time\": 1, \"latency\": 1}`",
        ),
        (
            "{\"time\": 0, \"latency\": 1, \"outcome\": 299.5}\n",
            TraceFormat::Jsonl,
            "line 1, column 27: expected an outcome: success, failure, ignored, an HTTP status (200, 503) or a gRPC code (OK, UNAVAILABLE), found `299.5`",
        ),
    ];
    for (trace, format, want) in cases {
        assert_eq!(&malformed(trace, *format).to_string(), want, "{trace:?}");
    }
}

#[test]
fn no_line_panics() {
    // Every prefix, and every single-byte change, of a valid trace: an error or
    // a replay, never a panic.
    let base = "time,latency,outcome\n0.5,800ms,503\n2026-11-24T23:00:00.5Z,1.5s,UNAVAILABLE\n";
    let bytes = base.as_bytes();
    let subs = [
        b'0', b',', b'.', b'-', b'T', b'Z', b':', b'x', b' ', 0xff, b'\n', b'9',
    ];
    let options = ReplayOptions {
        outages: OutageRule::Trailing {
            window: Duration::from_secs(5),
            min_calls: 1,
            slow: Some(Duration::from_millis(1)),
        },
        seed: 1,
    };
    let cfg = [NamedConfig {
        name: "d".into(),
        config: Default::default(),
    }];
    let mut cases = 0;
    for i in 0..bytes.len() {
        for format in [TraceFormat::Csv, TraceFormat::Jsonl] {
            for &b in &subs {
                let mut v = bytes.to_vec();
                v[i] = b;
                let reader = TraceReader::new(Cursor::new(v), format);
                let _ = replay(reader, &cfg, &options);
                cases += 1;
            }
            let reader = TraceReader::new(Cursor::new(bytes[..i].to_vec()), format);
            let _ = replay(reader, &cfg, &options);
            // A multi-byte character spliced in anywhere.
            if base.is_char_boundary(i) {
                let spliced = format!("{}é{}", &base[..i], &base[i..]);
                let reader = TraceReader::new(Cursor::new(spliced), format);
                let _ = replay(reader, &cfg, &options);
            }
        }
    }
    assert!(cases > 1000);
}

#[test]
fn cli_reports_a_bad_trace_without_panicking() {
    let dir = std::env::temp_dir().join(format!("ripcord-simulate-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "time,latency,outcome\n0,10,ok\n1,10,teapot\n").unwrap();
    let out = simulate(&[bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3, column 6"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_traced_status_counts_as_the_proxy_counts_it() {
    use ripcord_cli::simulate::trace::parse_outcome;
    use ripcord_tower::http::classify_status;
    for code in 100..=599u16 {
        let status = http::StatusCode::from_u16(code).unwrap();
        assert_eq!(
            parse_outcome(&code.to_string()),
            Some(classify_status(status)),
            "HTTP {code}"
        );
    }
    // 408: the client was slow to send its request, not the dependency's fault.
    assert_eq!(parse_outcome("408"), Some(ripcord::Outcome::Ignored));
    assert_eq!(parse_outcome("600"), None);
    // gRPC code names, as the gRPC layer classifies their numbers.
    use ripcord_tower::grpc::classify_code;
    for (name, code) in [
        ("OK", 0),
        ("cancelled", 1),
        ("UNAVAILABLE", 14),
        ("DATA_LOSS", 15),
    ] {
        assert_eq!(parse_outcome(name), Some(classify_code(code)), "{name}");
    }
}
