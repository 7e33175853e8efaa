//! The library side of the `ripcord` binary: the replay engine behind
//! `ripcord simulate`, usable from tests and other tools.

pub mod simulate;
