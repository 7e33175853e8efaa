//! Every fuzz target of `ripcord simulate`'s inputs over every file of its
//! checked-in corpus (`fuzz/corpus/TARGET/`): the inputs the fuzzers found
//! interesting and the regression inputs of what they found. A panic is a
//! finding; the test names the file. The proxy's targets are replayed by
//! ripcord-proxy's `tests/fuzz_corpus.rs`.

use std::path::{Path, PathBuf};

use ripcord_cli::fuzzing::TARGETS;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = corpus_root().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, run) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let files = corpus(target);
    assert!(
        files.len() >= 5,
        "the corpus of {target} has {} files",
        files.len()
    );
    for file in files {
        let data = std::fs::read(&file).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target} failed on {}", file.display());
    }
}

#[test]
fn every_target_has_a_test_here() {
    let source = include_str!("fuzz_corpus.rs");
    for (name, _) in TARGETS {
        assert!(
            source.contains(&format!("fn {name}()")),
            "no replay test for {name}"
        );
    }
}

#[test]
fn every_corpus_belongs_to_a_target_here_or_in_the_proxy() {
    let proxy = ripcord_proxy::fuzzing::TARGETS;
    for entry in std::fs::read_dir(corpus_root()).expect("fuzz/corpus") {
        let path = entry.expect("a corpus directory").path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let here = TARGETS.iter().any(|(t, _)| *t == name);
        let there = proxy.iter().any(|(t, _)| *t == name);
        assert!(
            here != there,
            "the corpus {name} belongs to {} target",
            if here { "two" } else { "no" }
        );
    }
}

#[test]
fn simulate_config() {
    replay("simulate_config");
}

#[test]
fn trace_csv() {
    replay("trace_csv");
}

#[test]
fn trace_jsonl() {
    replay("trace_jsonl");
}
