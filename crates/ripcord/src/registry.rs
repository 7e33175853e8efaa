//! Breakers per key (placeholder while the registry is written).
#![allow(missing_docs)]
/// Breakers per key.
#[derive(Debug)]
pub struct Registry;
