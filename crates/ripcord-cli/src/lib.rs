//! The library side of the `ripcord` binary: the replay engine behind
//! `ripcord simulate`, the reverse proxy behind `ripcord proxy`, and the fleet
//! control behind `ripcord fleet`, usable from tests and other tools; plus the
//! flaky test upstream and the load generator that the demo, the load test and
//! the proxy benchmark drive.

pub mod fleet;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod loadgen;
pub mod proxy;
pub mod simulate;
pub mod upstream;
