//! `ripcord drill` in-process (a healthy upstream and a proxy on loopback):
//! SLOs met exit 0, a missed one exits 1, bad arguments exit 2, and the
//! JSON report is the same for the same seed, times aside.

use std::process::{Command, Output};
use std::time::Duration;

fn drill(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .arg("drill")
        .arg("--quiet")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ripcord");
    // Ten times what a healthy run of these short drills needs.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ripcord drill {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_drill_that_meets_its_slos_exits_0_and_one_that_misses_exits_1() {
    // The bounds are the phases' lengths: the breaker opens during the
    // fault (about 0.6 s into it when healthy), and closes again before the
    // drill ends (about 0.8 s after the fault when healthy).
    let out = drill(&[
        "--schedule",
        "ok 1s, fail 3s @ 100%, ok 8s",
        "--rate",
        "50",
        "--slo",
        "trip=3s",
        "--slo",
        "recover=8s",
        "--slo",
        "ok.p99=1s",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("fail 3s @ 100%"), "{stdout}");
    assert!(stdout.contains("held   trip=3s"), "{stdout}");
    assert!(stdout.contains("held   recover=8s"), "{stdout}");

    // No error at all while every request of a phase is aborted: impossible.
    let out = drill(&[
        "--schedule",
        "ok 1s, fail 1s @ 100%",
        "--rate",
        "50",
        "--slo",
        "errors=0%",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("MISSED errors=0%"), "{stdout}");
}

#[test]
fn the_json_report_is_the_same_for_a_seed_times_aside() {
    let dir = std::env::temp_dir().join(format!("ripcord-drill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // No breaker: what callers see depends only on the seeded faults.
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, "timeout = \"1s\"\n").unwrap();
    let plot = dir.join("drill.svg");
    let run = || {
        let out = drill(&[
            "--schedule",
            "ok 1s, fail 1s @ 50%, error 1s @ 20%, ok 1s",
            "--rate",
            "50",
            "--seed",
            "5",
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--slo",
            "fail.errors=60%",
            "--json",
            "--plot",
            plot.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        for p in v["phases"].as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("times");
        }
        v
    };
    let first = run();
    let second = run();
    assert_eq!(first, second);
    let phases = first["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 4);
    assert!(phases.iter().all(|p| p["sent"] == 50), "{first}");
    // About half of the fail phase aborted and a fifth of the error phase
    // answered 500 (50 draws of a block of 1,024: near the rate, not on
    // it), nothing else.
    let injected = |i: usize| phases[i]["by_policy"]["chaos"].as_u64().unwrap_or(0);
    assert!((15..=35).contains(&injected(1)), "{first}");
    assert!((3..=17).contains(&injected(2)), "{first}");
    assert_eq!(phases[0]["errors"], 0);
    assert_eq!(phases[3]["errors"], 0);
    assert_eq!(phases[1]["reached"].as_u64().unwrap() + injected(1), 50);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("fail 1s @ 50%"),
        "{svg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_exit_2_with_what_is_wrong() {
    for (args, needle) in [
        (vec!["--schedule", "ok 1s, boom 2s"], "unknown kind `boom`"),
        (vec!["--slo", "p99"], "METRIC=BOUND"),
        (vec!["--schedule", "ok 1s, cut 1s"], "cannot cut a store"),
        (vec!["--target", "http://127.0.0.1:1/"], "--admin"),
    ] {
        let out = drill(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_store_cut_degrades_the_store_and_callers_do_not_notice() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string());
    let out = drill(&[
        "--schedule",
        "ok 1s, cut 3s, ok 1s",
        "--rate",
        "50",
        "--store",
        &url,
        "--slo",
        "cut.errors=0%",
        "--json",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let cut = &v["phases"][1];
    assert_eq!(cut["kind"], "cut");
    assert_eq!(cut["errors"], 0, "{cut}");
    // The partition reached the proxy: its store was reported degraded
    // within the three seconds of the phase.
    assert!(
        cut["times"]["store_degraded_after_s"].as_f64().is_some(),
        "{cut}"
    );
}
