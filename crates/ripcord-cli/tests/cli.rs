//! The `ripcord` command line as a whole, run as the built binary: the help
//! (one line per subcommand, examples), `ripcord check --json`, errors as
//! `error: …` and the documented exit codes (0 success, 1 failure, 2 usage
//! or configuration error).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ripcord() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ripcord"))
}

/// Runs `cmd` to its end, killing it (and failing) if it is still running
/// after a minute: far longer than any of these commands needs.
fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ripcord");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("waiting for ripcord").is_some() {
            return child.wait_with_output().expect("ripcord's output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("ripcord's output");
            panic!(
                "ripcord still running after 60 s:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ripcord_with(args: &[&str]) -> Output {
    let mut cmd = ripcord();
    cmd.args(args);
    run(cmd)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ripcord-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GOOD: &str = r#"
[[listeners]]
listen = "127.0.0.1:8080"

[upstreams.api]
addresses = ["127.0.0.1:3000", "localhost:3001"]
pipeline.circuit_breaker = { failure_rate = 0.5, open_for = "5s" }

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "api"
pipeline = { timeout = "2s", retry = { max_attempts = 2 }, circuit_breaker = { consecutive_failures = 5 } }

[[routes]]
name = "web"
host = "shop.example"
upstream = "api"
"#;

/// The rows of a help text's `Commands:` section.
fn command_rows(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks that every row of a `Commands:` section is `  NAME  SUMMARY`,
/// one line each, and returns the names.
fn one_line_each(help: &str) -> Vec<String> {
    let rows = command_rows(help);
    assert!(!rows.is_empty(), "no Commands: section:\n{help}");
    rows.iter()
        .map(|row| {
            let rest = row
                .strip_prefix("  ")
                .unwrap_or_else(|| panic!("{row:?} is not a command row:\n{help}"));
            let (name, summary) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("{row:?} has no summary:\n{help}"));
            assert!(
                !name.is_empty() && !summary.trim().is_empty(),
                "{row:?} is a continuation line, not `NAME SUMMARY`:\n{help}"
            );
            name.to_owned()
        })
        .collect()
}

#[test]
fn help_lists_one_line_per_subcommand() {
    for flag in ["--help", "-h"] {
        let out = ripcord_with(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let help = text(&out.stdout);
        assert_eq!(
            one_line_each(&help),
            ["demo", "simulate", "fleet", "drill", "proxy", "check", "help"],
            "{help}"
        );
    }
    let out = ripcord_with(&["fleet", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    assert_eq!(
        one_line_each(&help),
        ["status", "open", "disable", "reset", "fault", "help"],
        "{help}"
    );
}

#[test]
fn every_subcommand_has_a_long_help_with_examples() {
    for command in ["", "demo", "simulate", "fleet", "drill", "proxy", "check"] {
        let args: Vec<&str> = command.split_whitespace().collect();
        let long: Vec<&str> = args.iter().copied().chain(["--help"]).collect();
        let help = text(&ripcord_with(&long).stdout);
        let examples: Vec<&str> = help
            .lines()
            .skip_while(|l| *l != "Examples:")
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter(|l| l.trim_start().starts_with("ripcord "))
            .collect();
        assert!(
            (2..=4).contains(&examples.len()),
            "`{command} --help` has {} examples:\n{help}",
            examples.len()
        );
        // The short help stays short: a summary, no examples.
        let short: Vec<&str> = args.iter().copied().chain(["-h"]).collect();
        let short = text(&ripcord_with(&short).stdout);
        assert!(!short.contains("Examples:"), "`{command} -h`:\n{short}");
    }
}

#[test]
fn the_top_level_help_documents_the_exit_codes() {
    let help = text(&ripcord_with(&["--help"]).stdout);
    let codes: Vec<&str> = help
        .lines()
        .skip_while(|l| *l != "Exit codes:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let l = l.trim_start();
            l.split_once(' ')
                .map(|(code, _)| code)
                .filter(|c| c.parse::<u8>().is_ok())
        })
        .collect();
    assert_eq!(codes, ["0", "1", "2", "130"], "{help}");
    assert!(help.contains("usage or configuration error"), "{help}");
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

#[test]
fn check_json_describes_a_good_file_and_exits_0() {
    let dir = Scratch::new("check-json-good");
    let good = dir.file("good.toml", GOOD);
    let mut cmd = ripcord();
    cmd.args(["check", "--json", "--config"]).arg(&good);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let json = json_of(&out);
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["file"], good.display().to_string(), "{json}");
    assert_eq!(json["listeners"], serde_json::json!(["127.0.0.1:8080"]));
    let routes = json["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 2, "{json}");
    assert_eq!(routes[0]["name"], "orders");
    assert_eq!(routes[0]["host"], serde_json::Value::Null);
    assert_eq!(routes[0]["prefix"], "/orders");
    assert_eq!(routes[0]["upstream"], "api");
    let mut policies: Vec<&str> = routes[0]["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|p| p.as_str().expect("a policy kind"))
        .collect();
    policies.sort_unstable();
    assert_eq!(policies, ["circuit_breaker", "retry", "timeout"], "{json}");
    assert_eq!(routes[1]["name"], "web");
    assert_eq!(routes[1]["host"], "shop.example");
    assert_eq!(routes[1]["prefix"], "/");
    assert_eq!(routes[1]["policies"], serde_json::json!([]));
    let upstreams = json["upstreams"].as_array().expect("upstreams");
    assert_eq!(upstreams.len(), 1, "{json}");
    assert_eq!(upstreams[0]["name"], "api");
    assert_eq!(
        upstreams[0]["addresses"],
        serde_json::json!(["127.0.0.1:3000", "localhost:3001"])
    );
    assert_eq!(
        upstreams[0]["policies"],
        serde_json::json!(["circuit_breaker"])
    );
    assert_eq!(upstreams[0]["protocol"], "http1");
    assert_eq!(
        upstreams[0]["grpc_failure_codes"],
        serde_json::json!([
            "UNAVAILABLE",
            "DEADLINE_EXCEEDED",
            "RESOURCE_EXHAUSTED",
            "INTERNAL",
            "UNKNOWN"
        ])
    );
    let breakers: Vec<&str> = json["breakers"]
        .as_array()
        .expect("breakers")
        .iter()
        .map(|b| b["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(breakers, ["api", "orders"], "{json}");
    assert_eq!(json["warnings"], serde_json::json!([]), "{json}");
}

#[test]
fn check_json_reports_warnings() {
    let dir = Scratch::new("check-json-warn");
    let exposed = dir.file(
        "exposed.toml",
        &format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{GOOD}"),
    );
    let mut cmd = ripcord();
    cmd.args(["check", "--json", "--config"]).arg(&exposed);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json = json_of(&out);
    assert_eq!(json["ok"], true, "{json}");
    let warnings = json["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{json}");
    assert!(
        warnings[0].as_str().unwrap().contains("0.0.0.0:9901"),
        "{json}"
    );
    assert_eq!(json["admin"]["listen"], "0.0.0.0:9901");
    assert_eq!(json["admin"]["token_set"], false);
}

#[test]
fn check_json_lists_the_problems_of_a_bad_file_and_exits_2() {
    let dir = Scratch::new("check-json-bad");
    let bad = dir.file(
        "bad.toml",
        &GOOD.replace("open_for = \"5s\"", "open_for = \"soon\""),
    );
    let mut cmd = ripcord();
    cmd.args(["check", "--json", "--config"]).arg(&bad);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let json = json_of(&out);
    assert_eq!(json["ok"], false, "{json}");
    assert_eq!(json["file"], bad.display().to_string(), "{json}");
    let problems = json["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{json}");
    let p = &problems[0];
    assert!(
        p["path"]
            .as_str()
            .unwrap()
            .starts_with("upstreams.api.pipeline.circuit_breaker"),
        "{json}"
    );
    assert_eq!(p["line"], 7, "{json}");
    assert!(p["column"].as_u64().is_some_and(|c| c > 1), "{json}");
    let message = p["message"].as_str().unwrap();
    assert!(message.contains("expected a duration such as"), "{json}");
    assert!(message.contains("soon"), "{json}");

    // Several problems at once, each with its own path.
    let two = dir.file(
        "two.toml",
        &GOOD
            .replace("listen = \"127.0.0.1:8080\"", "listen = \"nowhere\"")
            .replace(
                "upstream = \"api\"\npipeline",
                "upstream = \"apx\"\npipeline",
            ),
    );
    let mut cmd = ripcord();
    cmd.args(["check", "--json", "--config"]).arg(&two);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let json = json_of(&out);
    assert_eq!(json["ok"], false, "{json}");
    let paths: Vec<&str> = json["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["path"].as_str().expect("a path"))
        .collect();
    assert!(paths.len() >= 2, "{json}");
    assert!(
        paths.iter().any(|p| p.starts_with("listeners[0]")),
        "{json}"
    );
    assert!(paths.iter().any(|p| p.starts_with("routes[0]")), "{json}");
}

#[test]
fn check_json_on_a_missing_file_exits_2() {
    let dir = Scratch::new("check-json-missing");
    let missing = dir.0.join("missing.toml");
    let mut cmd = ripcord();
    cmd.args(["check", "--json", "--config"]).arg(&missing);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let json = json_of(&out);
    assert_eq!(json["ok"], false, "{json}");
    let p = &json["problems"][0];
    assert_eq!(p["path"], "", "{json}");
    assert_eq!(p["line"], serde_json::Value::Null, "{json}");
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .contains("cannot read the configuration file"),
        "{json}"
    );
}

/// Asserts `out` exited with `code` and printed its error as `error: …`.
fn assert_error(out: &Output, code: i32, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("Error:"), "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn simulate_errors_are_error_lines_with_exit_2() {
    let dir = Scratch::new("simulate-errors");
    // A bad value that clap cannot see.
    let out = ripcord_with(&["simulate", "--scenario", "ok 1s", "--rps", "0"]);
    assert_error(&out, 2, "--rps must be a positive number");
    // A trace that does not exist.
    let missing = dir.0.join("missing.csv");
    let out = ripcord_with(&["simulate", missing.to_str().unwrap()]);
    assert_error(&out, 2, "cannot read");
    // A malformed trace.
    let bad = dir.file("bad.csv", "time,latency,outcome\n0,10,ok\n1,10,teapot\n");
    let out = ripcord_with(&["simulate", bad.to_str().unwrap()]);
    assert_error(&out, 2, "line 3, column 6");
    // A configuration that is not one.
    let config = dir.file("breaker.toml", "consecutive_failures = \"many\"\n");
    let out = ripcord_with(&[
        "simulate",
        "--scenario",
        "ok 1s",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_error(&out, 2, "breaker.toml");
    // `--plot` to something other than SVG.
    let out = ripcord_with(&["simulate", "--scenario", "ok 1s", "--plot", "chart.png"]);
    assert_error(&out, 2, "--plot draws SVG only");
}

#[test]
fn a_failed_run_exits_1() {
    // `simulate` runs, but its chart cannot be written.
    let dir = Scratch::new("simulate-write");
    let nowhere = dir.0.join("no-such-dir").join("chart.svg");
    let out = ripcord_with(&[
        "simulate",
        "--scenario",
        "ok 1s",
        "--plot",
        nowhere.to_str().unwrap(),
    ]);
    assert_error(&out, 1, "cannot write");
}

#[test]
fn a_proxy_that_cannot_start_exits_1() {
    let dir = Scratch::new("proxy-taken");
    // Hold the port the proxy is to listen on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().unwrap();
    let config = dir.file(
        "taken.toml",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listeners]]\nlisten = \"{addr}\"\n\n\
             [upstreams.api]\naddresses = [\"127.0.0.1:9\"]\n\n\
             [[routes]]\nname = \"api\"\nupstream = \"api\"\n"
        ),
    );
    // The file is fine: only binding fails.
    let mut cmd = ripcord();
    cmd.args(["check", "--config"]).arg(&config);
    assert_eq!(run(cmd).status.code(), Some(0));
    let mut cmd = ripcord();
    cmd.args(["proxy", "--config"]).arg(&config);
    let out = run(cmd);
    assert_error(&out, 1, "cannot start");
    drop(taken);
}

#[test]
fn configuration_and_usage_errors_exit_2() {
    let dir = Scratch::new("usage");
    // clap's own usage errors.
    for args in [
        &["check", "--no-such-flag"][..],
        &["no-such-subcommand"],
        &["simulate"],
        &["demo", "--duration", "100ms"],
    ] {
        let out = ripcord_with(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
    // No subcommand: the help, on stderr.
    let out = ripcord_with(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Usage: ripcord"),
        "{}",
        text(&out.stderr)
    );
    // A refused file, for `proxy`, `check` and `fleet` alike: every
    // problem on an `error:` line of its own.
    let bad = dir.file(
        "bad.toml",
        &GOOD
            .replace("listen = \"127.0.0.1:8080\"", "listen = \"nowhere\"")
            .replace(
                "upstream = \"api\"\npipeline",
                "upstream = \"apx\"\npipeline",
            ),
    );
    for command in [&["proxy"][..], &["check"], &["fleet", "status"]] {
        let mut cmd = ripcord();
        cmd.args(command).arg("--config").arg(&bad);
        let out = run(cmd);
        assert_error(&out, 2, "bad.toml:3:");
        let stderr = text(&out.stderr);
        assert!(stderr.lines().count() >= 2, "{command:?}: {stderr}");
        assert!(
            stderr.lines().all(|l| l.starts_with("error: ")),
            "{command:?}: {stderr}"
        );
        assert!(stderr.contains("apx"), "{command:?}: {stderr}");
    }
}

#[test]
fn success_exits_0() {
    let dir = Scratch::new("success");
    let good = dir.file("good.toml", GOOD);
    let mut cmd = ripcord();
    cmd.args(["check", "--config"]).arg(&good);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = ripcord_with(&["simulate", "--scenario", "ok 2s, fail 2s, ok 2s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}
