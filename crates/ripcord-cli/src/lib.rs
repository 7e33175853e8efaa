//! The library side of the `ripcord` binary: the replay engine behind
//! `ripcord simulate`, the reverse proxy behind `ripcord proxy`, and the fleet
//! control behind `ripcord fleet`, usable from tests and other tools.

pub mod fleet;
pub mod proxy;
pub mod simulate;
