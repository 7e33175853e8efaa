//! The library side of the `ripcord` binary: the replay engine behind
//! `ripcord simulate` and the fleet control behind `ripcord fleet`, usable
//! from tests and other tools. The reverse proxy behind `ripcord proxy` is
//! the `ripcord-proxy` crate.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod fleet;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod simulate;
