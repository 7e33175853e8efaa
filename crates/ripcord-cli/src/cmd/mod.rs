//! The command-line front ends of `ripcord drill`, `ripcord fleet` and `ripcord simulate`:
//! their clap options and what each run does with them.

pub(crate) mod drill;
pub(crate) mod fleet;
pub(crate) mod simulate;
