//! Errors of the pipeline middleware.

use std::fmt;

/// A retry or a hedge needed the request again, but it could not be
/// replayed (see [`Replay`](super::Replay)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReplayable(pub(crate) ());

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request cannot be replayed for another attempt")
    }
}

impl std::error::Error for NotReplayable {}
