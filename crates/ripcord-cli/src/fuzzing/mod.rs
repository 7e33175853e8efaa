//! The fuzz targets of `ripcord simulate`'s inputs: the bodies that the
//! fuzzers in `fuzz/` run, and that the corpus-replay tests
//! (`tests/fuzz_corpus.rs`) run over every file of the checked-in corpora.
//! The proxy's targets are in `ripcord_proxy::fuzzing`.
//!
//! **Unstable, not for users**: behind the `fuzzing` feature, hidden from
//! the docs, and changed whenever the internals it reaches change. Each
//! function takes the fuzzer's bytes and panics on a finding (a crash of
//! the code under test or a broken invariant); each module's docs say what
//! its input is and what it checks.
//!
//! | target | what it runs |
//! |---|---|
//! | `simulate_config` | `ripcord simulate`'s breaker files |
//! | `trace_csv`, `trace_jsonl` | the trace readers |

mod simulate_config;
mod trace;

pub use simulate_config::simulate_config;
pub use trace::{trace_csv, trace_jsonl};

/// A target's body: takes the fuzzer's bytes, panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by name, as the fuzz binaries and the corpus directories
/// (`fuzz/corpus/NAME`) call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("simulate_config", simulate_config),
    ("trace_csv", trace_csv),
    ("trace_jsonl", trace_jsonl),
];
