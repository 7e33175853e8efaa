//! The breaker configurations of `ripcord simulate` (`--config FILE`).
//!
//! Input: the file's bytes (inputs that are not UTF-8 are skipped: the
//! binary reads files as UTF-8 text and refuses others before parsing).
//!
//! Invariants: no panic; a breaker that validates builds, and one that does
//! not is refused by its builder too.

use ripcord::circuit_breaker::CircuitBreaker;

/// Runs one breaker file as `ripcord simulate --config` reads it.
pub fn simulate_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = crate::simulate::parse_config(text) else {
        return;
    };
    let valid = config.validate();
    let built = CircuitBreaker::builder("fuzz").config(config).build();
    assert_eq!(
        valid.is_ok(),
        built.is_ok(),
        "validation ({valid:?}) and building disagree on {text:?}"
    );
}
