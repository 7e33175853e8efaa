//! The command-line front ends of `ripcord fleet` and `ripcord simulate`:
//! their clap options and what each run does with them.

pub(crate) mod fleet;
pub(crate) mod simulate;
