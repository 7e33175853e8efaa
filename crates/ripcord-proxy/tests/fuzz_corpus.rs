//! Every fuzz target of the proxy over every file of its checked-in corpus
//! (`fuzz/corpus/TARGET/`): the inputs the fuzzers found interesting and
//! the regression inputs of what they found. A panic is a finding; the test
//! names the file. The targets of `ripcord simulate`'s inputs are replayed by
//! ripcord-cli's `tests/fuzz_corpus.rs`.

use std::path::{Path, PathBuf};

use ripcord_proxy::fuzzing::TARGETS;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
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
fn h1_response() {
    replay("h1_response");
}

#[test]
fn proxy_request() {
    replay("proxy_request");
}

#[test]
fn proxy_config() {
    replay("proxy_config");
}

#[test]
fn pipeline_config() {
    replay("pipeline_config");
}
