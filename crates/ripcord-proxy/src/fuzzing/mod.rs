//! The proxy's fuzz targets: the bodies that the fuzzers in `fuzz/` run, and
//! that the corpus-replay tests (`tests/fuzz_corpus.rs`) run over every file
//! of the checked-in corpora. The targets of `ripcord simulate`'s inputs are
//! in `ripcord_cli::fuzzing`.
//!
//! **Unstable, not for users**: behind the `fuzzing` feature, hidden from
//! the docs, and changed whenever the internals it reaches change. Each
//! function takes the fuzzer's bytes and panics on a finding (a crash of
//! the code under test, a broken invariant, or a difference from the
//! reference implementation); each module's docs say what its input is and
//! what it checks.
//!
//! | target | what it runs |
//! |---|---|
//! | `h1_response` | the proxy's HTTP/1.1 client reading a response head and body, against hyper's |
//! | `proxy_request` | a running proxy handling a client's request head, checked against a model of its routing |
//! | `proxy_config` | `ProxyConfig::parse`, then starting what it accepts |
//! | `pipeline_config` | `PipelineConfig` from TOML: validation against building |

mod config;
mod h1_response;
mod proxy_request;
mod route_model;
mod runtime;

pub use config::{pipeline_config, proxy_config};
pub use h1_response::h1_response;
pub use proxy_request::proxy_request;

/// A target's body: takes the fuzzer's bytes, panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by name, as the fuzz binaries and the corpus directories
/// (`fuzz/corpus/NAME`) call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("h1_response", h1_response),
    ("proxy_request", proxy_request),
    ("proxy_config", proxy_config),
    ("pipeline_config", pipeline_config),
];
