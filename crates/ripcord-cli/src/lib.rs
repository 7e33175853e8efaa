//! The library side of the `ripcord` binary: the replay engine behind
//! `ripcord simulate` (traces, scenarios, the replay, its table and chart)
//! and the drill engine behind `ripcord drill` (schedules, SLOs, the run
//! against a proxy, its report and chart), usable from tests and other
//! tools. The command line itself (its options
//! and `ripcord fleet`, which drives `ripcord-redis`'s fleet API) belongs to
//! the binary. The reverse proxy behind `ripcord proxy` is
//! the `ripcord-proxy` crate.
//!
//! # The `ripcord` command
//!
//! `ripcord demo`, `ripcord drill`, `ripcord simulate`, `ripcord fleet`,
//! `ripcord proxy` and `ripcord check`; `ripcord --help` lists them and `ripcord SUBCOMMAND
//! --help` gives each one's details and examples. `ripcord check --json`
//! prints its verdict as one JSON object. Errors are printed on stderr as
//! `error: …`, and every subcommand exits with one of these codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a failure: an SLO of `ripcord drill` was missed, or the command could not start (a listener cannot be bound, the demo's store does not answer) or a run failed (an output file cannot be written, `fleet` names a breaker the store does not know) |
//! | 2 | a usage or configuration error: a bad flag or value (clap's own errors), a configuration or trace file that cannot be read or is refused, a fleet store that cannot be used |
//! | 130 | `ripcord demo` interrupted by ctrl-c |

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod drill;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod simulate;
